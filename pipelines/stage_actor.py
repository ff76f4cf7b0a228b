"""Ray actor of one model stage (a `clips` row of the stage table): weights load once, then clip by clip.

Rows carry a pickled `Clip`. Clips that an earlier stage rejected pass through untouched; an error
inside a stage marks that clip `failed` with the error, and the build goes on.
"""

from __future__ import annotations

import pickle
import time
import traceback
from typing import Any

from vividhead.pipelines.records import Clip, StageResult
from vividhead.pipelines.stages import Stage


class ClipStageActor:
    """Callable class for `Dataset.map`: constructs and sets up the stage once."""

    def __init__(self, stage: Stage, stage_config: Any, weights: Any) -> None:
        self.name = stage.name
        self.stage = stage.model(stage_config, weights)
        self.stage.setup()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        clip: Clip = pickle.loads(row["clip"])
        if clip.status == "kept":
            run_stage(self.name, self.stage, clip)
        return {**row, "clip": pickle.dumps(clip)}

    def __del__(self) -> None:
        try:
            self.stage.teardown()
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
