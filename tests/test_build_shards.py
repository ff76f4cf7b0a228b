"""Training-sized shards: many short sources become a handful of shards of the target size, written by
pack tasks on the workers, one manifest part per shard, readable with plain `webdataset` and with
Hugging Face `datasets`; a pack a kill interrupted at any step is finished or undone on resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from conftest import CORE_ONLY, run_vividhead
from vividhead.demo import make_demo_corpus
from vividhead.pipelines.output import OutputDir
from vividhead.pipelines.records import Source
from vividhead.pipelines.rows import sample_json, source_row
from vividhead.pipelines.segments import pack, recover, write_source_segment
from vividhead.pipelines.stages import metric_types
from vividhead.pipelines.units import SourceRejection
from vividhead.shards import ShardWriter, iter_samples

HASHES = {"config_hash": "c", "content_hash": "k", "stages_hash": "s", "pipeline_version": "0"}


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo corpus built with shards of at most 2 samples (stages 1-7)."""
    root = tmp_path_factory.mktemp("small_shards")
    sources = make_demo_corpus(root / "demo")
    config = root / "config.yaml"
    config.write_text(CORE_ONLY + "shards: {max_samples: 2}\n")
    out = root / "out"
    run_vividhead("build", "--sources", sources, "--config", config, "--out", out, "--no-progress")
    return out


