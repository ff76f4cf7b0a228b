"""Read a staged clip's media for the model stages: RGB frames (PyAV) and 16 kHz mono audio.

Frames are decoded as a stream, so a stage holds only what it keeps (crops, samples), never
the whole 512x512 clip at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vividhead.pipelines.records import Clip

SAMPLE_RATE = 16000
FPS = 25


class ClipMediaError(ValueError):
    """A staged clip file is missing or not in the expected format."""


def clip_video(clip: Clip) -> Path:
    """The clip's staged mp4; a clear error when it is not set or missing."""
    if not clip.video_path:
        raise ClipMediaError(f"clip {clip.key}: video_path is not set (expected the staged 512x512 mp4)")
    path = Path(clip.video_path)
    if not path.is_file():
        raise ClipMediaError(f"clip {clip.key}: video file {path} does not exist")
    return path


def read_audio(clip: Clip) -> np.ndarray:
    """The clip's 16 kHz mono audio as float32 in [-1, 1]."""
    if not clip.wav_path:
        raise ClipMediaError(f"clip {clip.key}: wav_path is not set (expected the staged 16 kHz mono wav)")
    return read_wav(Path(clip.wav_path))


def read_wav(path: Path) -> np.ndarray:
    """A 16 kHz wav as float32 mono; errors name the file and the expected rate."""
    import soundfile as sf

    if not path.is_file():
        raise ClipMediaError(f"audio file {path} does not exist")
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ClipMediaError(f"audio file {path}: sample rate {rate} Hz, expected {SAMPLE_RATE} Hz")
    return audio.mean(axis=1)


def iter_frames(path: Path, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB uint8 [H, W, 3]) for every `step`-th frame of a video."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index % step == 0:
                yield index, frame.to_ndarray(format="rgb24")


def read_frames(path: Path) -> np.ndarray:
    """All frames of a (small) video as RGB uint8 [n, H, W, 3]."""
    frames = [rgb for _, rgb in iter_frames(path)]
    if not frames:
        raise ClipMediaError(f"video file {path} has no decodable frames")
    return np.stack(frames)
