"""`inspect --verify`: check every shard sample against docs/FORMATS.md and against the manifest.

Per sample: the tar is intact, the required files are present, the mp4 decodes as 512x512 25 fps
H.264 with an audio stream, the wav is 16 kHz mono PCM s16 of the clip's length, `audio.npy` is
float16 [frames, layers, dim] with one row per decoded frame, the mask is a 512x512 8-bit PNG and
the json names the sample's key. Across files: every kept manifest row has exactly one sample, in
the shard it names, every sample has a kept row, build.json's totals match the manifest, and manifest.parquet holds the rows of its parts. Problems are counted by kind and a bounded
number of precise messages is kept.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import soundfile

from vividhead.inspection.reader import Dataset, manifest_batches
from vividhead.manifest import row_count
from vividhead.media import MediaError, count_frames, probe, read_npy, read_png
from vividhead.shards import SAMPLE_ORDER, iter_samples

SIDE = 512
FPS = 25
SAMPLE_RATE = 16000
WAV_TOLERANCE_S = 0.1      # the wav may differ from frames / 25 by less than this
MAX_MESSAGES = 200


@dataclass
class Problems:
    """Problems counted by kind, with the first `limit` messages kept verbatim."""

    limit: int = MAX_MESSAGES
    counts: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if len(self.messages) < self.limit:
            self.messages.append(message)

    def extend(self, other: Problems) -> None:
        self.counts.update(other.counts)
        self.messages += other.messages[: max(0, self.limit - len(self.messages))]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class ShardCheck:
    """What checking one shard found: its sample keys in order, frames decoded and problems."""

    shard: str
    keys: list[str] = field(default_factory=list)
    frames: int = 0
    problems: Problems = field(default_factory=Problems)


def check_mp4(data: bytes) -> tuple[int, list[str]]:
    """Decode the whole mp4; returns (frames decoded, problems)."""
    problems: list[str] = []
    frames = 0
    try:
        info = probe(data, origin="mp4")
        if info.fps != FPS:
            problems.append(f"mp4 is {info.fps or 'unknown'} fps, expected {FPS}")
        if info.video_codec != "h264":
            problems.append(f"mp4 codec is {info.video_codec}, expected h264")
        if not info.has_audio:
            problems.append("mp4 has no audio stream, expected AAC audio")
        if (info.width, info.height) != (SIDE, SIDE):
            problems.append(f"mp4 frames are {info.width}x{info.height}, expected {SIDE}x{SIDE}")
        frames = count_frames(data, origin="mp4")
    except MediaError as error:
        problems.append(f"mp4 does not decode: {error.detail}")
    if frames == 0 and not problems:
        problems.append("mp4 holds no frames")
    return frames, problems


def check_wav(data: bytes, frames: int) -> list[str]:
    try:
        info = soundfile.info(io.BytesIO(data))
    except (RuntimeError, soundfile.LibsndfileError) as error:
        return [f"wav does not read: {error}"]
    problems = []
    if info.samplerate != SAMPLE_RATE:
        problems.append(f"wav is {info.samplerate} Hz, expected {SAMPLE_RATE}")
    if info.channels != 1:
        problems.append(f"wav has {info.channels} channels, expected 1 (mono)")
    if info.subtype != "PCM_16":
        problems.append(f"wav sample format is {info.subtype}, expected PCM_16")
    if frames and abs(info.frames / info.samplerate - frames / FPS) > WAV_TOLERANCE_S:
        problems.append(f"wav lasts {info.frames / info.samplerate:.3f} s but the mp4 has {frames} frames "
                        f"({frames / FPS:.3f} s)")
    return problems


def check_features(data: bytes, frames: int) -> list[str]:
    try:
        array = read_npy(data)
    except (ValueError, OSError, EOFError) as error:
        return [f"audio.npy does not load: {error}"]
    problems = []
    if array.ndim != 3:
        problems.append(f"audio.npy has shape {list(array.shape)}, expected [frames, layers, dim]")
    if array.dtype != np.float16:
        problems.append(f"audio.npy is {array.dtype}, expected float16")
    if frames and array.shape[0] != frames:
        problems.append(f"audio.npy has {array.shape[0]} rows but the mp4 has {frames} frames")
    return problems


def check_mask(data: bytes) -> list[str]:
    mask = read_png(data)
    if mask is None:
        return ["mask.png does not decode"]
    if mask.shape[:2] != (SIDE, SIDE) or mask.dtype != np.uint8 or mask.ndim != 2:
        return [f"mask.png is {mask.shape[1]}x{mask.shape[0]} {mask.dtype} with "
                f"{1 if mask.ndim == 2 else mask.shape[2]} channel(s), expected {SIDE}x{SIDE} 8-bit gray"]
    return []


def check_json(data: bytes, key: str) -> list[str]:
    try:
        row = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return [f"json does not parse: {error}"]
    if not isinstance(row, dict):
        return ["json is not an object"]
    problems = []
    if row.get("key") not in (None, key):
        problems.append(f"json names key {row.get('key')!r}, expected {key!r}")
    if row.get("status") not in (None, "kept"):
        problems.append(f"json has status {row.get('status')!r}, expected 'kept' for a sample in a shard")
    return problems


def check_sample(key: str, files: dict[str, bytes]) -> tuple[int, list[tuple[str, str]]]:
    """All checks of one sample; returns (frames, [(kind, problem)])."""
    problems = [("missing_file", f"missing {name}") for name in SAMPLE_ORDER if name not in files]
    frames = 0
    if "mp4" in files:
        frames, found = check_mp4(files["mp4"])
        problems += [("mp4", problem) for problem in found]
    if "wav" in files:
        problems += [("wav", problem) for problem in check_wav(files["wav"], frames)]
    if "audio.npy" in files:
        problems += [("audio.npy", problem) for problem in check_features(files["audio.npy"], frames)]
    if "mask.png" in files:
        problems += [("mask.png", problem) for problem in check_mask(files["mask.png"])]
    if "json" in files:
        problems += [("json", problem) for problem in check_json(files["json"], key)]
    return frames, problems


def has_end_marker(shard: Path) -> bool:
    """A complete tar ends with two zero blocks; a tar cut at a member boundary lacks them."""
    size = shard.stat().st_size
    if size < 1024 or size % 512:
        return False
    with shard.open("rb") as handle:
        handle.seek(size - 1024)
        return not any(handle.read(1024))


def check_shard(shard: Path) -> ShardCheck:
    """Check every sample of one shard (runs in a worker process when --workers > 1)."""
    result = ShardCheck(shard.name)
    name = f"shards/{shard.name}"
    try:
        for sample in iter_samples(shard):
            result.keys.append(sample.key)
            frames, problems = check_sample(sample.key, sample.files)
            result.frames += frames
            for kind, problem in problems:
                result.problems.add(kind, f"{name}: sample {sample.key}: {problem}")
    except (tarfile.TarError, EOFError, OSError) as error:
        after = f"after sample {result.keys[-1]}" if result.keys else "before its first sample"
        result.problems.add("tar", f"{name}: truncated or damaged tar {after} "
                                   f"({len(result.keys)} complete samples): {error}")
        return result
    if not has_end_marker(shard):
        result.problems.add("tar", f"{name}: truncated tar: no end-of-archive marker after "
                                   f"{len(result.keys)} samples")
    return result


def expected_samples(dataset: Dataset, problems: Problems) -> dict[str, Counter]:
    """Kept manifest rows grouped by the shard they name: shard name -> key -> count."""
    expected: dict[str, Counter] = defaultdict(Counter)
    for batch in manifest_batches(dataset, ["key", "status", "shard"]):
        kept = batch.filter(pc.equal(batch.column("status"), "kept"))
        for key, shard in zip(kept.column("key").to_pylist(), kept.column("shard").to_pylist()):
            if not key:
                problems.add("manifest", "manifest: a kept row has no key")
            elif not shard:
                problems.add("manifest", f"manifest: kept row {key} names no shard")
            else:
                expected[shard][key] += 1
    return expected


def check_totals(dataset: Dataset, problems: Problems) -> None:
    """build.json's totals (kept / rejected / skipped / failed) must match the manifest's statuses."""
    infos = dataset.build_info()
    if not infos or not all(isinstance(info.get("totals"), dict) for info in infos):
        return
    claimed: Counter = Counter()
    for info in infos:
        claimed.update({status: int(count) for status, count in info["totals"].items()})
    found: Counter = Counter()
    for batch in manifest_batches(dataset, ["status"]):
        found.update(batch.column("status").to_pylist())
    for status in sorted(set(claimed) | set(found)):
        if claimed[status] != found[status]:
            problems.add("manifest", f"build.json totals say {claimed[status]} {status} but the manifest has "
                                     f"{found[status]} {status} row(s)")


def check_consolidation(dataset: Dataset, problems: Problems) -> None:
    """A build's manifest.parquet holds exactly the rows of its manifest/*.parquet parts (metadata only)."""
    for root in dataset.roots:
        consolidated, parts = root / "manifest.parquet", sorted((root / "manifest").glob("*.parquet"))
        if not consolidated.is_file() or not parts:
            continue
        whole = row_count(consolidated)
        in_parts = sum(row_count(part) for part in parts)
        if whole != in_parts:
            problems.add("manifest", f"{root.name}/manifest.parquet has {whole} rows but its {len(parts)} "
                                     f"manifest/*.parquet parts hold {in_parts}")


