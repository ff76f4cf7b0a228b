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
    path = Path(clip.wav_path)
    if not path.is_file():
        raise ClipMediaError(f"audio file {path} does not exist")
    return read_wav(path, SAMPLE_RATE)


def iter_frames(path: Path, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB uint8 [H, W, 3]) for every `step`-th frame of a video."""
    for frame in frames(path, keep=lambda index: index % step == 0):
        yield frame.index, frame.image
