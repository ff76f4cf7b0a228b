"""Committing the build's output, unit by unit: shard first, then the manifest part (the commit marker).

`Committer` runs on the driver: it gathers each unit's rows as they arrive from the Ray pipeline,
commits a unit as soon as its last clip is in (`commit_unit`), commits source-level rejections,
records units whose worker died as failed, and draws the progress bar. `OutputDir` names the
paths of an output directory. Resume (what a previous run committed) is `pipelines/resume.py`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vividhead.envfail import ENVIRONMENT_REASON, EnvironmentFailure
from vividhead.manifest import ATTRIBUTES, manifest_schema, rows_table, safe_text, write_atomic
from vividhead.pipelines.records import Clip, Source
from vividhead.pipelines.units import SourceRejection, WorkUnit, probe_metrics
from vividhead.shards import write_shard

STAGES_KEY = b"vividhead.stages_hash"              # Parquet metadata: the hash of the model stages' config


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

    @property
    def md5_cache(self) -> Path:
        return self.root / ".cache" / "md5.json"

    def shard(self, unit: str) -> Path:
        return self.shards / f"{unit}.tar"

    def part(self, unit: str) -> Path:
        return self.parts / f"{unit}.parquet"


# -------------------------------------------------------------------------------------------- rows


def _source_columns(source: Source) -> dict[str, Any]:
    given = dict(source.attributes)
    row: dict[str, Any] = {"source_id": safe_text(source.source_id), "dataset": source.dataset,
                           "uri": safe_text(source.uri), "md5": source.md5}
    for name in ATTRIBUTES:
        row[name] = given.get(name, "unknown")
        row[f"{name}_provenance"] = "given" if name in given else "unknown"
    return row


def clip_row(clip: Clip, unit: str, shard: str | None, hashes: dict[str, str]) -> dict[str, Any]:
    """The manifest row of one clip (kept, rejected, skipped or failed)."""
    row = _source_columns(clip.source)
    x, y, side = clip.crop_box if clip.crop_box else (None, None, None)
    row.update({
        "key": clip.key, "unit": unit, "status": clip.status, "reject_stage": clip.reject_stage,
        "reject_reason": clip.reject_reason, "reject_detail": safe_text(clip.reject_detail),
        "start": clip.start, "end": clip.end, "duration": clip.end - clip.start, "n_frames": clip.n_frames,
        "crop_x": x, "crop_y": y, "crop_side": side, "shard": shard if clip.status == "kept" else None,
        "timings": json.dumps({k: round(v, 4) for k, v in clip.timings.items()}, sort_keys=True), **hashes,
    })
    for name, attribute in clip.attributes.items():
        if name in ATTRIBUTES:
            row[name], row[f"{name}_provenance"] = attribute.value, attribute.provenance
    row.update(clip.metrics)
    return row


def source_row(rejection: SourceRejection, hashes: dict[str, str]) -> dict[str, Any]:
    """The manifest row of a source rejected, skipped or failed before segmentation."""
    row = _source_columns(rejection.source)
    metrics = probe_metrics(rejection.info) if rejection.info is not None else {}
    row.update({"key": None, "unit": rejection.unit_id, "status": rejection.status, "reject_stage": rejection.stage,
                "reject_reason": rejection.reason, "reject_detail": safe_text(rejection.detail), "timings": "{}",
                **hashes, **metrics})
    return row


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A manifest row as the shard's `json` member holds it (NaN -> null, timings as an object)."""
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


def write_part(out: OutputDir, unit: str, rows: list[dict[str, Any]], metric_types: dict[str, str],
               hashes: dict[str, str]) -> None:
    """Write a unit's manifest part atomically, with the model stages' hash in its metadata."""
    table = rows_table(rows, manifest_schema(metric_types))
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), STAGES_KEY: hashes.get("stages_hash", "")})
    write_atomic(table, out.part(unit))


