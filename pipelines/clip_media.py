"""Read a staged clip's media for the model stages: RGB frames (PyAV) and 16 kHz mono audio.

Frames are decoded as a stream, so a stage holds only what it keeps (crops, samples), never
the whole 512x512 clip at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vividhead.media import frames, read_wav
from vividhead.pipelines.records import Clip

SAMPLE_RATE = 16000
FPS = 25


class ClipMediaError(ValueError):
    """A staged clip file is missing or not in the expected format."""


def _staged(clip: Clip, field: str, expected: str) -> Path:
    """A staged file of the clip; a clear error when it is not set or missing."""
    value = getattr(clip, field)
    if not value:
        raise ClipMediaError(f"clip {clip.key}: {field} is not set (expected the staged {expected})")
    path = Path(value)
    if not path.is_file():
        raise ClipMediaError(f"clip {clip.key}: the staged {expected} {path} does not exist")
    return path


def clip_video(clip: Clip) -> Path:
    """The clip's staged mp4."""
    return _staged(clip, "video_path", "512x512 mp4")


def read_audio(clip: Clip) -> np.ndarray:
    """The clip's 16 kHz mono audio as float32 in [-1, 1]."""
    return read_wav(_staged(clip, "wav_path", "16 kHz mono wav"), SAMPLE_RATE)


def iter_frames(path: Path, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB uint8 [H, W, 3]) for every `step`-th frame of a video."""
    for frame in frames(path, keep=lambda index: index % step == 0):
        yield frame.index, frame.image
