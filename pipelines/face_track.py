"""Stage 5, face: the crop around the piece's first face, and the face track inside it.

A piece opens a clip on its first frame with a face (found on the full frame): the crop is
`crop_scale` x the main face, and a clip that would need more than `max_upscale` enlargement to
reach `size` pixels is rejected. Inside an open clip `FaceTrack` detects faces in the crop
`detect_fps` times a second and interpolates in between (`Clip.face_track`, crop pixels, NaN
where unknown). The rejection rules over the stored metrics are the pure `decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vividhead.models.face_detect import Face
from vividhead.pipelines.filter_config import FaceConfig
from vividhead.pipelines.records import Frame, Observer, StageResult

METRICS: dict[str, str] = {
    "detector": "str",             # mediapipe or scrfd
    "score": "float",              # detection score of the main face on the first frame
    "side": "float",               # its box side in source pixels
    "count": "int",                # faces on the first frame
    "upscale": "float",            # size / crop side: the enlargement the crop needs
    "max_center_shift": "float",   # largest distance of the tracked face from the crop centre / crop side
    "track_ratio": "float",        # share of frames with a known face box
    "mask_source": "str",          # face_mesh or detection_box (mask.png of kept clips)
}


def decide(metrics: Mapping[str, Any], config: FaceConfig) -> tuple[str, str] | None:
    """(reason, detail) when the crop needs too much upscaling or the face leaves the centre, else None."""
    upscale = metrics.get("upscale")
    if upscale is not None and upscale > config.max_upscale:
        return ("resolution_too_low",
                f"{config.size} px needs an upscale of {upscale:.2f} > face.max_upscale {config.max_upscale}")
    shift = metrics.get("max_center_shift")
    if shift is not None and shift > config.max_center_shift:
        return ("face_left_center", f"the face centre moved {shift:.2f} of the crop side from the centre "
                                    f"(> face.max_center_shift {config.max_center_shift})")
    return None


def nearest(faces: list[Face], size: int) -> Face | None:
    """The face nearest the crop centre (the tracked speaker), or None."""
    if not faces:
        return None
    return min(faces, key=lambda f: np.hypot(f.center[0] - size / 2, f.center[1] - size / 2))


class FaceTrack(Observer):
    """Face boxes in the crop at `detect_fps`, interpolated to every frame of one clip."""

    def __init__(self, config: FaceConfig, fps: float, opened: dict[str, Any]) -> None:
        self.config = config
        self.every = max(1, round(fps / config.detect_fps))
        self.opened = opened                          # the metrics of the first frame's detection
        self.boxes: dict[int, Face | None] = {}       # clip frame -> face in crop pixels
        self.frames = 0

    def update(self, frame: Frame) -> None:
        if frame.clip_index % self.every == 0:
            self.boxes[frame.clip_index] = nearest(frame.faces(), self.config.size)
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
        size = self.config.size
        found = [f for f in self.boxes.values() if f is not None]
        shifts = [np.hypot(f.center[0] - size / 2, f.center[1] - size / 2) / size for f in found]
        track = self.track()
        metrics = {**self.opened, "max_center_shift": float(max(shifts)) if shifts else None,
                   "track_ratio": float(np.isfinite(track[:, 0]).mean()) if len(track) else 0.0}
        return StageResult(metrics, *(decide(metrics, self.config) or (None, None)))
