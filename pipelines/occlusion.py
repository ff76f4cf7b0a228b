"""Stage 8, occlusion: a hand over the face.

Frames are sampled at `sample_fps`. A sampled frame is occluded when at least `min_points_in_face`
confident hand keypoints lie inside the face box (the clip's face track, grown by `face_margin`).
With weights the hand keypoints come from DWpose wholebody (keypoints 91-132), without them from
mediapipe hands. Records `occlusion.occluded_ratio`; rejects above `max_occluded_ratio`.
The rejection rule is the pure function `decide`; the stage's row in `pipelines/stages.py` maps
`max_occluded_ratio` to the metric `occluded_ratio`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np

from vividhead.models.face_mesh import FaceMesh
from vividhead.models.pose import DWposeHands, Hands, MediapipeHands
from vividhead.pipelines.clip_media import FPS, clip_video, iter_frames
from vividhead.pipelines.filter_config import OcclusionConfig
from vividhead.pipelines.records import Clip, ClipStage, StageResult
from vividhead.weights import Weights


def decide(metrics: Mapping[str, Any], config: OcclusionConfig) -> tuple[str, str] | None:
    """(reason, detail) when the thresholds reject a clip with these occlusion metrics, else None.

    Pure, over the stage's own metric names; a missing (None) metric decides nothing.
    """
    ratio = metrics.get("occluded_ratio")
    if not config.enabled or ratio is None or not ratio > config.max_occluded_ratio:
        return None
    first = metrics.get("first_occluded")
    at = "" if first is None else f" (first at {first:.1f} s)"
    return ("hand_over_face", f"a hand covers the face in {ratio:.0%} of sampled frames{at}, "
                              f"above occlusion.max_occluded_ratio={config.max_occluded_ratio}")


def points_in_box(hands: Hands, box: np.ndarray, min_score: float, margin: float) -> int:
    """How many hand points with score >= min_score fall inside box (x0, y0, x1, y1) grown by margin."""
    if len(hands.points) == 0 or np.isnan(box).any():
        return 0
    grow = margin * max(box[2] - box[0], box[3] - box[1])
    x0, y0, x1, y1 = box[0] - grow, box[1] - grow, box[2] + grow, box[3] + grow
    x, y = hands.points[:, 0], hands.points[:, 1]
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (hands.scores >= min_score)
    return int(inside.sum())


def _mesh_box(mesh, rgb: np.ndarray) -> np.ndarray:
    found = mesh(rgb)
    return np.full(4, np.nan) if found is None else np.asarray(found.box())


class OcclusionStage(ClipStage):
    """Share of sampled frames with a hand over the face."""

    name: ClassVar[str] = "occlusion"
    metric_types: ClassVar[dict[str, str]] = {
        "method": "str",               # "dwpose" or "mediapipe_hands"
        "occluded_ratio": "float",     # share of sampled frames (with a face) that are occluded
        "sampled_frames": "int",       # frames examined
        "hand_frames": "int",          # sampled frames where any hand was found
        "first_occluded": "float",     # seconds into the clip of the first occluded frame (null if none)
    }

    def __init__(self, config: OcclusionConfig | None = None, weights: Weights | None = None) -> None:
        self.config = config or OcclusionConfig()
        self.weights = weights or Weights()
        self.detector = None
        self.mesh = None

    def mode(self) -> Literal["weights", "default", "skipped"]:
        if not self.config.enabled:
            return "skipped"
        both = self.weights.available("dwpose_det") and self.weights.available("dwpose_pose")
        return "weights" if both else "default"

    def reason(self) -> str:
        if not self.config.enabled:
            return "disabled in the build config"
        if self.mode() == "weights":
            return f"DWpose wholebody from {self.weights.dwpose_det} and {self.weights.dwpose_pose}"
        problems = []
        for name in ("dwpose_det", "dwpose_pose"):
            path = getattr(self.weights, name)
            if path is None:
                problems.append(f"{name} not configured")
            elif not path.exists():
                problems.append(f"{name} {path} does not exist")
        return f"{'; '.join(problems)}: mediapipe hands"

    def setup(self) -> None:
        if not self.config.enabled:
            return
        if self.mode() == "weights":
            self.detector = DWposeHands(self.weights.dwpose_det, self.weights.dwpose_pose)
        else:
            self.detector = MediapipeHands(self.config.hand_confidence)

    def teardown(self) -> None:
        for model in (self.detector, self.mesh):
            if hasattr(model, "close"):
                model.close()
        self.detector = self.mesh = None

    def process(self, clip: Clip) -> StageResult:
        if self.detector is None:
            return StageResult()
        start = time.perf_counter()
        c = self.config
        step = max(1, round(FPS / c.sample_fps))
        sampled = hand_frames = occluded = 0
        first: float | None = None
        for index, rgb in iter_frames(clip_video(clip), step):
            box = self._face_box(clip, index, rgb)
            if np.isnan(box).any():
                continue   # no face in this frame: visibility is another stage's decision
            sampled += 1
            hands = self.detector(rgb)
            hand_frames += int(len(hands.points) > 0)
            if points_in_box(hands, box, c.keypoint_score, c.face_margin) >= c.min_points_in_face:
                occluded += 1
                first = index / FPS if first is None else first
        ratio = occluded / sampled if sampled else 0.0
        result = StageResult(metrics={
            "method": "dwpose" if self.mode() == "weights" else "mediapipe_hands",
            "occluded_ratio": round(ratio, 4), "sampled_frames": sampled,
            "hand_frames": hand_frames, "first_occluded": first,
        })
        decision = decide({"occluded_ratio": ratio, "first_occluded": first}, c)   # the unrounded ratio
        if decision is not None:
            result.reject, result.detail = decision
        result.seconds = time.perf_counter() - start
        return result

    def _face_box(self, clip: Clip, index: int, rgb: np.ndarray) -> np.ndarray:
        """The face track's box for this frame; the face mesh box when the clip has no track."""
        if clip.face_track is not None:
            track = np.asarray(clip.face_track, dtype=np.float64)
            return track[index] if index < len(track) else np.full(4, np.nan)
        if self.mesh is None:
            self.mesh = FaceMesh(video=False)
        return _mesh_box(self.mesh, rgb)
