"""A small build written by hand in exactly the docs/FORMATS.md layout, for the inspect tests.

Two real source videos (ffmpeg testsrc with a tone, 640x360 at 30 fps) are cut into five candidate
clips; three are kept and encoded as 512x512 25 fps H.264/AAC with 16 kHz wavs, one is rejected by
sync, one by speech, and a third source is rejected at probe. The tests import `synthetic_build`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
import webdataset

FPS = 25
# The thresholds as the build config (vividhead.pipelines.config) names them (the synthetic clips are only 1.2-1.6 s long).
CONFIG = {
    "segment": {"min_seconds": 1.0, "max_seconds": 50.0},
    "visibility": {"enabled": True, "max_missing_ratio": 0.2},
    "speech": {"enabled": True, "min_speech_ratio": 0.3},
    "sync": {"enabled": True, "min_confidence": 3.0, "max_abs_offset": 6},
}


@dataclass(frozen=True)
class Expected:
    """What the synthetic build holds, for the tests' assertions."""

    root: Path
    sources: tuple[Path, ...]
    kept_keys: tuple[str, ...]
    kept_seconds: float
    candidates: int


def encode_source(path: Path, seconds: float, frequency: int) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency={frequency}:sample_rate=44100:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True)


def encode_clip(source: Path, start: float, end: float, crop: tuple[int, int, int], out: Path,
                fps: int = FPS) -> None:
    x, y, side = crop
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-ss", f"{start:.3f}", "-t", f"{end - start:.3f}", "-i", str(source),
         "-vf", f"crop={side}:{side}:{x}:{y},scale=512:512,fps={fps}", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "16000", "-ac", "1", str(out)],
        check=True)