def commit_unit(out: OutputDir, unit: str, rows: list[dict[str, Any]], clips: list[Clip],
                metric_types: dict[str, str], hashes: dict[str, str]) -> None:
    """Write the unit's shard (kept clips), then its manifest part (the commit marker)."""
    shard_name = out.shard(unit).name
    all_rows = list(rows)
    samples = []
    for clip in clips:
        row = clip_row(clip, unit, shard_name, hashes)
        all_rows.append(row)
        if clip.status == "kept":
            files = {"mp4": Path(clip.video_path).read_bytes(), "wav": Path(clip.wav_path).read_bytes(),
                     **clip.outputs, "json": json.dumps(jsonable(row), sort_keys=True).encode()}
            samples.append((clip.key, files))
    if samples:
        write_shard(out.shard(unit), samples)
    write_part(out, unit, all_rows, metric_types, hashes)
    shutil.rmtree(out.staging / unit, ignore_errors=True)


# --------------------------------------------------------------------------------------- committer


@dataclass
class Tally:
    """Rows committed by this run, for the progress bar."""

    kept: int = 0
    other: int = 0
    kept_hours: float = 0.0


class Committer:
    """Collects rows per unit on the driver and commits each complete unit; drives the progress bar."""

    def __init__(self, out: OutputDir, metric_types: dict[str, str], hashes: dict[str, str], done: set[str],
                 progress: bool) -> None:
        self.out, self.metric_types, self.hashes, self.done = out, metric_types, hashes, done
        self.pending: dict[str, list[Clip]] = {}
        self.progress = progress
        self.tally = Tally()
        self.bar: tqdm | None = None

    def reject(self, rejection: SourceRejection) -> None:
        """Commit a source rejected, skipped or failed before segmentation (one row)."""
        if rejection.unit_id in self.done:
            return
        if rejection.reason == ENVIRONMENT_REASON:
            raise EnvironmentFailure(rejection.detail)
        commit_unit(self.out, rejection.unit_id, [source_row(rejection, self.hashes)], [], self.metric_types,
                    self.hashes)
        self.done.add(rejection.unit_id)
        self._count(rejection.status == "kept", 0.0)

    def start(self, units: list[WorkUnit], sources: int) -> None:
        if self.progress:
            self.bar = tqdm(total=len(units), initial=sum(u.unit_id in self.done for u in units), unit="unit",
                            desc=f"build: {sources} sources", dynamic_ncols=True)

    def add(self, unit: str, rows: int, clip: Clip) -> None:
        """One clip of `unit` (which has `rows` in all) arrived; commit the unit when it is complete."""
        if clip.reject_reason == ENVIRONMENT_REASON:
            raise EnvironmentFailure(clip.reject_detail)
        clips = self.pending.setdefault(unit, [])
        clips.append(clip)
        if len(clips) == rows:
            self._commit(unit, self.pending.pop(unit))

    def finish_missing(self, units: list[WorkUnit], detail: str) -> None:
        """Units that never reported back (their worker died): failed rows, redone on resume."""
        for unit in units:
            if unit.unit_id in self.done:
                continue
            failed = Clip(key=f"{unit.unit_id}_failed", source=unit.source, start=unit.start, end=unit.end,
                          status="failed", reject_stage="extract", reject_reason="worker_died", reject_detail=detail)
            self._commit(unit.unit_id, [*self.pending.pop(unit.unit_id, []), failed])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _commit(self, unit: str, clips: list[Clip]) -> None:
        clips.sort(key=lambda c: c.start)
        commit_unit(self.out, unit, [], clips, self.metric_types, self.hashes)
        self.done.add(unit)
        for clip in clips:
            self._count(clip.status == "kept", (clip.end - clip.start) / 3600)
        if self.bar is not None:
            self.bar.update(1)

    def _count(self, kept: bool, hours: float) -> None:
        if kept:
            self.tally.kept += 1
            self.tally.kept_hours += hours
        else:
            self.tally.other += 1
        if self.bar is not None:
            self.bar.set_postfix(kept=self.tally.kept, rejected=self.tally.other,
                                 hours=f"{self.tally.kept_hours:.3f}", refresh=False)
