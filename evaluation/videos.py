"""Videos to evaluate: a folder of video files, WebDataset shards of a build, or one file.

Each `VideoItem` decodes on demand to RGB frames [T, H, W, 3] uint8 and 16 kHz mono float32 audio.
Shard samples give their `mp4` (video) and `wav` (16 kHz audio); video files give their own audio
stream, resampled to 16 kHz with its channels averaged (`decode_audio_averaged`). Frame and clip
sampling for FID and FVD live here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vividhead.media import decode_audio, frames, probe, read_wav
from vividhead.shards import index_shard, read_member, shard_files

SAMPLE_RATE = 16000
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


@dataclass(frozen=True)
class Decoded:
    """One decoded video: frames [T, H, W, 3] uint8, fps, and 16 kHz mono audio (None if absent)."""

    frames: np.ndarray
    fps: float                          # average frame rate
    audio: np.ndarray | None
    times: np.ndarray | None = None     # [T] presentation time of each frame in seconds (VFR-safe)
    start: float = 0.0                  # seconds from the file's start to the first frame
    audio_rate: int | None = None       # sample rate of the audio as stored (before resampling to 16 kHz)


@dataclass(frozen=True)
class VideoItem:
    """One video to evaluate: a stable key, where it came from, and how to decode it."""

    key: str
    origin: str
    load: Callable[[], Decoded]


def decode_video(source: Path | bytes, origin: str) -> Decoded:
    """Decode every frame to RGB and the first audio stream to 16 kHz mono float32."""
    info = probe(source, origin)
    fps = info.fps or 25.0
    decoded = list(frames(source, origin=origin))
    if not decoded:
        raise ValueError(f"{origin}: the video has no frames")
    audio = decode_audio_averaged(source, origin)
    times = np.asarray([f.time if f.time is not None else f.index / fps for f in decoded], dtype=np.float64)
    return Decoded(np.stack([f.image for f in decoded]), fps, audio, times - times[0],
                   max(0.0, times[0] - info.start_time), info.audio_rate if audio is not None else None)


def decode_audio_averaged(source: Path | bytes, origin: str) -> np.ndarray | None:
    """The first audio stream at 16 kHz, its channels averaged as `ffmpeg -ac 1` (the reference Sync
    tool's extraction) does; None when the file has no audio or it is empty."""
    audio = decode_audio(source, SAMPLE_RATE, origin, average_channels=True)
    return audio if audio is not None and audio.size else None


def _shard_items(shard: Path) -> Iterator[VideoItem]:
    """The samples of one WebDataset tar that carry an `mp4`, read lazily from the tar."""
    for entry in index_shard(shard):
        if "mp4" not in entry.extensions:
            continue
        origin = f"{shard}:{entry.key}"

        def load(entry=entry, origin=origin) -> Decoded:
            decoded = decode_video(read_member(entry, "mp4"), origin)
            if "wav" not in entry.extensions:
                return decoded
            audio = read_wav(read_member(entry, "wav"), SAMPLE_RATE, origin)
            return Decoded(decoded.frames, decoded.fps, audio, decoded.times, decoded.start, SAMPLE_RATE)

        yield VideoItem(entry.key, origin, load)


def _file_item(path: Path, root: Path) -> VideoItem:
    key = path.relative_to(root).with_suffix("").as_posix() if path != root else path.stem
    return VideoItem(key, str(path), lambda: decode_video(path, str(path)))


def list_videos(location: Path) -> list[VideoItem]:
    """Every video under `location`: a build folder (shards/*.tar), a folder of .tar shards or of
    video files (searched recursively), or a single .tar or video file. Sorted by key."""
    location = Path(location)
    if not location.exists():
        raise FileNotFoundError(f"no such file or folder: {location}")
    if location.is_file():
        if location.suffix == ".tar":
            return sorted(_shard_items(location), key=lambda v: v.key)
        if location.suffix.lower() in VIDEO_SUFFIXES:
            return [_file_item(location, location)]
        raise ValueError(f"{location}: expected a .tar shard or a video file ({', '.join(VIDEO_SUFFIXES)})")
    shard_dir = location / "shards" if (location / "shards").is_dir() else location
    shards = shard_files(shard_dir)
    if shards:
        items = [item for shard in shards for item in _shard_items(shard)]
    else:
        files = sorted(p for p in location.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        items = [_file_item(p, location) for p in files]
    if not items:
        raise ValueError(f"{location}: no videos found (expected shards/*.tar, *.tar or video files)")
    return sorted(items, key=lambda v: v.key)


def sample_frames(n_frames: int, count: int) -> np.ndarray:
    """Indices of `count` evenly spaced frames (all frames when count <= 0 or count >= n_frames)."""
    if count <= 0 or count >= n_frames:
        return np.arange(n_frames)
    return np.linspace(0, n_frames - 1, count).round().astype(int)


def sample_clips(n_frames: int, length: int, max_clips: int) -> list[slice]:
    """Consecutive non-overlapping clips of `length` frames from the start (at most `max_clips`; 0 = all)."""
    starts = range(0, n_frames - length + 1, length)
    clips = [slice(s, s + length) for s in starts]
    return clips[:max_clips] if max_clips > 0 else clips
