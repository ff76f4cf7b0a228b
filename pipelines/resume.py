"""Resume: what a previous run committed in an output directory, and what a config change re-decides.

A unit is committed when `manifest/<unit>.parquet` exists. Before a (re)run, `prepare` deletes
temporary files, staging folders and orphan shards (a shard without its part, from a killed run),
and sorts the committed units: kept as they are, re-decided from their stored metrics when only
thresholds changed (the stage table's threshold fields), or redone when they hold failed rows, when
the clip-defining config (content hash) changed, or when a model stage's other settings or weights
changed (stages hash).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from vividhead.pipelines import stages as table
from vividhead.pipelines.commit import STAGES_KEY, OutputDir, jsonable, write_part
from vividhead.shards import iter_samples, write_shard


@dataclass
class ResumeState:
    """Units already committed, and what the start-up clean-up did."""

    done: set[str] = field(default_factory=set)
    redo: dict[str, str] = field(default_factory=dict)       # unit -> why it is redone
    redecided: set[str] = field(default_factory=set)        # re-decided from stored metrics, no decode
    orphans_removed: int = 0
    config_changed: bool = False


def prepare(out: OutputDir, config: Any, hashes: dict[str, str], metric_types: dict[str, str]) -> ResumeState:
    """Inspect and clean the output directory before a (re)run; re-decide what a threshold change allows."""
    state = ResumeState()
    for folder in (out.shards, out.parts):
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink()
    if out.staging.exists():
        shutil.rmtree(out.staging)
    for part in sorted(out.parts.glob("*.parquet")):
        unit = part.stem
        found = pq.read_table(part, columns=["status", "content_hash", "config_hash"])
        statuses = set(found.column("status").to_pylist())
        contents = set(found.column("content_hash").to_pylist()) - {None}
        configs = set(found.column("config_hash").to_pylist())
        stored = (pq.read_schema(part).metadata or {}).get(STAGES_KEY, b"").decode()
        if configs - {hashes["config_hash"]}:
            state.config_changed = True
        reason = None
        if "failed" in statuses:
            reason = "failed before"
        elif contents - {hashes["content_hash"]}:
            reason = "the clip-defining config changed"
        elif configs - {hashes["config_hash"]}:
            if stored != hashes["stages_hash"]:
                reason = "a model stage's config or weights changed"
            else:
                reason = redecide(out, unit, config, hashes, metric_types)
                if reason is None:
                    state.redecided.add(unit)
        if reason:
            state.redo[unit] = reason
            part.unlink()
            out.shard(unit).unlink(missing_ok=True)
        else:
            state.done.add(unit)
    for shard in sorted(out.shards.glob("*.tar")):
        if shard.stem not in state.done:
            shard.unlink()
            state.orphans_removed += 1
    return state


def redecide(out: OutputDir, unit: str, config: Any, hashes: dict[str, str],
             metric_types: dict[str, str]) -> str | None:
    """Re-decide a unit's clips from their stored metrics under new thresholds, in table order.

    Clips that now fail leave the shard; the part is rewritten. Returns why the unit must be
    decoded again instead (a clip rejected before would now pass, or a source-level row), else None.
    """
    order = [stage.name for stage in table.STAGES if stage.decide is not None]
    by_threshold = table.threshold_reasons()
    rows = pq.read_table(out.part(unit)).to_pylist()
    removed: set[str] = set()
    for row in rows:
        if row["key"] is None:
            return "a source-level decision may change"
        stage = row["reject_stage"] if row["status"] == "rejected" else None
        if row["status"] != "kept" and stage not in order:
            continue                                     # decided before any threshold (or failed)
        new = table.decide_clip(row, config)
        later = stage is not None and (new is None or order.index(new[0]) > order.index(stage))
        if later and row["reject_reason"] in by_threshold:
            return "a clip rejected before now passes its thresholds"
        if new is None or later:
            continue                                     # its decision stands
        if row["status"] == "kept":
            removed.add(row["key"])
        row.update(status="rejected", reject_stage=new[0], reject_reason=new[1], reject_detail=new[2], shard=None)
    for row in rows:
        row.update(config_hash=hashes["config_hash"], stages_hash=hashes["stages_hash"])
    by_key = {row["key"]: row for row in rows}
    shard = out.shard(unit)
    if shard.exists():
        samples = [(s.key, {**s.files, "json": json.dumps(jsonable(by_key[s.key]), sort_keys=True).encode()})
                   for s in iter_samples(shard) if s.key not in removed]
        if samples:
            write_shard(shard, samples)
        else:
            shard.unlink()
    write_part(out, unit, rows, metric_types, hashes)
    return None
