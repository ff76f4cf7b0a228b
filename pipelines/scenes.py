"""Stage 3 scene cuts, scored on small frames as PySceneDetect's ContentDetector scores them.

The score of a frame is the mean absolute change of hue, saturation and value against the previous
frame (OpenCV HSV, equal weights, no edges): ContentDetector's default. A cut is reported on the
frame where the score reaches the threshold, at least `min_frames` after the previous cut. Scoring
the already-decoded, downscaled frames keeps this at a fraction of the cost of a second decode.
"""

from __future__ import annotations

import cv2
import numpy as np


class SceneScorer:
    """Feed small RGB frames in order; `update` says whether a cut falls on this frame."""

    def __init__(self, threshold: float = 27.0, min_frames: int = 15) -> None:
        self.threshold, self.min_frames = threshold, min_frames
        self._previous: np.ndarray | None = None
        self._since_cut = 0
        self.last_score = 0.0

    def update(self, small_rgb: np.ndarray) -> bool:
        hsv = cv2.cvtColor(small_rgb, cv2.COLOR_RGB2HSV)
        previous, self._previous = self._previous, hsv
        self._since_cut += 1
        if previous is None or previous.shape != hsv.shape:
            self.last_score = 0.0
            return False
        self.last_score = float(np.mean(cv2.mean(cv2.absdiff(hsv, previous))[:3]))
        if self.last_score >= self.threshold and self._since_cut >= self.min_frames:
            self._since_cut = 0
            return True
        return False

    def reset(self) -> None:
        """Start a new piece: the next frame cannot be a cut."""
        self._since_cut = 0
