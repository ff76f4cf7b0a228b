"""What a build holds: counts and hours, the funnel, metric distributions and attribute balance.

`summarize` streams the manifest once (or the shards' `json` files when there is no manifest) and
returns a `Summary`, a plain JSON-ready structure. Each batch is reduced with Arrow group-bys, and
distributions keep a bounded sample, so memory does not grow with the number of clips.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vividhead.inspection.reader import (
    BATCH_ROWS, UNVERIFIED, Dataset, manifest_batches, manifest_schema, shard_rows,
)
from vividhead.inspection.stats import Distribution
from vividhead.pipelines.stages import stage_names

ATTRIBUTES = ("language", "gender", "age", "ethnicity")
PROVENANCES = ("given", "model", "unknown")
BASE_NUMERIC = ("duration", "crop_side")   # distributions besides the `<stage>.<metric>` columns
# The distributions a person reads first (text summary, top of the report), in this order, when present.
KEY_METRICS = ("duration", "crop_side", "face.side", "sync.lse_c", "sync.lse_d", "sync.offset", "sync.proxy_z",
               "sync.proxy_lag", "speech.speech_ratio", "occlusion.occluded_ratio", "visibility.face_ratio")
GROUP_COLUMNS = ("key", "status", "reject_stage", "reject_reason", "dataset", "source_id", "duration",
                 "shard") + ATTRIBUTES + tuple(f"{name}_provenance" for name in ATTRIBUTES)


@dataclass
class Tally:
    """A number of clips and their total duration."""

    clips: int = 0
    seconds: float = 0.0

    def add(self, clips: int, seconds: float) -> None:
        self.clips += int(clips)
        self.seconds += float(seconds or 0.0)

    def to_dict(self) -> dict[str, float | int]:
        return {"clips": self.clips, "hours": self.seconds / 3600.0}


@dataclass
class SourceTally:
    """Candidates and kept clips of one source."""

    dataset: str
    candidates: Tally = field(default_factory=Tally)
    kept: Tally = field(default_factory=Tally)


def is_metric_column(name: str) -> bool:
    """Raw stage metrics are named `<stage>.<metric>` (docs/FORMATS.md)."""
    return "." in name and not name.startswith(".")


def numeric_columns(schema: pa.Schema) -> list[str]:
    """Columns whose distribution is worth showing: duration, face size and every numeric metric,
    the KEY_METRICS first."""
    numeric = [item.name for item in schema
               if (pa.types.is_integer(item.type) or pa.types.is_floating(item.type) or pa.types.is_boolean(item.type))
               and (item.name in BASE_NUMERIC or is_metric_column(item.name))]
    return [name for name in KEY_METRICS if name in numeric] + [name for name in numeric if name not in KEY_METRICS]


def stage_order(stages: Iterable[str], schema_names: Iterable[str] = (),
                declared: Iterable[str] = ()) -> list[str]:
    """Order stage names as the pipeline runs them: as the build's build.json lists them, else as the stage
    table does; stages neither names (such as `extract` for a failed decode) follow in schema order."""
    reference = list(declared) or stage_names()
    for name in schema_names:
        stage = name.split(".", 1)[0] if is_metric_column(name) else None
        if stage and stage not in reference:
            reference.append(stage)
    rank = {stage: index for index, stage in enumerate(reference)}
    return sorted(set(stages), key=lambda stage: (rank.get(stage, len(rank)), stage))


def declared_stages(build_infos: list[dict[str, Any]]) -> list[str]:
    """The stage order a build wrote to its build.json (`stages`, the stage table's names), if any."""
    for info in build_infos:
        stages = info.get("stages")
        if isinstance(stages, list) and all(isinstance(stage, str) for stage in stages):
            return stages
    return []


def age_bucket(value: str) -> str:
    """Numeric ages become decades ("30-39"); labels such as "adult" stay as they are."""
    try:
        age = float(value)
    except (TypeError, ValueError):
        return value
    if not math.isfinite(age) or age < 0:
        return "unknown"
    decade = int(age // 10) * 10
    return f"{decade}-{decade + 9}"


def _strings(batch: pa.RecordBatch, name: str) -> pa.Array:
    column = batch.column(name)
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


class Summarizer:
    """Accumulates the summary over manifest batches."""

    def __init__(self, numeric: list[str], flags: list[str] = ()) -> None:
        self.numeric = numeric
        self.flags = list(flags)                      # boolean columns read besides the numeric ones
        self.unverified = Tally()
        self.outcomes: dict[tuple[str, str | None, str | None], Tally] = defaultdict(Tally)
        self.sources: dict[tuple[str, str], SourceTally] = {}
        self.attributes: dict[str, dict[tuple[str, str], Tally]] = {name: defaultdict(Tally) for name in ATTRIBUTES}
        self.kept_dists = {name: Distribution() for name in numeric}
        self.other_dists = {name: Distribution() for name in numeric}
        self.unknown_duration = 0

    def columns(self) -> list[str]:
        return list(dict.fromkeys(GROUP_COLUMNS + tuple(self.numeric) + tuple(self.flags)))

    def update(self, batch: pa.RecordBatch, priorities: np.ndarray) -> None:
        status = pc.fill_null(_strings(batch, "status"), "unknown")
        duration = batch.column("duration")
        duration = pc.cast(duration, pa.float64()) if not pa.types.is_floating(duration.type) else duration
        self.unknown_duration += duration.null_count
        seconds = pc.fill_null(duration, 0.0)
        kept = pc.equal(status, "kept")
        table = pa.table({
            "status": status,
            "stage": _strings(batch, "reject_stage"),
            "reason": _strings(batch, "reject_reason"),
            "dataset": pc.fill_null(_strings(batch, "dataset"), "default"),
            "source": pc.fill_null(_strings(batch, "source_id"), "(unknown source)"),
            "seconds": seconds,
            "kept_n": pc.cast(kept, pa.int64()),
            "kept_seconds": pc.if_else(kept, seconds, 0.0),
        })
        self._tally_outcomes(table)
        self._tally_sources(table)
        if UNVERIFIED in self.flags:
            unverified = pc.and_(kept, pc.equal(pc.fill_null(batch.column(UNVERIFIED), True), False))
            self.unverified.add(int(pc.sum(pc.cast(unverified, pa.int64())).as_py() or 0),
                                float(pc.sum(pc.if_else(unverified, seconds, 0.0)).as_py() or 0.0))
        self._tally_attributes(batch, kept, seconds)
        kept_mask = kept.to_numpy(zero_copy_only=False)
        for name in self.numeric:
            values = pc.cast(batch.column(name), pa.float64()).to_numpy(zero_copy_only=False)
            self.kept_dists[name].update(values[kept_mask], priorities[kept_mask])
            self.other_dists[name].update(values[~kept_mask], priorities[~kept_mask])

    def _tally_outcomes(self, table: pa.Table) -> None:
        grouped = table.group_by(["status", "stage", "reason"], use_threads=False).aggregate(
            [("seconds", "sum"), ([], "count_all")])
        for row in grouped.to_pylist():
            self.outcomes[(row["status"], row["stage"], row["reason"])].add(row["count_all"], row["seconds_sum"])

    def _tally_sources(self, table: pa.Table) -> None:
        grouped = table.group_by(["dataset", "source"], use_threads=False).aggregate(
            [("seconds", "sum"), ([], "count_all"), ("kept_n", "sum"), ("kept_seconds", "sum")])
        for row in grouped.to_pylist():
            tally = self.sources.setdefault((row["dataset"], row["source"]), SourceTally(row["dataset"]))
            tally.candidates.add(row["count_all"], row["seconds_sum"])
            tally.kept.add(row["kept_n_sum"], row["kept_seconds_sum"])

    def _tally_attributes(self, batch: pa.RecordBatch, kept: pa.Array, seconds: pa.Array) -> None:
        for name in ATTRIBUTES:
            table = pa.table({
                "value": pc.fill_null(_strings(batch, name), "unknown"),
                "provenance": pc.fill_null(_strings(batch, f"{name}_provenance"), "unknown"),
                "seconds": seconds,
            }).filter(kept)
            grouped = table.group_by(["value", "provenance"], use_threads=False).aggregate(
                [("seconds", "sum"), ([], "count_all")])
            for row in grouped.to_pylist():
                value = age_bucket(row["value"]) if name == "age" else row["value"]
                self.attributes[name][(value, row["provenance"])].add(row["count_all"], row["seconds_sum"])

    def result(self, stages_declared: list[str], schema_names: list[str]) -> dict[str, Any]:
        kept, statuses = Tally(), defaultdict(Tally)
        losses: dict[str, dict[str, Tally]] = defaultdict(lambda: defaultdict(Tally))
        candidates = Tally()
        for (status, stage, reason), tally in self.outcomes.items():
            candidates.add(tally.clips, tally.seconds)
            statuses[status].add(tally.clips, tally.seconds)
            if status == "kept":
                kept.add(tally.clips, tally.seconds)
                continue
            label = reason or "(no reason)"
            if status != "rejected":
                label = f"{status}: {label}"
            losses[stage or "(no stage)"][label].add(tally.clips, tally.seconds)
        steps, remaining = [], Tally(candidates.clips, candidates.seconds)
        for stage in stage_order(losses, schema_names, stages_declared):
            lost = Tally()
            for tally in losses[stage].values():
                lost.add(tally.clips, tally.seconds)
            remaining = Tally(remaining.clips - lost.clips, remaining.seconds - lost.seconds)
            reasons = sorted(losses[stage].items(), key=lambda pair: -pair[1].clips)
            steps.append({"stage": stage, **lost.to_dict(),
                          "reasons": {reason: tally.to_dict() for reason, tally in reasons},
                          "remaining": remaining.to_dict()})
        datasets: dict[str, dict[str, Tally]] = defaultdict(lambda: {"candidates": Tally(), "kept": Tally()})
        for tally in self.sources.values():
            datasets[tally.dataset]["candidates"].add(tally.candidates.clips, tally.candidates.seconds)
            datasets[tally.dataset]["kept"].add(tally.kept.clips, tally.kept.seconds)
        sources = sorted(self.sources.items(), key=lambda pair: (-pair[1].kept.seconds, pair[0]))
        return {
            "kept": kept.to_dict(),
            "candidates": candidates.to_dict(),
            "statuses": {status: tally.to_dict() for status, tally in sorted(statuses.items())},
            "rows_without_duration": self.unknown_duration,
            "funnel": {"candidates": candidates.to_dict(), "stages": steps, "kept": kept.to_dict(),
                       "kept_sync_unverified": self.unverified.to_dict()},
            "datasets": {name: {part: tally.to_dict() for part, tally in parts.items()}
                         for name, parts in sorted(datasets.items())},
            "sources": [{"source_id": source, "dataset": dataset, "candidates": tally.candidates.to_dict(),
                         "kept": tally.kept.to_dict()} for (dataset, source), tally in sources],
            "distributions": {name: {"kept": self.kept_dists[name].to_dict(),
                                     "rejected": self.other_dists[name].to_dict()} for name in self.numeric},
            "attributes": self._attribute_result(),
        }

    def _attribute_result(self) -> dict[str, Any]:
        result = {}
        for name, table in self.attributes.items():
            values: dict[str, dict[str, Any]] = {}
            for (value, provenance), tally in table.items():
                entry = values.setdefault(value, {"clips": 0, "hours": 0.0, "provenance": {}})
                entry["clips"] += tally.clips
                entry["hours"] += tally.seconds / 3600.0
                entry["provenance"][provenance] = entry["provenance"].get(provenance, 0) + tally.clips
            result[name] = dict(sorted(values.items(), key=lambda pair: -pair[1]["clips"]))
        return result


@dataclass
class Scan:
    """The result of one pass: the summary, and the Summarizer holding its samples (for plots)."""

    summary: dict[str, Any]
    summarizer: Summarizer


def row_batches(dataset: Dataset, columns: list[str], batch_rows: int = BATCH_ROWS) -> Iterable[pa.RecordBatch]:
    """Manifest batches with `columns`, or rows rebuilt from the shards when there is no manifest."""
    if dataset.has_manifest:
        yield from manifest_batches(dataset, columns, batch_rows)
        return
    for batch in shard_rows(dataset):
        arrays = [batch.column(name) if name in batch.schema.names else pa.nulls(batch.num_rows)
                  for name in columns]
        yield pa.RecordBatch.from_arrays(arrays, names=columns)


def row_schema(dataset: Dataset) -> pa.Schema:
    """The manifest's schema, or the schema of the shards' json rows (first batch) without one."""
    if dataset.has_manifest:
        return manifest_schema(dataset)
    for batch in shard_rows(dataset):
        return batch.schema
    return pa.schema([])


def summarize(dataset: Dataset, observers: Iterable[Any] = (), seed: int = 0, batch_rows: int = BATCH_ROWS) -> Scan:
    """One streaming pass over the rows; `observers` (with `columns()` and `update(batch, priorities)`)
    see the same batches, so the report's example picking needs no second pass."""
    schema = row_schema(dataset)
    summarizer = Summarizer(numeric_columns(schema), [UNVERIFIED] if UNVERIFIED in schema.names else [])
    observers = list(observers)
    columns = list(dict.fromkeys(summarizer.columns() + [name for obs in observers for name in obs.columns()]))
    rng = np.random.default_rng(seed)
    for batch in row_batches(dataset, columns, batch_rows):
        priorities = rng.random(batch.num_rows)
        summarizer.update(batch, priorities)
        for observer in observers:
            observer.update(batch, priorities)
    infos = dataset.build_info()
    summary = {
        "inputs": [str(path) for path in dataset.roots] or [str(path) for path in dataset.manifests + dataset.shards],
        "source_of_rows": "manifest" if dataset.has_manifest else "shards (no manifest: kept clips only)",
        "manifest_files": len(dataset.manifests),
        "shard_files": len(dataset.shards),
        "builds": [{**{name: info.get(name) for name in ("version", "config_hash", "finished") if name in info},
                    "stage_modes": (info.get("this_run") or {}).get("stage_modes") or {}} for info in infos],
        **summarizer.result(declared_stages(infos), schema.names),
    }
    return Scan(summary, summarizer)
