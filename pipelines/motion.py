"""Stage 6 flow cuts: DIS optical flow between consecutive low-resolution frames.

For each frame the flow from the previous frame is computed, the current frame is warped back
along it, and the mean absolute difference that remains (the residual, 0-1) is recorded with the
mean flow magnitude (as a fraction of the frame width). Motion that flow can explain leaves a
small residual; an abrupt transition (a cut, a fast dissolve, a flash) cannot be explained and
leaves a large one.
"""

from __future__ import annotations

import cv2
import numpy as np


class MotionScorer:
    """Feed small gray frames in order; `update` returns (residual, motion) for the latest pair."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._previous: np.ndarray | None = None
        self._grid: np.ndarray | None = None

    def update(self, gray: np.ndarray) -> tuple[float, float]:
        previous, self._previous = self._previous, gray
        if previous is None or previous.shape != gray.shape:
            return 0.0, 0.0
        flow = self._dis.calc(previous, gray, None)
        h, w = gray.shape
        if self._grid is None or self._grid.shape[:2] != (h, w):
            xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = np.stack([xs, ys], -1)
        warped = cv2.remap(gray, self._grid + flow, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        residual = cv2.mean(cv2.absdiff(warped, previous))[0] / 255.0
        motion = cv2.mean(cv2.magnitude(flow[..., 0], flow[..., 1]))[0] / w
        return residual, motion
