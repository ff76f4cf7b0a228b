"""Stage 7, visibility: faces counted inside the crop at `sample_fps` (the paper's 1 fps samples).

`Visibility` reads the detections the face track already made on the same frames (a frame's faces
are detected once). The rejection rule over the stored metrics is the pure `decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vividhead.pipelines.filter_config import VisibilityConfig
from vividhead.pipelines.records import Frame, Observer, StageResult

METRICS: dict[str, str] = {
    "face_ratio": "float",         # share of samples with a face in the crop
    "samples": "int",              # frames sampled
    "max_faces": "int",            # most faces seen in one sample
}


def decide(metrics: Mapping[str, Any], config: VisibilityConfig) -> tuple[str, str] | None:
    """(reason, detail) when too many samples lack a face, else None; a missing ratio decides nothing."""
    ratio = metrics.get("face_ratio")
    if not config.enabled or ratio is None or not 1.0 - ratio > config.max_missing_ratio:
        return None
    return ("face_missing", f"{1.0 - ratio:.0%} of the 1 fps samples have no face "
                            f"(> visibility.max_missing_ratio {config.max_missing_ratio})")


class Visibility(Observer):
    """Faces in the crop at each sample of one clip."""

    def __init__(self, config: VisibilityConfig, fps: float) -> None:
        self.config = config
        self.every = max(1, round(fps / config.sample_fps))
        self.counts: list[int] = []

    def update(self, frame: Frame) -> None:
        if frame.clip_index % self.every == 0:
            self.counts.append(len(frame.faces()))

    def finish(self) -> StageResult:
        samples = np.asarray(self.counts, int)
        metrics = {"face_ratio": float((samples > 0).mean()) if samples.size else 0.0,
                   "samples": int(samples.size), "max_faces": int(samples.max()) if samples.size else 0}
        return StageResult(metrics, *(decide(metrics, self.config) or (None, None)))
