"""Stage 7, visibility: faces counted at `sample_fps` (the paper's 1 fps samples).

`Visibility` reads the detections the face track already made inside the crop on the same frames (a
frame's faces are detected once), and searches the full frame for a second face of comparable size
(`pipelines/framing.py`): the paper keeps a single visible speaker. The rejection rules over the
stored metrics are the pure `decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vividhead.pipelines.filter_config import VisibilityConfig
from vividhead.pipelines.framing import comparable_faces
from vividhead.pipelines.records import Frame, Observer, StageResult

METRICS: dict[str, str] = {
    "face_ratio": "float",         # share of samples with a face in the crop
    "samples": "int",              # frames sampled
    "max_faces": "int",            # most faces seen in one sample
    "second_face_ratio": "float",  # share of samples whose full frame shows another face of comparable size
}


def decide(metrics: Mapping[str, Any], config: VisibilityConfig) -> tuple[str, str] | None:
    """(reason, detail) when too many samples lack a face or show a second one, else None; a missing
    metric decides nothing."""
    if not config.enabled:
        return None
    ratio, second = metrics.get("face_ratio"), metrics.get("second_face_ratio")
    if ratio is not None and 1.0 - ratio > config.max_missing_ratio:
        return ("face_missing", f"{1.0 - ratio:.0%} of the 1 fps samples have no face "
                                f"(> visibility.max_missing_ratio {config.max_missing_ratio})")
    if second is not None and second > config.max_second_face_ratio:
        return ("second_face", f"a second face at least {config.second_face_min_share:.0%} of the speaker's size is "
                               f"on screen in {second:.0%} of the 1 fps samples (> visibility.max_second_face_ratio "
                               f"{config.max_second_face_ratio})")
    return None


class Visibility(Observer):
    """Faces in the crop, and comparable faces elsewhere in the frame, at each sample of one clip."""

    def __init__(self, config: VisibilityConfig, fps: float, crop: tuple[int, int, int]) -> None:
        self.config = config
        self.every = max(1, round(fps / config.sample_fps))
        self.crop = crop                              # x, y, side of the clip's crop in frame pixels
        self.counts: list[int] = []
        self.second: list[bool] = []

    def update(self, frame: Frame) -> None:
        if frame.clip_index % self.every == 0:
            self.counts.append(len(frame.faces()))
            if frame.detect is not None:
                others = comparable_faces(frame.detect(frame.rgb), self.crop, self.config.second_face_min_share)
                self.second.append(others > 0)

    def finish(self) -> StageResult:
        samples = np.asarray(self.counts, int)
        metrics = {"face_ratio": float((samples > 0).mean()) if samples.size else 0.0,
                   "samples": int(samples.size), "max_faces": int(samples.max()) if samples.size else 0,
                   "second_face_ratio": float(np.mean(self.second)) if self.second else None}
        return StageResult(metrics, *(decide(metrics, self.config) or (None, None)))
