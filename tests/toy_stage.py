"""A toy curation stage for tests/test_build_stages.py: one stage module, added to the build by one row.

It measures the mean brightness of a clip's first frame and rejects clips brighter than
`toy.max_brightness`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from vividhead.pipelines.clip_media import clip_video, iter_frames
from vividhead.pipelines.records import Clip, ClipStage, StageResult
from vividhead.pipelines.stages import Resources, Stage, Threshold


class ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_brightness: float = Field(255.0, ge=0)


def decide(metrics: Mapping[str, Any], config: ToyConfig) -> tuple[str, str] | None:
    brightness = metrics.get("brightness")
    if not config.enabled or brightness is None or not brightness > config.max_brightness:
        return None
    return "too_bright", f"brightness {brightness:.1f} > toy.max_brightness {config.max_brightness}"


class ToyStage(ClipStage):
    name: ClassVar[str] = "toy"
    metric_types: ClassVar[dict[str, str]] = {"brightness": "float"}

    def __init__(self, config: ToyConfig | None = None, weights: Any = None) -> None:
        self.config = config or ToyConfig()

    def process(self, clip: Clip) -> StageResult:
        _, first = next(iter_frames(clip_video(clip)))
        result = StageResult(metrics={"brightness": float(first.mean())})
        result.reject, result.detail = decide(result.metrics, self.config) or (None, None)
        return result


ROW = Stage(12, "toy", "clips", ToyConfig, ToyStage.metric_types, {"max_brightness": Threshold("brightness")},
            decide, ("too_bright",), ToyStage, Resources(num_cpus=0))
