"""Re-deciding a clip from its stored raw metrics: the thresholds of stages 5-10, in pipeline order.

Stages 5-7 decide through `extract.decide_core`; occlusion, speech and sync through their own
pure `decide()`. Resume uses this when only thresholds changed, so no clip is decoded again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vividhead.config import BuildConfig
from vividhead.pipelines import occlusion, speech, sync
from vividhead.pipelines.extract import CORE_DECISIONS, decide_core

FILTER_DECIDERS: dict[str, Callable[[Mapping[str, Any], Any], tuple[str, str] | None]] = {
    "occlusion": occlusion.decide, "speech": speech.decide, "sync": sync.decide}
STAGE_ORDER = ("face", "flow", "visibility", *FILTER_DECIDERS)
# Reasons that come from a threshold alone (others, like no_face, need the media to change).
THRESHOLD_REASONS = CORE_DECISIONS | {"hand_over_face", "no_speech", "out_of_sync", "av_offset", "sync_unverified"}


def decide_clip(metrics: Mapping[str, Any], config: BuildConfig) -> tuple[str, str, str] | None:
    """(stage, reason, detail) of the first threshold that rejects these metrics, else None."""
    verdict = decide_core(dict(metrics), config)
    if verdict is not None:
        return verdict
    for name, decide in FILTER_DECIDERS.items():
        prefix = f"{name}."
        own = {key[len(prefix):]: value for key, value in metrics.items() if key.startswith(prefix)}
        found = decide(own, getattr(config, name))
        if found is not None:
            return (name, *found)
    return None


def filter_threshold_fields() -> dict[str, tuple[str, ...]]:
    """Config fields of stages 8-10 that only decide (a change re-decides, it does not recompute)."""
    return {"occlusion": tuple(occlusion.THRESHOLD_METRICS), "speech": tuple(speech.THRESHOLD_METRICS),
            "sync": tuple(sync.THRESHOLD_METRICS)}
