"""Stage 3, segment: scene cuts with PySceneDetect on the decode pass's small frames, and clip length.

`SceneCuts` feeds PySceneDetect's `ContentDetector` (mean change of hue, saturation and value,
its default threshold 27) the downscaled frames the decode pass already makes, so cutting costs no
second decode. Its flash filter runs in `SUPPRESS` mode: a cut is reported on the frame where it
happens (no look-ahead, as the streaming pass needs) and no second cut follows within
`segment.scene_min_seconds`. The rejection rule is the pure `decide` over the clip's length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
from scenedetect import FrameTimecode
from scenedetect.detector import FlashFilter
from scenedetect.detectors import ContentDetector

from vividhead.pipelines.filter_config import SegmentConfig
from vividhead.pipelines.records import Frame

METRICS: dict[str, str] = {
    "starts_at_cut": "bool",       # the piece begins at a scene cut (else at the unit start or a given range)
    "end_reason": "str",           # cut, max_length, face_appeared, face_moved or end
    "piece_start": "float",        # seconds: where the piece began (the clip may start later, at its first face)
    "seconds": "float",            # length of the clip in seconds
}


def decide(metrics: Mapping[str, Any], config: SegmentConfig) -> tuple[str, str] | None:
    """(reason, detail) when the clip is too short, else None; a missing length decides nothing."""
    seconds = metrics.get("seconds")
    if seconds is None or not seconds < config.min_seconds - 1e-9:
        return None
    return "too_short", f"{seconds:.2f} s is shorter than segment.min_seconds {config.min_seconds} s"


class SceneCuts:
    """Sees every frame of a work unit in order (not only a clip's); `update` says whether a scene cuts there."""

    def __init__(self, config: SegmentConfig, fps: float) -> None:
        self.fps = fps
        self.detector = ContentDetector(threshold=config.scene_threshold,
                                        min_scene_len=max(1, round(config.scene_min_seconds * fps)),
                                        filter_mode=FlashFilter.Mode.SUPPRESS)

    def update(self, frame: Frame) -> bool:
        bgr = cv2.cvtColor(frame.small, cv2.COLOR_RGB2BGR)      # PySceneDetect reads OpenCV's BGR order
        return bool(self.detector.process_frame(FrameTimecode(frame.index, float(self.fps)), bgr))
