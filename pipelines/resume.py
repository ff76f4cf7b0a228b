"""Resume: what earlier runs committed in an output directory, and what a config change re-decides.

A clip is committed once its segment exists (`pipelines/segments.py`) or its row is in a manifest
part. Before a (re)run, `prepare`:
- deletes temporary files and staging folders, finishes or undoes interrupted packs, and deletes
  orphan shards (a shard without its part);
- reads what the parts hold through the ledger, `.cache/ledger.parquet`: a narrow copy of the
  parts' rows (unit, key, status, piece bounds, hashes) with each part's size and mtime, so a
  re-run reads only the parts written since the last one;
- rewrites the parts whose rows need it: rows of another clip-defining config (content hash) or
  model-stage config (stages hash) are dropped with their shard, failed rows are dropped, and when
  only thresholds changed (the stage table's threshold fields) each row is re-decided from its
  stored metrics; a kept clip that now fails leaves its shard, a rejected clip that would now pass
  is dropped so that its piece is made again;
- gives each unit its resume point (`units.resume_point`): units with every piece committed are
  done, the others restart where their committed pieces stop.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vividhead.buildlock import LOCK_NAME
from vividhead.manifest import read_schema, read_table, write_atomic
from vividhead.pipelines import stages as table
from vividhead.pipelines.output import OutputDir, pack_number
from vividhead.pipelines.records import STATUSES
from vividhead.pipelines.rows import STAGES_KEY, row_problem, sample_json, write_part
from vividhead.pipelines.segments import Segment, read_segment_rows, recover
from vividhead.pipelines.units import ResumePoint, WorkUnit, resume_point
from vividhead.shards import iter_samples, write_shard
from vividhead.storage import Location, stamp

PIECE_COLUMNS = ("key", "unit", "status", "start", "end", "segment.piece_start", "segment.end_reason")
LEDGER_COLUMNS = (*PIECE_COLUMNS, "config_hash", "content_hash")
STAMPS_KEY = b"vividhead.part_stamps"             # ledger metadata: part name -> [size, mtime_ns]


@dataclass
class ResumeState:
    """What earlier runs committed, and what the start-up clean-up did."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)   # unit -> its committed pieces
    pending: list[Segment] = field(default_factory=list)                  # committed, not yet packed
    next_number: int = 0                                                  # of the next shard
    redo: dict[str, str] = field(default_factory=dict)                    # unit -> why some of it is made again
    redecided: set[str] = field(default_factory=set)                      # units re-decided from stored metrics
    dropped: dict[str, str] = field(default_factory=dict)                 # file it could not read -> why
    orphans_removed: int = 0
    config_changed: bool = False

    def point(self, unit: WorkUnit, fps: int) -> ResumePoint:
        """Where `unit` stands: complete, to continue from a piece boundary, or to make from its start."""
        return resume_point(unit, self.rows.get(unit.unit_id, []), fps)


def prepare(out: OutputDir, config: Any, hashes: dict[str, str], metric_types: dict[str, str]) -> ResumeState:
    """Inspect and clean the output directory before a (re)run; re-decide what a threshold change allows."""
    state = ResumeState()
    for folder in (out.shards, out.parts, out.segments):
        folder.mkdir(parents=True, exist_ok=True)
    for tmp in _temporary_files(out):
        tmp.unlink(missing_ok=True)
    if out.staging.exists():
        shutil.rmtree(out.staging)
    state.orphans_removed = recover(out)
    parts = {p.stem for p in out.parts.glob("*.parquet")}
    for shard in out.shards.glob("*.tar"):
        if shard.stem not in parts:
            shard.unlink()
            state.orphans_removed += 1
    numbers = [pack_number(name) for name in parts]
    state.next_number = max([n for n in numbers if n is not None], default=-1) + 1

    ledger = _ledger(out, state)
    unreadable = _unreadable_rows(ledger)
    stale = pc.fill_null(pc.not_equal(ledger.column("config_hash"), hashes["config_hash"]), False)
    state.config_changed = pc.any(stale).as_py() or False
    redo = pc.or_(pc.or_(stale, unreadable), pc.fill_null(pc.equal(ledger.column("status"), "failed"), False))
    for name in pc.unique(ledger.filter(redo).column("part")).to_pylist():
        _rewrite(out, name, config, hashes, metric_types, state)
    if state.redo or state.redecided or state.dropped:
        ledger = _ledger(out, state)
    packed = set(pc.coalesce(ledger.column("key"), ledger.column("unit")).to_pylist())
    segments = _pending_segments(out, hashes, state, packed)

    columns = [ledger.column(c).to_pylist() for c in PIECE_COLUMNS]
    by_unit: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for values in zip(*columns):
        row = dict(zip(PIECE_COLUMNS, values))
        by_unit[row["unit"]].append(row)
    for row in segments:
        by_unit[row["unit"]].append({c: row[c] for c in PIECE_COLUMNS})
    state.rows = dict(by_unit)
    return state


