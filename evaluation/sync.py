"""Sync-C / Sync-D of one video: SyncNet (`syncnet_v2.model`) scored over the whole video.

This reuses the build's SyncNet and its reference scoring (`vividhead.models.syncnet.score_sync`):
Sync-C is LSE-C, Sync-D is LSE-D, and the AV offset is in 25 fps frames. Face boxes come from the
build's face detector (SCRFD from local weights, else mediapipe), the largest face per frame; frames
without a face are interpolated from their neighbours by the scorer. Videos at another (or a
variable) frame rate are resampled to 25 fps from their frame timestamps, as SyncNet expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vividhead.evaluation.videos import Decoded
from vividhead.models.face_detect import FaceDetector, make_face_detector
from vividhead.models.syncnet import FPS, SyncNet, load_syncnet, score_sync


@dataclass(frozen=True)
class SyncResult:
    """One video's SyncNet scores, or the reason it could not be scored."""

    sync_c: float | None = None
    sync_d: float | None = None
    offset: int | None = None
    windows: int = 0
    skipped: str | None = None


def to_25fps(frames: np.ndarray, fps: float, times: np.ndarray | None = None) -> np.ndarray:
    """Resample [T, H, W, 3] frames to 25 fps: at each output time, the frame shown then (the latest
    with a presentation time <= t; `times` in seconds, else a constant `fps` is assumed)."""
    if times is None:
        if abs(fps - FPS) < 1e-3:
            return frames
        times = np.arange(len(frames)) / fps
    elif len(times) > 1 and np.allclose(np.diff(times), 1.0 / FPS, atol=1e-3):
        return frames                                  # already constant 25 fps
    duration = times[-1] + (times[-1] - times[-2] if len(times) > 1 else 1.0 / FPS)
    out_times = np.arange(int(np.floor(duration * FPS + 1e-6))) / FPS
    idx = np.clip(np.searchsorted(times, out_times + 1e-6, side="right") - 1, 0, len(frames) - 1)
    return frames[idx]


def face_track(detector: FaceDetector, frames: np.ndarray) -> np.ndarray:
    """[T, 4] boxes (x0, y0, x1, y1) of the largest face per frame, NaN where none was found."""
    boxes = np.full((len(frames), 4), np.nan)
    for i, frame in enumerate(frames):
        faces = detector(np.ascontiguousarray(frame))
        if faces:
            best = max(faces, key=lambda f: f.side)
            boxes[i] = (best.x0, best.y0, best.x1, best.y1)
    return boxes


class SyncScorer:
    """SyncNet from local weights plus a face detector; `score` gives one video's SyncResult."""

    def __init__(self, weights: Path, device: torch.device, scrfd: Path | None = None, vshift: int = 15) -> None:
        self.model: SyncNet = load_syncnet(weights, device)
        self.detector = make_face_detector("auto", scrfd)
        self.vshift = vshift

    def score(self, video: Decoded) -> SyncResult:
        if video.audio is None or len(video.audio) == 0:
            return SyncResult(skipped="no audio")
        frames = to_25fps(video.frames, video.fps, video.times)
        boxes = face_track(self.detector, frames)
        try:
            result = score_sync(self.model, frames, video.audio, boxes, vshift=self.vshift)
        except ValueError as error:          # too short for one 5-frame window
            return SyncResult(skipped=str(error))
        if result is None:
            return SyncResult(skipped="no face detected")
        return SyncResult(result.lse_c, result.lse_d, result.offset, result.n_windows)

    def close(self) -> None:
        self.detector.close()
