"""Videos to evaluate: a folder of video files, WebDataset shards of a build, or one file.

Each `VideoItem` decodes on demand to RGB frames [T, H, W, 3] uint8 and 16 kHz mono float32 audio.
Shard samples give their `mp4` (video) and `wav` (16 kHz audio); video files give their own audio
stream, resampled to 16 kHz mono. Frame and clip sampling for FID and FVD live here too.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile

SAMPLE_RATE = 16000
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


@dataclass(frozen=True)
class Decoded:
    """One decoded video: frames [T, H, W, 3] uint8, fps, and 16 kHz mono audio (None if absent)."""

    frames: np.ndarray
    fps: float                          # average frame rate
    audio: np.ndarray | None
    times: np.ndarray | None = None     # [T] presentation time of each frame in seconds (VFR-safe)


@dataclass(frozen=True)
class VideoItem:
    """One video to evaluate: a stable key, where it came from, and how to decode it."""

    key: str
    origin: str
    load: Callable[[], Decoded]


def decode_video(source: Path | bytes, origin: str) -> Decoded:
    """Decode every frame to RGB and the first audio stream to 16 kHz mono float32."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with av.open(handle) as container:
            if not container.streams.video:
                raise ValueError(f"{origin}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            frames, times = [], []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(frame.time if frame.time is not None else len(times) / fps)
        audio = decode_audio(source, origin)
    except av.error.FFmpegError as error:
        raise ValueError(f"{origin}: cannot decode video: {error}") from error
    if not frames:
        raise ValueError(f"{origin}: the video has no frames")
    times_arr = np.asarray(times, dtype=np.float64)
    return Decoded(np.stack(frames), fps, audio, times_arr - times_arr[0])


def decode_audio(source: Path | bytes, origin: str) -> np.ndarray | None:
    """The first audio stream of a media file as 16 kHz mono float32, or None when there is none."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    with av.open(handle) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = []
        for frame in container.decode(container.streams.audio[0]):
            chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
        chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
    return np.concatenate(chunks).astype(np.float32) if chunks else None


def read_wav(data: bytes, origin: str) -> np.ndarray:
    """A shard's `wav` (16 kHz mono PCM) as float32; another rate is an error naming the sample."""
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{origin}: wav is {rate} Hz, expected {SAMPLE_RATE}")
    return audio.mean(axis=1)


def _shard_items(shard: Path) -> Iterator[VideoItem]:
    """The samples of one WebDataset tar that carry an `mp4`, read lazily from the tar."""
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            name = member.name.rsplit("/", 1)[-1]
            key, _, ext = name.partition(".")
            groups.setdefault(key, {})[ext] = member
    for key, members in groups.items():
        if "mp4" not in members:
            continue
        origin = f"{shard}:{key}"

        def load(shard=shard, members=members, origin=origin) -> Decoded:
            with tarfile.open(shard) as tar:
                video = tar.extractfile(members["mp4"]).read()
                wav = tar.extractfile(members["wav"]).read() if "wav" in members else None
            decoded = decode_video(video, origin)
            audio = read_wav(wav, origin) if wav is not None else decoded.audio
            return Decoded(decoded.frames, decoded.fps, audio, decoded.times)

        yield VideoItem(key, origin, load)


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
    shards = sorted(shard_dir.glob("*.tar"))
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