def _temporary_files(out: OutputDir) -> list[Path]:
    """What a killed run can leave half-written: `.NAME.tmp` files (shards, parts, segments, the ledger,
    build.json, manifest.parquet) and partial downloads. The lock's own temporary files are the lock's.
    A bucket holds no temporary objects: every object is put whole."""
    if out.remote:
        return list(out.downloads.glob(".*.part"))
    found = [path for folder in (out.shards, out.parts, out.segments, out.ledger.parent)
             for path in folder.rglob(".*.tmp")]
    found += [path for path in out.root.glob(".*.tmp") if not path.name.startswith(LOCK_NAME)]
    return found + list(out.downloads.glob(".*.part"))


# ------------------------------------------------------------------------------------------- ledger
LEDGER_SCHEMA = pa.schema([("part", pa.string()), *[(c, pa.float64() if c in ("start", "end", "segment.piece_start")
                                                     else pa.string()) for c in LEDGER_COLUMNS]])


def _stamp(path: Location) -> list[Any]:
    return stamp(path)


def _ledger(out: OutputDir, state: ResumeState) -> pa.Table:
    """The narrow rows of every part: from the ledger, and for parts new or changed since, from the parts.

    The ledger is a cache: when it cannot be read it is rebuilt from the parts. A part that cannot be
    read is dropped with its shard (its units are made again)."""
    stamps = {part.stem: _stamp(part) for part in out.parts.glob("*.parquet")}
    known: dict[str, list[int]] = {}
    tables = []
    cached = _read_ledger(out, state)
    if cached is not None:
        known = json.loads((cached.schema.metadata or {}).get(STAMPS_KEY, b"{}"))
        still = [name for name, stamp in known.items() if stamps.get(name) == stamp]
        tables.append(cached.filter(pc.is_in(cached.column("part"), pa.array(still, pa.string()))))
    fresh = sorted(name for name, stamp in stamps.items() if known.get(name) != stamp)
    for name in fresh:
        try:
            tables.append(_part_ledger(out, name))
        except (pa.ArrowException, OSError, ValueError) as err:
            _drop(out, out.part(name), f"unreadable manifest part ({type(err).__name__}: {err})", state,
                  "its shard is deleted and its clips are made again")
            out.shard(name).unlink(missing_ok=True)
            del stamps[name]
    ledger = pa.concat_tables([t.replace_schema_metadata(None) for t in tables] or [LEDGER_SCHEMA.empty_table()])
    if fresh or set(known) != set(stamps):
        write_atomic(ledger.replace_schema_metadata({STAMPS_KEY: json.dumps(stamps)}), out.ledger)
    return ledger


def _read_ledger(out: OutputDir, state: ResumeState) -> pa.Table | None:
    """The ledger as the last run left it; None when there is none or it cannot be read (then it is rebuilt)."""
    if not out.ledger.exists():
        return None
    try:
        cached = read_table(out.ledger)
        json.loads((cached.schema.metadata or {}).get(STAMPS_KEY, b"{}"))
        if not cached.schema.remove_metadata().equals(LEDGER_SCHEMA):
            raise ValueError("its columns are not the ledger's")
        return cached
    except (pa.ArrowException, OSError, ValueError) as err:
        _drop(out, out.ledger, f"unreadable ledger ({type(err).__name__}: {err})", state, "it is rebuilt from the parts")
        return None


def _part_ledger(out: OutputDir, name: str) -> pa.Table:
    """The ledger rows of one part."""
    part = read_table(out.part(name), columns=[c for c in LEDGER_COLUMNS if c in read_schema(out.part(name)).names])
    columns = {"part": pa.array([name] * part.num_rows, pa.string())}
    for column in LEDGER_COLUMNS:
        kind = LEDGER_SCHEMA.field(column).type
        columns[column] = (part.column(column).cast(kind) if column in part.column_names
                           else pa.nulls(part.num_rows, kind))
    return pa.table(columns, schema=LEDGER_SCHEMA)


def _unreadable_rows(ledger: pa.Table) -> pa.ChunkedArray:
    """True for each ledger row that resume cannot use (no unit, status or config hash; kept without a key)."""
    bad = pc.or_(pc.is_null(ledger.column("unit")), pc.is_null(ledger.column("config_hash")))
    bad = pc.or_(bad, pc.invert(pc.fill_null(pc.is_in(ledger.column("status"), pa.array(STATUSES)), False)))
    return pc.fill_null(pc.or_(bad, pc.and_(pc.equal(ledger.column("status"), "kept"),
                                            pc.is_null(ledger.column("key")))), True)


