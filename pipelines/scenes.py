"""Stage 3, segment: scene cuts with PySceneDetect on the decode pass's small frames, and clip length.

`SceneCuts` feeds PySceneDetect's `ContentDetector` (mean change of hue, saturation and value,
its default threshold 27) the downscaled frames the decode pass already makes, so cutting costs no
second decode. Its flash filter runs in `SUPPRESS` mode: a cut is reported on the frame where it
happens (no look-ahead, as the streaming pass needs) and no second cut follows within
`segment.scene_min_seconds`. The rejection rule is the pure `decide` over the clip's length.

A pass resumed inside a unit (`WorkUnit.resume_at`) gets the same cuts from a fresh `SceneCuts`
fed a few frames before the resume point (`warm_up_from`): the detector remembers only the
previous frame and the frame of its last cut, and only for `memory_frames`.
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


def memory_frames(config: SegmentConfig, fps: float) -> int:
    """How far back a cut decision looks, in frames: `scene_min_seconds` (at least the previous frame)."""
    return max(1, round(config.scene_min_seconds * fps))


def warm_up_from(resume: int, last_cut: int | None, first: int, memory: int) -> int:
    """The frame where a fresh `SceneCuts` must start so that, fed every frame up to `resume`, it reports
    from `resume` on exactly the cuts of an unbroken pass from frame `first` whose last cut before
    `resume` was `last_cut` (None: no cut since `first`).

    The detector compares each frame with the one before, and reports a cut only `memory` frames after
    its last one (or after its first frame). Starting at that last cut reproduces its state; when the
    last cut is `memory` or more frames back, starting `memory` frames back is as good: neither pass
    can report a cut before `resume`, and both may from `resume` on.
    """
    start = max(first, resume - memory)
    return max(start, last_cut) if last_cut is not None and last_cut < resume else start


class SceneCuts:
    """Sees every frame of a work unit in order (not only a clip's); `update` says whether a scene cuts there."""

    def __init__(self, config: SegmentConfig, fps: float) -> None:
        self.fps = fps
        self.detector = ContentDetector(threshold=config.scene_threshold,
                                        min_scene_len=memory_frames(config, fps),
                                        filter_mode=FlashFilter.Mode.SUPPRESS)

    def update(self, frame: Frame) -> bool:
        bgr = cv2.cvtColor(frame.small, cv2.COLOR_RGB2BGR)      # PySceneDetect reads OpenCV's BGR order
        return bool(self.detector.process_frame(FrameTimecode(frame.index, float(self.fps)), bgr))