def wav_bytes(seconds: float, frequency: float, rate: int = 16000, channels: int = 1) -> bytes:
    t = np.arange(int(round(seconds * rate))) / rate
    tone = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    if channels > 1:
        tone = np.stack([tone] * channels, axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def mask_bytes() -> bytes:
    mask = np.zeros((512, 512), np.uint8)
    cv2.ellipse(mask, (256, 240), (120, 160), 0, 0, 360, 255, -1)
    return cv2.imencode(".png", mask)[1].tobytes()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def base_row(unit: str, source: Path, dataset: str, md5: str) -> dict:
    return {
        "key": None, "unit": unit, "status": "kept", "reject_stage": None, "reject_reason": None,
        "reject_detail": None, "source_id": f"{dataset}:{source.name}", "dataset": dataset, "uri": str(source),
        "md5": md5, "start": None, "end": None, "duration": None, "n_frames": None, "crop_x": None,
        "crop_y": None, "crop_side": None, "shard": None,
        "language": "en", "language_provenance": "given", "gender": "unknown", "gender_provenance": "unknown",
        "age": "34", "age_provenance": "model", "ethnicity": "unknown", "ethnicity_provenance": "unknown",
        "config_hash": "c0ffee00", "content_hash": "abcdef01", "pipeline_version": "0.1.0",
        "timings": json.dumps({"face": 0.1}),
        "segment.seconds": None, "visibility.face_ratio": None, "speech.speech_ratio": None, "sync.lse_c": None,
        "sync.lse_d": None,
        "sync.offset": None,
    }


SCHEMA = pa.schema([
    ("key", pa.string()), ("unit", pa.string()), ("status", pa.string()), ("reject_stage", pa.string()),
    ("reject_reason", pa.string()), ("reject_detail", pa.string()), ("source_id", pa.string()),
    ("dataset", pa.string()), ("uri", pa.string()), ("md5", pa.string()), ("start", pa.float64()),
    ("end", pa.float64()), ("duration", pa.float64()), ("n_frames", pa.int64()), ("crop_x", pa.int64()),
    ("crop_y", pa.int64()), ("crop_side", pa.int64()), ("shard", pa.string()),
    ("language", pa.string()), ("language_provenance", pa.string()), ("gender", pa.string()),
    ("gender_provenance", pa.string()), ("age", pa.string()), ("age_provenance", pa.string()),
    ("ethnicity", pa.string()), ("ethnicity_provenance", pa.string()), ("config_hash", pa.string()),
    ("content_hash", pa.string()), ("pipeline_version", pa.string()), ("timings", pa.string()),
    ("segment.seconds", pa.float64()), ("visibility.face_ratio", pa.float64()), ("speech.speech_ratio", pa.float64()),
    ("sync.lse_c", pa.float64()),
    ("sync.lse_d", pa.float64()), ("sync.offset", pa.int64()),
])

# (start, end, status, reject_stage, reject_reason, metrics)
CLIPS = {
    "a": [(0.0, 1.2, "kept", None, None, {"visibility.face_ratio": 1.0, "speech.speech_ratio": 0.9,
                                         "sync.lse_c": 7.5, "sync.lse_d": 6.9, "sync.offset": 1}),
          (1.2, 2.4, "kept", None, None, {"visibility.face_ratio": 0.9, "speech.speech_ratio": 0.8,
                                         "sync.lse_c": 4.0, "sync.lse_d": 8.0, "sync.offset": -2}),
          (2.4, 3.6, "rejected", "sync", "out_of_sync", {"visibility.face_ratio": 1.0,
                                                             "speech.speech_ratio": 0.7, "sync.lse_c": 1.5,
                                                             "sync.lse_d": 11.0, "sync.offset": 9})],
    "b": [(0.0, 1.6, "kept", None, None, {"visibility.face_ratio": 1.0, "speech.speech_ratio": 0.6,
                                         "sync.lse_c": 6.0, "sync.lse_d": 7.0, "sync.offset": 0}),
          (1.6, 3.2, "rejected", "speech", "no_speech", {"visibility.face_ratio": 1.0,
                                                         "speech.speech_ratio": 0.1})],
}


def write_synthetic_build(root: Path) -> Expected:
    """Write sources under root/sources and the build under root/out (names with spaces and accents)."""
    sources_dir, out = root / "sources", root / "out"
    for directory in (sources_dir, out / "shards", out / "manifest"):
        directory.mkdir(parents=True)
    staging = root / "staging"
    staging.mkdir()
    sources = {"a": sources_dir / "talk a é.mp4", "b": sources_dir / "talk b.mp4"}
    encode_source(sources["a"], 4.0, 440)
    encode_source(sources["b"], 4.0, 660)
    all_rows, kept_keys, kept_seconds = [], [], 0.0
    for unit, source in sources.items():
        md5 = hashlib.md5(source.read_bytes()).hexdigest()
        rows = []
        with webdataset.TarWriter(str(out / "shards" / f".{unit}.tar.tmp")) as writer:
            for start, end, status, stage, reason, metrics in CLIPS[unit]:
                key = f"{md5[:16]}_{int(start * 1000):08d}_{int(end * 1000):08d}_abcdef01"
                crop = (140, 20, 320)
                n_frames = int(round((end - start) * FPS))
                row = base_row(unit, source, "synthetic" if unit == "a" else "other", md5)
                row.update(key=key, status=status, reject_stage=stage, reject_reason=reason,
                           reject_detail=f"{reason} in test" if reason else None, start=start, end=end,
                           duration=end - start, n_frames=n_frames, crop_x=crop[0], crop_y=crop[1],
                           crop_side=crop[2], **{"segment.seconds": end - start}, **metrics)
                if status == "kept":
                    row["shard"] = f"{unit}.tar"
                    clip = staging / f"{key}.mp4"
                    encode_clip(source, start, end, crop, clip)
                    features = np.random.default_rng(0).standard_normal((n_frames, 2, 8)).astype(np.float16)
                    writer.write({"__key__": key, "mp4": clip.read_bytes(), "wav": wav_bytes(end - start, 440),
                                  "audio.npy": npy_bytes(features), "mask.png": mask_bytes(),
                                  "json": json.dumps(row).encode()})
                    kept_keys.append(key)
                    kept_seconds += end - start
                rows.append(row)
        (out / "shards" / f".{unit}.tar.tmp").rename(out / "shards" / f"{unit}.tar")
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / "manifest" / f"{unit}.parquet")
        all_rows += rows
    broken = sources_dir / "broken.mp4"
    broken.write_bytes(b"not a video")
    probe_row = base_row("c", broken, "other", hashlib.md5(b"not a video").hexdigest())
    probe_row.update(status="rejected", reject_stage="probe", reject_reason="unreadable",
                     reject_detail="ffprobe found no video stream", language=None, language_provenance=None,
                     age=None, age_provenance=None)
    pq.write_table(pa.Table.from_pylist([probe_row], schema=SCHEMA), out / "manifest" / "c.parquet")
    all_rows.append(probe_row)
    pq.write_table(pa.Table.from_pylist(all_rows, schema=SCHEMA), out / "manifest.parquet")
    (out / "build.json").write_text(json.dumps({
        "version": "0.1.0", "config_hash": "c0ffee00", "config": CONFIG,
        "totals": {"kept": len(kept_keys), "rejected": len(all_rows) - len(kept_keys), "skipped": 0, "failed": 0},
        "this_run": {"stage_modes": {"speech": "default", "sync": "weights"}}}))
    shutil.rmtree(staging)
    return Expected(out, tuple(sources.values()), tuple(kept_keys), kept_seconds, len(all_rows))


@functools.lru_cache(maxsize=None)
def _build_once(base: Path) -> Expected:
    root = base / "inspect synthetic"
    root.mkdir()
    return write_synthetic_build(root)


@pytest.fixture(scope="session")
def synthetic_build(tmp_path_factory: pytest.TempPathFactory) -> Expected:
    """Built once per session even though several test modules import this fixture."""
    return _build_once(tmp_path_factory.getbasetemp())


def copy_build(expected: Expected, destination: Path) -> Path:
    """A private copy of the build, for tests that corrupt it (the fixture itself stays intact)."""
    target = destination / "out copy"
    shutil.copytree(expected.root, target)
    return target


def test_synthetic_build_matches_the_documented_layout(synthetic_build: Expected) -> None:
    out = synthetic_build.root
    assert sorted(path.name for path in (out / "shards").iterdir()) == ["a.tar", "b.tar"]
    assert sorted(path.name for path in (out / "manifest").iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]
    assert pq.read_metadata(out / "manifest.parquet").num_rows == synthetic_build.candidates
