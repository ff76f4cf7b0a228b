"""The stage table: every curation stage of `vividhead build`, in the README's order, one row each.

A row gives the stage's name, its config model (the build config's section of the same name), its
metric names and types (manifest columns `<stage>.<metric>`), which config field is a threshold on
which metric, its pure `decide(metrics, config) -> (reason, detail) | None` over its own unprefixed
metrics, the reasons that rule gives, where it runs and its default Ray resources.

Everything else derives from this table: the build config (`pipelines/config.py`), the manifest
schema, the order of decisions at build time and on resume (`decide_clip`), the Ray calls and
their resources (`pipelines/build.py`), `inspect --what-if` and the inspect funnel.

Adding a stage: write its module (config model, metrics, `decide`, and a `ClipStage` subclass for a
stage over the staged clips) and add its row below. docs/build.md shows the table as a reader sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel

from vividhead.pipelines import face_track, motion, occlusion, remote, scenes, speech, sync, units, visibility
from vividhead.pipelines.annotate import AnnotateStage
from vividhead.pipelines.filter_config import (AnnotateConfig, FaceConfig, FlowConfig, NormalizeConfig,
                                               OcclusionConfig, SegmentConfig, SpeechConfig, SyncConfig,
                                               VisibilityConfig)
from vividhead.pipelines.occlusion import OcclusionStage
from vividhead.pipelines.records import ClipStage
from vividhead.pipelines.speech import SpeechStage
from vividhead.pipelines.sync import SyncStage

Decide = Callable[[Mapping[str, Any], Any], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Resources:
    """Ray resources of one task or actor. 0 means 0: a stage with `num_gpus=0` never takes a GPU."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0              # share of one GPU; ignored (0) on a cluster without GPUs
    concurrency: int | tuple[int, int] | None = None   # most tasks or actors (a pool: min, max); None: as fit


@dataclass(frozen=True)
class Threshold:
    """The metric a config field is compared with, and how (for plots): the value, |value| or 1 - value."""

    metric: str
    measure: Literal["value", "abs", "one_minus"] = "value"


@dataclass(frozen=True)
class Stage:
    """One row of the table."""

    number: int
    name: str
    runs: Literal["fetch", "decode", "clips"]   # in the fetch tasks (1-2), the decode pass (3-7) or an actor pool
    config: type[BaseModel] | None = None
    metrics: Mapping[str, str] = field(default_factory=dict)          # unprefixed name -> float|int|str|bool
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)  # config field -> the metric it decides on
    decide: Decide | None = None
    reasons: tuple[str, ...] = ()                                     # the reasons `decide` gives
    model: type[ClipStage] | None = None                              # runs == "clips": the stage over clips
    resources: Resources | None = None                                # runs == "clips": per actor


# The Ray calls that several stages share (overridable under `resources: {fetch: ..., decode: ...}`).
FETCH = Resources(num_cpus=1)          # stages 1-2: one task per source (download, MD5, probe)
DECODE = Resources(num_cpus=1)         # stages 3-7: one task per work unit (one decode, one encode)
COMMIT = Resources(num_cpus=0.25)      # after stage 11: each clip written as a segment (file I/O)
PACK = Resources(num_cpus=0.25)        # segments packed into a training-sized shard and its manifest part
# Metrics of the pass itself rather than of one stage.
PASS_METRICS: Mapping[str, str] = MappingProxyType({"extract.node": "str"})   # the Ray node that decoded the unit

