"""Stage 6, flow: abrupt transitions that scene cuts missed, found with DIS optical flow.

For each frame of a clip the flow from the previous frame is computed on a small gray copy, the
current frame is warped back along it, and the mean absolute difference that remains (the
residual, 0-1) is recorded with the mean flow magnitude (a fraction of the frame width). Motion
that flow can explain leaves a small residual; an abrupt transition (a cut, a fast dissolve, a
flash) cannot be explained and leaves a large one. The rejection rule is the pure `decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from vividhead.pipelines.filter_config import FlowConfig
from vividhead.pipelines.records import Frame, Observer, StageResult

METRICS: dict[str, str] = {
    "max_residual": "float",       # largest residual between consecutive frames (0-1)
    "max_residual_at": "float",    # seconds into the clip where it occurs
    "mean_motion": "float",        # mean flow magnitude, a fraction of the frame width
    "max_motion": "float",
}


def decide(metrics: Mapping[str, Any], config: FlowConfig) -> tuple[str, str] | None:
    """(reason, detail) when a residual exceeds `max_residual`, else None; a missing value decides nothing."""
    residual = metrics.get("max_residual")
    if not config.enabled or residual is None or not residual > config.max_residual:
        return None
    return ("abrupt_transition", f"flow residual {residual:.3f} at {metrics.get('max_residual_at') or 0:.2f} s "
                                 f"exceeds flow.max_residual {config.max_residual}")


def resize_width(rgb: np.ndarray, width: int) -> np.ndarray:
    """`rgb` scaled down to `width` (kept as it is when already narrower)."""
    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    return cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_LINEAR)


class FlowScorer:
    """Feed small gray frames in order; `update` returns (residual, motion) for the latest pair."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._previous: np.ndarray | None = None
        self._grid: np.ndarray | None = None

    def update(self, gray: np.ndarray) -> tuple[float, float] | None:
        previous, self._previous = self._previous, gray
        if previous is None or previous.shape != gray.shape:
            return None
        flow = self._dis.calc(previous, gray, None)
        h, w = gray.shape
        if self._grid is None or self._grid.shape[:2] != (h, w):
            xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = np.stack([xs, ys], -1)
        warped = cv2.remap(gray, self._grid + flow, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        residual = cv2.mean(cv2.absdiff(warped, previous))[0] / 255.0
        motion = cv2.mean(cv2.magnitude(flow[..., 0], flow[..., 1]))[0] / w
        return residual, motion


class FlowObserver(Observer):
    """Residual and motion between each pair of consecutive frames of one clip."""

    def __init__(self, config: FlowConfig, fps: float) -> None:
        self.config, self.fps = config, fps
        self.scorer = FlowScorer()
        self.residuals: list[float] = []
        self.motions: list[float] = []

    def update(self, frame: Frame) -> None:
        found = self.scorer.update(cv2.cvtColor(resize_width(frame.small, self.config.width), cv2.COLOR_RGB2GRAY))
        if found is not None:
            self.residuals.append(found[0])
            self.motions.append(found[1])

    def finish(self) -> StageResult:
        residuals = np.asarray(self.residuals) if self.residuals else np.zeros(1)
        motions = np.asarray(self.motions) if self.motions else np.zeros(1)
        metrics = {"max_residual": float(residuals.max()),
                   "max_residual_at": float((int(residuals.argmax()) + 1) / self.fps),
                   "mean_motion": float(motions.mean()), "max_motion": float(motions.max())}
        return StageResult(metrics, *(decide(metrics, self.config) or (None, None)))
