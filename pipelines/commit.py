"""The output directory: what a previous run committed, and committing one finished unit.

A unit is committed when `manifest/<unit>.parquet` exists; its shard `shards/<unit>.tar` (when it
kept clips) is renamed into place first. On resume, a shard without its manifest part is an orphan
of a killed run and is deleted; temporary files and staging folders are cleared; a unit whose part
was written under another content hash, or holds failed rows, is redone.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from vividhead.manifest import clip_row, manifest_schema, rows_table, write_atomic
from vividhead.pipelines.records import Clip
from vividhead.shards import write_shard


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
    orphans_removed: int = 0
    config_changed: bool = False
    previous_config_hash: str | None = None


def prepare(out: OutputDir, content_hash: str, config_hash: str) -> ResumeState:
    """Inspect and clean the output directory before a (re)run."""
    state = ResumeState()
    for folder in (out.shards, out.parts):
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink()
    if out.staging.exists():
        shutil.rmtree(out.staging)
    build_json = out.root / "build.json"
    if build_json.exists():
        try:
            state.previous_config_hash = json.loads(build_json.read_text()).get("config_hash")
        except (OSError, json.JSONDecodeError):
            state.previous_config_hash = None
    for part in sorted(out.parts.glob("*.parquet")):
        unit = part.stem
        table = pq.read_table(part, columns=["status", "content_hash", "config_hash"])
        statuses = set(table.column("status").to_pylist())
        contents = set(table.column("content_hash").to_pylist()) - {None}
        configs = set(table.column("config_hash").to_pylist())
        if configs - {config_hash}:
            state.config_changed = True
        reason = None
        if "failed" in statuses:
            reason = "failed before"
        elif contents - {content_hash}:
            reason = "the clip-defining config changed"
        elif configs - {config_hash}:
            reason = "a threshold or model changed"
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
    write_atomic(rows_table(all_rows, manifest_schema(metric_types)), out.part(unit))
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