STAGES: tuple[Stage, ...] = (
    Stage(1, "sources", "fetch", metrics=remote.METRICS),
    Stage(2, "probe", "fetch", metrics=units.METRICS),
    Stage(3, "segment", "decode", SegmentConfig, scenes.METRICS, {"min_seconds": Threshold("seconds")},
          scenes.decide, ("too_short",)),
    Stage(4, "normalize", "decode", NormalizeConfig),
    Stage(5, "face", "decode", FaceConfig, face_track.METRICS,
          {"max_upscale": Threshold("upscale")}, face_track.decide, ("resolution_too_low",)),
    Stage(6, "flow", "decode", FlowConfig, motion.METRICS, {"max_residual": Threshold("max_residual")},
          motion.decide, ("abrupt_transition",)),
    Stage(7, "visibility", "decode", VisibilityConfig, visibility.METRICS,
          {"max_missing_ratio": Threshold("face_ratio", "one_minus"),
           "max_second_face_ratio": Threshold("second_face_ratio")}, visibility.decide, ("face_missing", "second_face")),
    Stage(8, "occlusion", "clips", OcclusionConfig, OcclusionStage.metric_types,
          {"max_occluded_ratio": Threshold("occluded_ratio")}, occlusion.decide, ("hand_over_face",),
          OcclusionStage, Resources(num_cpus=0, num_gpus=0.25)),
    Stage(9, "speech", "clips", SpeechConfig, SpeechStage.metric_types,
          {"min_speech_ratio": Threshold("speech_ratio")}, speech.decide, ("no_speech",),
          SpeechStage, Resources(num_cpus=0, num_gpus=0)),          # silero-vad runs on the CPU
    Stage(10, "sync", "clips", SyncConfig, SyncStage.metric_types,
          {"min_confidence": Threshold("lse_c"), "max_abs_offset": Threshold("offset", "abs"),
           "keep_unsure": Threshold("verdict")},    # the weight-free check's own thresholds shape its verdict
          sync.decide, ("out_of_sync", "av_offset", "sync_unverified"), SyncStage,
          Resources(num_cpus=0, num_gpus=0.25)),
    Stage(11, "annotate", "clips", AnnotateConfig, AnnotateStage.metric_types,
          model=AnnotateStage, resources=Resources(num_cpus=0, num_gpus=0.25)),
)


def clip_stages(config: Any) -> list[Stage]:
    """The model stages (actor pools) in table order, minus those the config switches off."""
    return [stage for stage in STAGES
            if stage.runs == "clips" and getattr(getattr(config, stage.name, None), "enabled", True) is not False]


def mode(stage: Stage, config: Any, weights: Any) -> str:
    """How a model stage runs, as it reports it without loading a model: `weights`, `default`, `skipped`."""
    try:
        return stage.model(getattr(config, stage.name, None), weights).mode()
    except Exception as err:  # noqa: BLE001 - reported; the stage will fail its clips clearly
        return f"error: {type(err).__name__}: {err}"


def modes(config: Any, weights: Any) -> dict[str, str]:
    return {stage.name: mode(stage, config, weights) for stage in clip_stages(config)}


def stage_names() -> list[str]:
    return [stage.name for stage in STAGES]


def metric_types() -> dict[str, str]:
    """Every declared metric column, `<stage>.<metric>` -> type: the manifest's metric columns."""
    types = dict(PASS_METRICS)
    for stage in STAGES:
        types.update({f"{stage.name}.{metric}": kind for metric, kind in stage.metrics.items()})
    return types


def own_metrics(stage: Stage, row: Mapping[str, Any]) -> dict[str, Any]:
    """The stage's metrics in a manifest row or `Clip.metrics`, unprefixed, as `decide` reads them."""
    return {metric: row.get(f"{stage.name}.{metric}") for metric in stage.metrics}


def decide_clip(row: Mapping[str, Any], config: Any) -> tuple[str, str, str] | None:
    """(stage, reason, detail) of the first stage whose thresholds reject these stored metrics, else None."""
    for stage in STAGES:
        if stage.decide is None:
            continue
        found = stage.decide(own_metrics(stage, row), getattr(config, stage.name))
        if found is not None:
            return (stage.name, *found)
    return None


def decision_fields() -> dict[str, tuple[str, ...]]:
    """Config fields that only decide, per section: a change re-decides clips instead of recomputing them."""
    return {stage.name: tuple(stage.thresholds) for stage in STAGES if stage.thresholds}


def threshold_reasons() -> set[str]:
    """Reasons that come from a threshold alone (others, like no_face, need the media to change)."""
    return {reason for stage in STAGES for reason in stage.reasons}
