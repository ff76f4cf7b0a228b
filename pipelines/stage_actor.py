"""Ray actor of model stages (`clips` rows of the stage table, in table order): weights load once, then clip by clip.

Rows carry a pickled `Clip`, which each stage of the actor sees in turn. Clips that an earlier stage
rejected pass through untouched; an error inside a stage marks that clip `failed` with the error, and
the build goes on.
"""

from __future__ import annotations

import pickle
import time
import traceback
from typing import Any

from vividhead.pipelines.records import Clip, StageResult
from vividhead.pipelines.stages import Stage


class ClipStageActor:
    """Callable class for `Dataset.map`: constructs and sets up its stages once."""

    def __init__(self, stages: list[tuple[Stage, Any]], weights: Any) -> None:
        """`stages`: (table row, its config section) in table order."""
        self.stages = [(stage.name, stage.model(stage_config, weights)) for stage, stage_config in stages]
        for _, model in self.stages:
            model.setup()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        clip: Clip = pickle.loads(row["clip"])
        for name, model in self.stages:
            if clip.status == "kept":
                run_stage(name, model, clip)
        return {**row, "clip": pickle.dumps(clip)}

    def __del__(self) -> None:
        for _, model in getattr(self, "stages", []):      # none when the constructor raised
            try:
                model.teardown()
            except Exception:  # noqa: BLE001 - teardown at interpreter exit must not raise
                pass


def run_stage(name: str, stage: Any, clip: Clip) -> None:
    """Apply one stage to a kept clip, turning an exception into a `failed` clip."""
    tick = time.perf_counter()
    try:
        result: StageResult = stage.process(clip)
    except Exception as err:  # noqa: BLE001 - one bad clip must not stop the build
        clip.timings[name] = time.perf_counter() - tick
        clip.status, clip.reject_stage, clip.reject_reason = "failed", name, "error"
        clip.reject_detail = f"{type(err).__name__}: {err} | {traceback.format_exc(limit=3)[-600:]}"
        return
    if not result.seconds:
        result.seconds = time.perf_counter() - tick
    clip.apply(name, result)