# ------------------------------------------------------------------------------------------ rewrite
def _rewrite(out: OutputDir, name: str, config: Any, hashes: dict[str, str], metric_types: dict[str, str],
             state: ResumeState) -> None:
    """Drop, re-decide or keep each row of one part; rewrite its shard (first) and the part (the commit)."""
    rows = read_table(out.part(name)).to_pylist()
    stored = (read_schema(out.part(name)).metadata or {}).get(STAGES_KEY, b"").decode()
    kept_before = {row["key"] for row in rows if row["status"] == "kept"}
    unreadable = {index: why for index, row in enumerate(rows) if (why := row_problem(row)) is not None}
    for index, why in unreadable.items():
        _note(state, f"{out.part(name).relative_to(out.root)} row {index}", why, "its clip is made again")
        if isinstance(rows[index].get("unit"), str):
            state.redo[rows[index]["unit"]] = f"its committed row was unreadable: {why}"
    rows = [row for index, row in enumerate(rows) if index not in unreadable]
    if stored != hashes["stages_hash"] or any(
            row["content_hash"] not in (None, hashes["content_hash"]) for row in rows):
        why = ("the clip-defining config changed" if stored == hashes["stages_hash"]
               else "a model stage's config or weights changed")
        state.redo.update({row["unit"]: why for row in rows})
        out.shard(name).unlink(missing_ok=True)
        out.part(name).unlink()
        return
    survivors = []
    for row in rows:
        why = "failed before" if row["status"] == "failed" else (
            None if row["config_hash"] == hashes["config_hash"] else _redecide(row, config))
        if why is not None:
            state.redo[row["unit"]] = why
            continue
        if row["config_hash"] != hashes["config_hash"]:
            state.redecided.add(row["unit"])
        row.update(config_hash=hashes["config_hash"], stages_hash=hashes["stages_hash"])
        survivors.append(row)
    kept_now = {row["key"] for row in survivors if row["status"] == "kept"}
    if (kept_now != kept_before or unreadable) and out.shard(name).exists():
        by_key = {row["key"]: row for row in survivors}
        samples = [(s.key, {**s.files, "json": sample_json(by_key[s.key])})
                   for s in iter_samples(out.shard(name)) if s.key in kept_now]
        if samples:
            write_shard(out.shard(name), samples)
        else:
            out.shard(name).unlink()
    if survivors:
        write_part(out.part(name), survivors, metric_types, hashes["stages_hash"])
    else:
        out.part(name).unlink()


def _redecide(row: dict[str, Any], config: Any) -> str | None:
    """Re-decide one stored row under the current thresholds (in place); why it must be made again, or None."""
    if row["key"] is None:
        return "a source-level decision may change" if row.get("reject_stage") not in (None, "sources") else None
    order = [stage.name for stage in table.STAGES if stage.decide is not None]
    stage = row["reject_stage"] if row["status"] == "rejected" else None
    if row["status"] != "kept" and stage not in order:
        return None                                      # decided before any threshold
    new = table.decide_clip(row, config)
    later = stage is not None and (new is None or order.index(new[0]) > order.index(stage))
    if later and row["reject_reason"] in table.threshold_reasons():
        return "a clip rejected before now passes its thresholds"
    if new is not None and not later:
        row.update(status="rejected", reject_stage=new[0], reject_reason=new[1], reject_detail=new[2], shard=None)
    return None


def _pending_segments(out: OutputDir, hashes: dict[str, str], state: ResumeState,
                      packed: set[str]) -> list[dict[str, Any]]:
    """The rows of committed, unpacked segments. Deleted: a second copy of a packed clip (written by a
    task Ray retried), segments that failed or were made under another config (made again), and
    segments that cannot be read (made again, the reason recorded)."""
    segments, damaged = read_segment_rows(out)
    for path, why in damaged.items():
        _drop(out, out.at(path), f"unreadable segment: {why}", state)
        state.redo[out.at(path).parent.name] = f"its segment was unreadable: {why}"
    rows = []
    for row in segments:
        path = row.pop("_segment")
        if (row["key"] or row["unit"]) in packed:
            out.at(path).unlink()
            continue
        if row["status"] == "failed" or row["config_hash"] != hashes["config_hash"]:
            state.redo[row["unit"]] = "failed before" if row["status"] == "failed" else "its segment predates the config"
            state.config_changed |= row["config_hash"] != hashes["config_hash"]
            out.at(path).unlink()
            continue
        hours = (row.get("duration") or 0.0) / 3600      # a source-level row has no duration
        state.pending.append(Segment(row["unit"], row["key"] or row["unit"], path, row["status"], row.pop("_bytes"),
                                     hours))
        rows.append({c: row.get(c) for c in LEDGER_COLUMNS})
    return rows


def _drop(out: OutputDir, path: Location, why: str, state: ResumeState, then: str = "its clip is made again") -> None:
    """Delete a file that resume cannot read, and say so (`_note`)."""
    _note(state, str(path.relative_to(out.root)), why, then)
    path.unlink(missing_ok=True)


def _note(state: ResumeState, what: str, why: str, then: str) -> None:
    """Record why resume dropped something it could not read (build.json `dropped`), and say so on stderr."""
    state.dropped[what] = why
    print(f"vividhead build: resume: dropped {what} ({why}); {then}", file=sys.stderr, flush=True)
