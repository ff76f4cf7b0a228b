"""inspect stays bounded: the summary of a 100,000-row manifest is exact in its counts and the HTML
report is no bigger than for 1,000 rows (it samples; it does not embed every clip)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from vividhead.inspection.reader import resolve
from vividhead.inspection.report import ExamplePicker, write_report
from vividhead.inspection.stats import SAMPLE_CAPACITY
from vividhead.inspection.summary import summarize

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "inspect_scale.py"


@pytest.fixture(scope="module")
def write_manifest():
    spec = importlib.util.spec_from_file_location("inspect_scale", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_manifest


def report_of(out: Path, html: Path) -> tuple[dict, int]:
    dataset = resolve([out])
    picker = ExamplePicker(thumbnails=24, per_reason=3)
    scan = summarize(dataset, [picker])
    write_report(html, dataset, scan, picker)
    return scan.summary, html.stat().st_size


def test_report_size_does_not_grow_with_the_dataset(write_manifest, tmp_path: Path) -> None:
    write_manifest(tmp_path / "small", 1_000, 4)
    write_manifest(tmp_path / "large", 100_000, 8)
    small, small_bytes = report_of(tmp_path / "small", tmp_path / "small.html")
    large, large_bytes = report_of(tmp_path / "large", tmp_path / "large.html")
    table = pq.ParquetDataset(str(tmp_path / "large" / "manifest")).read(columns=["status", "duration"])
    kept = table.filter(pc.equal(table["status"], "kept"))
    assert large["kept"]["clips"] == kept.num_rows and large["candidates"]["clips"] == 100_000
    assert large["kept"]["hours"] == pytest.approx(pc.sum(kept["duration"]).as_py() / 3600)
    lse_c = large["distributions"]["sync.lse_c"]["kept"]
    assert lse_c["count"] > SAMPLE_CAPACITY and not lse_c["exact_quantiles"]
    assert lse_c["median"] == pytest.approx(pc.approximate_median(
        pq.ParquetDataset(str(tmp_path / "large" / "manifest")).read(columns=["sync.lse_c", "status"])
        .filter(pc.equal(table["status"], "kept"))["sync.lse_c"]).as_py(), abs=0.1)
    assert large_bytes < 1.5 * small_bytes, (small_bytes, large_bytes)