def test_many_sources_make_a_few_full_shards(small_shards: Path) -> None:
    rows = pq.read_table(small_shards / "manifest.parquet").to_pylist()
    kept = sorted(r["key"] for r in rows if r["status"] == "kept")
    units = {r["unit"] for r in rows}
    shards = sorted((small_shards / "shards").glob("*.tar"))
    parts = sorted((small_shards / "manifest").glob("*.parquet"))
    assert len(kept) >= 4 and len(units) >= 5
    counts = [len(list(iter_samples(shard, set()))) for shard in shards]
    assert counts[:-1] == [2] * (len(shards) - 1) and 1 <= counts[-1] <= 2, counts   # full but the last
    assert len(shards) == -(-len(kept) // 2) < len(units), "shards follow the target size, not the sources"
    assert {p.stem for p in parts} >= {s.stem for s in shards}, "one manifest part per shard"
    assert len(parts) <= len(shards) + 1
    assert not list((small_shards / ".segments").glob("*/*.tar")), "every segment was packed"
    for row in rows:
        if row["status"] == "kept":
            assert (small_shards / "shards" / row["shard"]).exists()


def test_shards_read_with_plain_webdataset(small_shards: Path) -> None:
    rows = {r["key"]: r for r in pq.read_table(small_shards / "manifest.parquet").to_pylist() if r["status"] == "kept"}
    shards = sorted(str(p) for p in (small_shards / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(rows)
    for sample in samples:
        assert {"mp4", "wav", "mask.png", "json"} <= set(sample)
        row = json.loads(sample["json"])
        assert row["key"] == sample["__key__"] and row["status"] == "kept"
        assert row["shard"] == Path(sample["__url__"]).name == rows[row["key"]]["shard"]


def test_shards_read_with_hugging_face_datasets(small_shards: Path, tmp_path: Path) -> None:
    """datasets' webdataset loader; media columns are kept as bytes (its audio/video decoders need torchcodec)."""
    shards = sorted(str(p) for p in (small_shards / "shards").glob("*.tar"))
    first = [json.loads(s.files["json"]) for shard in shards for s in iter_samples(Path(shard), {"json"})]
    inferred = pa.Table.from_pylist([{"json": row} for row in first]).schema
    features = datasets.Features({
        **{name: datasets.Value("binary") for name in ("mp4", "wav", "mask.png")},
        "json": datasets.Features.from_arrow_schema(inferred)["json"],
        "__key__": datasets.Value("string"), "__url__": datasets.Value("string"),
    })
    loaded = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train", features=features,
                                   cache_dir=str(tmp_path / "hf"))
    assert loaded.num_rows == len(first)
    assert sorted(loaded["__key__"]) == sorted(row["key"] for row in first)
    assert all(record["json"]["key"] == record["__key__"] and record["mp4"][4:8] == b"ftyp" for record in loaded)


# ----------------------------------------------------------------------------------- pack, unit level
def _kept_segment(out: OutputDir, unit: str, key: str) -> str:
    row = {**source_row(SourceRejection(unit, Source(f"s:{key}", key, md5="0" * 32), "sources", "x", "y"), HASHES),
           "key": key, "status": "kept", "reject_stage": None, "reject_reason": None, "start": 0.0, "end": 6.0}
    path = out.segment(unit, key)
    with ShardWriter(path) as writer:
        writer.add(key, {"mp4": b"\0\0\0\x18ftypisom" + bytes(200), "wav": b"RIFF" + bytes(100),
                         "audio.npy": np.zeros((3, 4), np.float32).tobytes(), "json": sample_json(row)})
    return str(path)


def _segments(tmp_path: Path) -> tuple[OutputDir, list[str]]:
    out = OutputDir(tmp_path / "out")
    paths = [_kept_segment(out, "u1", "k1"), _kept_segment(out, "u2", "k2")]
    rejected = SourceRejection("u3_missing", Source("s:gone", "gone.mp4"), "sources", "missing_file", "no such file")
    paths.append(write_source_segment(out, rejected, HASHES).path)
    return out, paths


def test_pack_writes_the_shard_then_the_part_and_deletes_the_segments(tmp_path: Path) -> None:
    out, paths = _segments(tmp_path)
    assert pack(out.root, "shard-000000", paths, metric_types(), "s") is None
    assert [s.key for s in iter_samples(out.shard("shard-000000"))] == ["k1", "k2"]
    rows = pq.read_table(out.part("shard-000000")).to_pylist()
    assert sorted((r["unit"], r["status"], r["shard"]) for r in rows) == [
        ("u1", "kept", "shard-000000.tar"), ("u2", "kept", "shard-000000.tar"), ("u3_missing", "rejected", None)]
    assert not any(Path(p).exists() for p in paths) and not out.intent("shard-000000").exists()


def test_a_pack_killed_before_its_part_is_undone(tmp_path: Path) -> None:
    out, paths = _segments(tmp_path)
    out.intent("shard-000003").write_text(json.dumps(paths))
    with ShardWriter(out.shard("shard-000003")) as writer:             # the shard was renamed, the part not yet
        writer.add("k1", {"json": b"{}"})
    assert recover(out) == 1
    assert not out.shard("shard-000003").exists() and not out.intent("shard-000003").exists()
    assert all(Path(p).exists() for p in paths), "the committed segments wait for the next pack"


def test_a_pack_killed_after_its_part_is_finished(tmp_path: Path) -> None:
    out, paths = _segments(tmp_path)
    assert pack(out.root, "shard-000001", paths[:2], metric_types(), "s") is None
    for path in paths[:2]:                                              # killed before the segments were deleted
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"left over")
    out.intent("shard-000001").write_text(json.dumps(paths[:2]))
    assert recover(out) == 0
    assert not any(Path(p).exists() for p in paths[:2]) and Path(paths[2]).exists()
    assert out.shard("shard-000001").exists() and out.part("shard-000001").exists()


def test_the_manifest_folder_is_one_parquet_dataset(small_shards: Path) -> None:
    """pyarrow.dataset, DuckDB and pandas read manifest/ directly, and agree with manifest.parquet."""
    folder = small_shards / "manifest"
    expected = pq.read_table(small_shards / "manifest.parquet").num_rows
    assert pads.dataset(folder, format="parquet").count_rows() == expected
    assert len(pd.read_parquet(folder)) == expected
    counted = duckdb.sql(f"select count(*) from read_parquet('{folder}/*.parquet')").fetchall()[0][0]
    assert counted == expected
