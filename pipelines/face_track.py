"""Stage 5, face: the crop around the piece's first face, and the face track inside it.

A piece opens a clip on its first frame with a face (found on the full frame): the crop is
`crop_scale` x the main face, and a clip that would need more than `max_upscale` enlargement to
reach `size` pixels is rejected. Inside an open clip `FaceTrack` detects faces in the crop
`detect_fps` times a second, follows the speaker from detection to detection and interpolates in
between (`Clip.face_track`, crop pixels, NaN where unknown). It measures how far the face has moved
from where it was when the clip opened (`pipelines/framing.py`); once that passes `max_drift`, the
face is leaving its crop and the decode pass ends the clip there (`segment.end_reason: face_moved`),
so a new piece re-centres on the face. The rejection rule over the stored metrics is the pure `decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vividhead.models.face_detect import Face
from vividhead.pipelines.filter_config import FaceConfig
from vividhead.pipelines.framing import drift, follow
from vividhead.pipelines.records import Frame, Observer, StageResult

METRICS: dict[str, str] = {
    "detector": "str",             # mediapipe or scrfd
    "score": "float",              # detection score of the main face on the first frame
    "side": "float",               # its box side in source pixels
    "count": "int",                # faces on the first frame
    "upscale": "float",            # size / crop side: the enlargement the crop needs
    "max_drift": "float",          # largest distance of the face from its start position / crop side, before any cut
    "moved_at": "float",           # seconds into the clip where the drift passed face.max_drift (the clip ends there)
    "track_ratio": "float",        # share of frames with a known face box
    "mask_source": "str",          # face_mesh or detection_box (mask.png of kept clips)
}


def decide(metrics: Mapping[str, Any], config: FaceConfig) -> tuple[str, str] | None:
    """(reason, detail) when the crop needs too much upscaling, else None. (A face that moves too far
    is not rejected: the clip is cut where it moved, see `FaceTrack`.)"""
    upscale = metrics.get("upscale")
    if upscale is not None and upscale > config.max_upscale:
        return ("resolution_too_low",
                f"{config.size} px needs an upscale of {upscale:.2f} > face.max_upscale {config.max_upscale}")
    return None


class FaceTrack(Observer):
    """Face boxes in the crop at `detect_fps`, interpolated to every frame of one clip, and the face's
    drift from where it started; `moved` once the drift passes `max_drift` (the clip ends there)."""

    def __init__(self, config: FaceConfig, fps: float, opened: dict[str, Any]) -> None:
        self.config = config
        self.fps = fps
        self.every = max(1, round(fps / config.detect_fps))
        self.opened = opened                          # the metrics of the first frame's detection
        self.boxes: dict[int, Face | None] = {}       # clip frame -> face in crop pixels
        self.frames = 0
        self.start: Face | None = None                # the face at the clip's first detection
        self.last: Face | None = None                 # the face at the latest detection that found it
        self.max_drift = 0.0
        self.moved_at: int | None = None              # clip frame where the drift passed max_drift

    @property
    def moved(self) -> bool:
        return self.moved_at is not None

    def update(self, frame: Frame) -> None:
        if frame.clip_index % self.every == 0:
            face = follow(frame.faces(), self.last, self.config.size)
            self.boxes[frame.clip_index] = face
            if face is not None and not self.moved:
                self.start, self.last = self.start or face, face
                moved = drift(face, self.start, self.config.size)
                if moved > self.config.max_drift:
                    self.moved_at = frame.clip_index
                else:
                    self.max_drift = max(self.max_drift, moved)
        self.frames += 1

    def track(self) -> np.ndarray:
        """[frames, 4] boxes in crop pixels: detections at keyframes, linear in between, NaN when unknown."""
        n = self.frames
        track = np.full((n, 4), np.nan, np.float32)
        keys = sorted(self.boxes)
        for a, b in zip(keys, keys[1:] + [n]):
            box_a = self.boxes[a]
            if box_a is None:
                continue
            box_b = self.boxes.get(b)
            va = np.array([box_a.x0, box_a.y0, box_a.x1, box_a.y1], np.float32)
            vb = va if box_b is None and b == n else (
                np.array([box_b.x0, box_b.y0, box_b.x1, box_b.y1], np.float32) if box_b is not None else None)
            for i in range(a, min(b, n)):
                if vb is None:
                    if i - a < (b - a) / 2:
                        track[i] = va
                else:
                    track[i] = va + (vb - va) * ((i - a) / max(b - a, 1))
        return track

    def finish(self) -> StageResult:
        track = self.track()
        metrics = {**self.opened, "max_drift": self.max_drift if self.start is not None else None,
                   "moved_at": self.moved_at / self.fps if self.moved else None,
                   "track_ratio": float(np.isfinite(track[:, 0]).mean()) if len(track) else 0.0}
        return StageResult(metrics, *(decide(metrics, self.config) or (None, None)))
