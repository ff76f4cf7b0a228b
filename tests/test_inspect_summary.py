"""`vividhead inspect` summary: counts and hours equal the manifest's, the funnel adds up, inputs resolve.

Runs on the hand-written synthetic build (always) and on real builds of the demo corpus and of
../shared/media/video when tests/conftest.py provides the `demo_build` / `media_build` fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_inspect_fixture import Expected, synthetic_build  # noqa: F401 (session fixture)

from vividhead.cli import main
from vividhead.inspection.reader import InspectError, resolve
from vividhead.inspection.summary import summarize


def build_path(value: object) -> Path:
    """The output directory of a build fixture, whatever object the fixture returns."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    for name in ("out", "root", "path", "output", "out_dir"):
        if hasattr(value, name) and Path(getattr(value, name)).is_dir():
            return Path(getattr(value, name))
    return Path(value)


def real_build(request: pytest.FixtureRequest, name: str) -> Path:
    try:
        return build_path(request.getfixturevalue(name))
    except pytest.FixtureLookupError:
        pytest.skip(f"tests/conftest.py provides no `{name}` fixture yet (a finished `vividhead build`)")


def manifest_truth(out: Path) -> dict:
    """Counts and seconds straight from the manifest file(s), read whole (the builds here are small)."""
    files = [out / "manifest.parquet"] if (out / "manifest.parquet").exists() else sorted((out / "manifest").glob("*.parquet"))
    table = pq.ParquetDataset([str(path) for path in files]).read(columns=["status", "duration", "dataset"])
    kept = table.filter(pc.equal(table["status"], "kept"))
    seconds = lambda t: pc.sum(pc.fill_null(t["duration"], 0.0)).as_py() or 0.0  # noqa: E731
    return {"rows": table.num_rows, "kept": kept.num_rows, "kept_seconds": seconds(kept),
            "seconds": seconds(table), "datasets": set(table["dataset"].to_pylist())}


def assert_summary_agrees(out: Path) -> dict:
    summary = summarize(resolve([out])).summary
    truth = manifest_truth(out)
    assert summary["candidates"]["clips"] == truth["rows"]
    assert summary["kept"]["clips"] == truth["kept"]
    assert summary["kept"]["hours"] == pytest.approx(truth["kept_seconds"] / 3600)
    assert summary["candidates"]["hours"] == pytest.approx(truth["seconds"] / 3600)
    funnel = summary["funnel"]
    lost = sum(step["clips"] for step in funnel["stages"])
    assert funnel["candidates"]["clips"] == lost + funnel["kept"]["clips"]
    assert funnel["candidates"]["hours"] == pytest.approx(sum(s["hours"] for s in funnel["stages"]) + funnel["kept"]["hours"])
    for step in funnel["stages"]:
        assert step["clips"] == sum(reason["clips"] for reason in step["reasons"].values())
    if funnel["stages"]:
        assert funnel["stages"][-1]["remaining"]["clips"] == funnel["kept"]["clips"]
    assert sum(part["kept"]["clips"] for part in summary["datasets"].values()) == truth["kept"]
    assert sum(source["kept"]["clips"] for source in summary["sources"]) == truth["kept"]
    for values in summary["attributes"].values():
        assert sum(entry["clips"] for entry in values.values()) == truth["kept"]
    return summary


def test_summary_equals_the_manifest_and_the_funnel_adds_up(synthetic_build: Expected) -> None:
    summary = assert_summary_agrees(synthetic_build.root)
    assert summary["kept"]["clips"] == len(synthetic_build.kept_keys) == 3
    assert [step["stage"] for step in summary["funnel"]["stages"]] == ["probe", "speech", "sync"]
    assert summary["funnel"]["stages"][2]["reasons"] == {"out_of_sync": {"clips": 1, "hours": pytest.approx(1.2 / 3600)}}
    assert summary["datasets"]["synthetic"]["kept"]["clips"] == 2
    assert summary["attributes"]["age"] == {"30-39": {"clips": 3, "hours": pytest.approx(4.0 / 3600),
                                                      "provenance": {"model": 3}}}
    lse_c = summary["distributions"]["sync.lse_c"]
    assert lse_c["kept"]["count"] == 3 and lse_c["kept"]["min"] == 4.0 and lse_c["rejected"]["median"] == 1.5


def test_streaming_in_tiny_batches_gives_the_same_summary(synthetic_build: Expected) -> None:
    dataset = resolve([synthetic_build.root])
    whole, streamed = summarize(dataset).summary, summarize(dataset, batch_rows=1).summary
    assert json.dumps(whole, sort_keys=True) == json.dumps(streamed, sort_keys=True)


def test_manifest_parts_glob_of_shards_and_several_builds(synthetic_build: Expected, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    shutil.copytree(synthetic_build.root, parts)
    (parts / "manifest.parquet").unlink()                       # readers fall back to manifest/*.parquet
    assert summarize(resolve([parts])).summary["kept"]["clips"] == 3
    shards_only = summarize(resolve([str(synthetic_build.root / "shards" / "*.tar")])).summary
    assert shards_only["kept"]["clips"] == 3 and shards_only["source_of_rows"].startswith("shards")
    assert shards_only["kept"]["hours"] == pytest.approx(synthetic_build.kept_seconds / 3600)
    both = summarize(resolve([str(tmp_path / "*"), synthetic_build.root])).summary
    assert both["kept"]["clips"] == 6 and both["candidates"]["clips"] == 2 * synthetic_build.candidates


def test_bad_paths_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(InspectError, match="no such file"):
        resolve([tmp_path / "missing"])
    with pytest.raises(InspectError, match="matches no file"):
        resolve([str(tmp_path / "*.tar")])
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty")]) == 2
    assert "neither a build directory" in capsys.readouterr().err


def test_cli_text_and_json(synthetic_build: Expected, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(synthetic_build.root)]) == 0
    text = capsys.readouterr().out
    assert "Kept 3 clips, 4.0 s" in text and "Funnel" in text and "out_of_sync" in text
    assert len(text.splitlines()) < 60                          # a short summary for a person
    assert main(["inspect", str(synthetic_build.root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["kept"]["clips"] == 3


def test_demo_build_summary_matches_its_manifest(request: pytest.FixtureRequest) -> None:
    summary = assert_summary_agrees(real_build(request, "demo_build"))
    assert summary["kept"]["clips"] > 0


def test_media_build_summary_matches_its_manifest(request: pytest.FixtureRequest) -> None:
    out = real_build(request, "media_build")
    summary = assert_summary_agrees(out)
    rejected = {reason for step in summary["funnel"]["stages"] for reason in step["reasons"]}
    assert rejected, "../shared/media/video holds clips a curator rejects (no audio, too small, music)"
    rows = pq.read_table(out / "manifest.parquet", columns=["status", "sync.verified"]).to_pylist()
    unverified = sum(1 for row in rows if row["status"] == "kept" and row["sync.verified"] is False)
    assert summary["funnel"]["kept_sync_unverified"]["clips"] == unverified    # the funnel counts them
