"""`vividhead inspect --sample KEY --out DIR` and reading the shards with Hugging Face `datasets`."""

from __future__ import annotations

import glob
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
from test_inspect_fixture import Expected, synthetic_build  # noqa: F401
from test_inspect_summary import real_build

from vividhead.cli import main


def test_sample_dump_writes_every_file(synthetic_build: Expected, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    key = synthetic_build.kept_keys[2]
    out = tmp_path / "dump é"
    assert main(["inspect", str(synthetic_build.root), "--sample", key, "--out", str(out)]) == 0
    names = sorted(path.name for path in out.iterdir())
    assert names == sorted(f"{key}.{ext}" for ext in ("audio.npy", "json", "mask.png", "mp4", "wav"))
    assert json.loads((out / f"{key}.json").read_text())["key"] == key
    assert soundfile.info(str(out / f"{key}.wav")).samplerate == 16000
    assert np.load(out / f"{key}.audio.npy").shape[0] == 40
    assert "wrote 5 file(s)" in capsys.readouterr().out


def test_sample_dump_explains_a_rejected_or_unknown_key(synthetic_build: Expected, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    rows = pq.read_table(synthetic_build.root / "manifest.parquet").to_pylist()
    sync_rejected = next(row["key"] for row in rows if row["reject_stage"] == "sync")
    assert main(["inspect", str(synthetic_build.root), "--sample", sync_rejected, "--out", str(tmp_path)]) == 2
    assert "was not kept (sync: out_of_sync" in capsys.readouterr().err
    assert main(["inspect", str(synthetic_build.root), "--sample", "nope", "--out", str(tmp_path)]) == 2
    assert "no sample with key 'nope'" in capsys.readouterr().err
    assert main(["inspect", str(synthetic_build.root), "--sample", "nope"]) == 2
    assert "--sample KEY needs --out DIR" in capsys.readouterr().err


def load_with_datasets(out: Path, cache: Path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    from vividhead.inspection.hf import hf_features

    shards = sorted(glob.glob(str(out / "shards" / "*.tar")))
    return datasets.load_dataset("webdataset", data_files={"train": shards}, split="train",
                                 features=hf_features(shards), cache_dir=str(cache))


def test_shards_load_with_hugging_face_datasets(synthetic_build: Expected, tmp_path: Path) -> None:
    dataset = load_with_datasets(synthetic_build.root, tmp_path / "hf")
    assert dataset.num_rows == 3 and sorted(dataset["__key__"]) == sorted(synthetic_build.kept_keys)
    row = dataset[0]
    assert np.asarray(row["audio.npy"], dtype=np.float16).shape == (30, 2, 8)
    assert row["mask.png"].size == (512, 512) and row["json"]["key"] == row["__key__"]
    audio, rate = soundfile.read(io.BytesIO(row["wav"]))
    assert rate == 16000 and audio.ndim == 1
    assert row["mp4"][4:8] == b"ftyp"


def test_demo_build_loads_with_hugging_face_datasets(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    out = real_build(request, "demo_build")
    dataset = load_with_datasets(out, tmp_path / "hf")
    keys = list(dataset["__key__"])
    kept = pq.read_table(out / "manifest.parquet", columns=["key", "status"]).to_pylist()
    assert sorted(keys) == sorted(row["key"] for row in kept if row["status"] == "kept")
    row = dataset[0]
    assert row["json"]["key"] == row["__key__"] and row["mask.png"].size == (512, 512)
    assert np.asarray(row["audio.npy"]).shape[0] == row["json"]["n_frames"]