def _checks(dataset: Dataset, workers: int) -> Iterator[ShardCheck]:
    if workers <= 1 or len(dataset.shards) <= 1:
        yield from map(check_shard, dataset.shards)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(check_shard, dataset.shards)


def verify(dataset: Dataset, workers: int = 1) -> dict[str, Any]:
    """Check all shards; the manifest agreement is checked when the dataset has a manifest."""
    problems = Problems()
    expected = expected_samples(dataset, problems) if dataset.has_manifest else None
    if dataset.has_manifest:
        check_totals(dataset, problems)
        check_consolidation(dataset, problems)
    home: dict[str, str] = {}   # key -> shard, for kept rows (to name the right shard of a misplaced sample)
    if expected is not None:
        home = {key: shard for shard, keys in expected.items() for key in keys}
    samples = frames = 0
    seen_shards = set()
    for check in _checks(dataset, workers):
        seen_shards.add(check.shard)
        samples += len(check.keys)
        frames += check.frames
        problems.extend(check.problems)
        if expected is None:
            continue
        wanted = expected.get(check.shard, Counter())
        truncated = check.problems.counts["tar"] > 0
        for key, count in Counter(check.keys).items():
            if count > 1:
                problems.add("duplicate", f"shards/{check.shard}: sample {key} appears {count} times")
            if key not in wanted:
                where = f" (the manifest places it in {home[key]})" if key in home else ""
                problems.add("not_in_manifest", f"shards/{check.shard}: sample {key} has no kept row in the "
                                                f"manifest for this shard{where}")
        present = set(check.keys)
        for key, count in wanted.items():
            if count > 1:
                problems.add("manifest", f"manifest: {count} kept rows share key {key}")
            if key not in present:
                cause = " (the tar is truncated)" if truncated else ""
                problems.add("missing_sample", f"manifest: kept row {key} has no sample in "
                                               f"shards/{check.shard}{cause}")
    for shard, keys in (expected or {}).items():
        if shard not in seen_shards:
            problems.add("missing_shard", f"manifest: {len(keys)} kept row(s) name shards/{shard}, "
                                          "which does not exist")
    return {
        "ok": problems.total == 0,
        "shards": len(dataset.shards),
        "samples": samples,
        "decoded_frames": frames,
        "manifest_checked": expected is not None,
        "problem_count": problems.total,
        "problem_counts": dict(problems.counts),
        "problems": problems.messages,
    }
