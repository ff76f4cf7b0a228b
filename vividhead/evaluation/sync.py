"""Sync-C / Sync-D of one video: SyncNet (`syncnet_v2.model`) scored over the whole video.

This reuses the build's SyncNet and its reference scoring (`vividhead.models.syncnet.score_sync`):
Sync-C is LSE-C, Sync-D is LSE-D, and the AV offset is in 25 fps frames. Face boxes come from the
build's face detector (SCRFD from local weights, else mediapipe), the largest face per frame; frames
without a face are interpolated from their neighbours by the scorer. Videos at another frame rate
are resampled to 25 fps by nearest-frame selection, as SyncNet expects.
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


def to_25fps(frames: np.ndarray, fps: float) -> np.ndarray:
    """Nearest-frame resampling of [T, H, W, 3] frames at `fps` to 25 fps."""
    if abs(fps - FPS) < 1e-3:
        return frames
    n_out = int(np.floor(len(frames) * FPS / fps))
    idx = np.minimum(np.round(np.arange(n_out) * fps / FPS).astype(int), len(frames) - 1)
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
        frames = to_25fps(video.frames, video.fps)
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
