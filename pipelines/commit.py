"""The output directory: what a previous run committed, and committing one finished unit.

A unit is committed when `manifest/<unit>.parquet` exists; its shard `shards/<unit>.tar` (when it
kept clips) is renamed into place first. On resume, a shard without its manifest part is an orphan
of a killed run and is deleted; temporary files and staging folders are cleared; a unit whose part
was written under another content hash, or holds failed rows, is redone. When only thresholds of
stages 5-10 changed, its clips are re-decided from their stored metrics without decoding.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from vividhead.config import BuildConfig
from vividhead.manifest import clip_row, manifest_schema, rows_table, write_atomic
from vividhead.pipelines.decisions import STAGE_ORDER, THRESHOLD_REASONS, decide_clip
from vividhead.pipelines.records import Clip
from vividhead.shards import iter_samples, write_shard

STAGES_KEY = b"vividhead.stages_hash"              # Parquet metadata: the hash of stages 8-11's config


@dataclass
class OutputDir:
    """Paths of a build's output directory."""

    root: Path

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def parts(self) -> Path:
        return self.root / "manifest"

    @property
    def staging(self) -> Path:
        return self.root / ".staging"

    @property
    def downloads(self) -> Path:
        return self.root / ".downloads"

    def shard(self, unit: str) -> Path:
        return self.shards / f"{unit}.tar"

    def part(self, unit: str) -> Path:
        return self.parts / f"{unit}.parquet"


@dataclass
class ResumeState:
    """Units already committed, and what the start-up clean-up did."""

    done: set[str] = field(default_factory=set)
    redo: dict[str, str] = field(default_factory=dict)       # unit -> why it is redone
    redecided: set[str] = field(default_factory=set)        # re-decided from stored metrics, no decode
    orphans_removed: int = 0
    config_changed: bool = False


def prepare(out: OutputDir, config: BuildConfig, hashes: dict[str, str], metric_types: dict[str, str]) -> ResumeState:
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
        table = pq.read_table(part, columns=["status", "content_hash", "config_hash"])
        statuses = set(table.column("status").to_pylist())
        contents = set(table.column("content_hash").to_pylist()) - {None}
        configs = set(table.column("config_hash").to_pylist())
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


def redecide(out: OutputDir, unit: str, config: BuildConfig, hashes: dict[str, str],
             metric_types: dict[str, str]) -> str | None:
    """Re-decide a unit's clips from their stored metrics under new stage 5-10 thresholds.

    Clips that now fail leave the shard; the part is rewritten. Returns why the unit must be
    decoded again instead (a clip rejected before would now pass, or a source-level row), else None.
    """
    rows = pq.read_table(out.part(unit)).to_pylist()
    removed: set[str] = set()
    for row in rows:
        if row["key"] is None:
            return "a source-level decision may change"
        stage = row["reject_stage"] if row["status"] == "rejected" else None
        if row["status"] != "kept" and stage not in STAGE_ORDER:
            continue                                     # decided before any threshold (or failed)
        new = decide_clip(row, config)
        if stage is not None and row["reject_reason"] in THRESHOLD_REASONS and (
                new is None or STAGE_ORDER.index(new[0]) > STAGE_ORDER.index(stage)):
            return "a clip rejected before now passes its thresholds"
        if new is None or (stage is not None and STAGE_ORDER.index(new[0]) > STAGE_ORDER.index(stage)):
            continue                                     # its decision stands
        if row["status"] == "kept":
            removed.add(row["key"])
        row.update(status="rejected", reject_stage=new[0], reject_reason=new[1], reject_detail=new[2], shard=None)
    for row in rows:
        row.update(config_hash=hashes["config_hash"], stages_hash=hashes["stages_hash"])
    by_key = {row["key"]: row for row in rows}
    shard = out.shard(unit)
    if shard.exists():
        samples = [(s.key, {**s.files, "json": json.dumps(_jsonable(by_key[s.key]), sort_keys=True).encode()})
                   for s in iter_samples(shard) if s.key not in removed]
        if samples:
            write_shard(shard, samples)
        else:
            shard.unlink()
    _write_part(out, unit, rows, metric_types, hashes)
    return None


def _write_part(out: OutputDir, unit: str, rows: list[dict[str, Any]], metric_types: dict[str, str],
                hashes: dict[str, str]) -> None:
    table = rows_table(rows, manifest_schema(metric_types))
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), STAGES_KEY: hashes.get("stages_hash", "")})
    write_atomic(table, out.part(unit))


def commit_unit(out: OutputDir, unit: str, rows: list[dict[str, Any]], clips: list[Clip],
                metric_types: dict[str, str], hashes: dict[str, str]) -> None:
    """Write the unit's shard (kept clips), then its manifest part (the commit marker)."""
    kept = [clip for clip in clips if clip.status == "kept"]
    shard_name = out.shard(unit).name
    all_rows = list(rows)
    samples = []
    for clip in clips:
        row = clip_row(clip, unit, shard_name, hashes)
        all_rows.append(row)
        if clip.status == "kept":
            files = {"mp4": Path(clip.video_path).read_bytes(), "wav": Path(clip.wav_path).read_bytes(),
                     **clip.outputs, "json": json.dumps(_jsonable(row), sort_keys=True).encode()}
            samples.append((clip.key, files))
    if kept:
        write_shard(out.shard(unit), samples)
    _write_part(out, unit, all_rows, metric_types, hashes)
    shutil.rmtree(out.staging / unit, ignore_errors=True)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, float) and value != value:
            value = None
        elif hasattr(value, "item"):
            value = value.item()
        out[key] = value
    if isinstance(out.get("timings"), str):
        out["timings"] = json.loads(out["timings"])
    return out
