"""`vividhead build --demo`: the built-in corpus builds, keeps enough clips and rejects its negatives."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import soundfile
import webdataset as wds


def test_demo_keeps_clips_and_rejects_its_negatives(demo_build: Path) -> None:
    table = pq.read_table(demo_build / "manifest.parquet").to_pylist()
    kept = [row for row in table if row["status"] == "kept"]
    assert len(kept) >= 4 and all(row["duration"] >= 5.0 for row in kept)
    reasons = {row["reject_reason"] for row in table if row["status"] != "kept"}
    assert {"no_face", "too_short"} <= reasons
    cut = [row for row in table if row["uri"].endswith("talk_cut.mp4")]
    assert [row["status"] for row in cut] == ["kept", "rejected"]          # the scene cut splits the take
    assert abs(cut[0]["end"] - 6.0) <= 0.08 and cut[1]["segment.starts_at_cut"]
    ranged = [row for row in table if row["dataset"] == "demo-timestamped"]
    assert len(ranged) == 2                                                 # given time ranges are kept as units
    build = json.loads((demo_build / "build.json").read_text())
    assert build["totals"]["kept"] == len(kept)


def test_demo_samples_are_512_25fps_with_16k_audio(demo_build: Path) -> None:
    shards = sorted(str(p) for p in (demo_build / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    assert len(samples) >= 4
    for sample in samples:
        assert {"mp4", "wav", "json", "mask.png"} <= set(sample)
        with av.open(io.BytesIO(sample["mp4"])) as container:
            video = container.streams.video[0]
            assert (video.width, video.height) == (512, 512) and video.average_rate == 25
            assert container.streams.audio, "the mp4 carries its audio"
            frames = sum(1 for _ in container.decode(video=0))
        audio, rate = soundfile.read(io.BytesIO(sample["wav"]))
        assert rate == 16000 and audio.ndim == 1
        assert abs(len(audio) / rate - frames / 25) < 0.05
        meta = json.loads(sample["json"])
        assert meta["key"] == sample["__key__"] and meta["status"] == "kept"
        assert meta["n_frames"] == frames
        assert np.isfinite(meta["flow.max_residual"]) and meta["visibility.face_ratio"] >= 0.8
