"""Committed clips before they are packed, and the pack step that turns them into training-sized shards.

The last Ray call of the build (`write_segment`, on the workers) commits each clip as it leaves the
model stages: one small tar, `.segments/<unit>/<key>.tar`, holding the clip's sample (kept: mp4,
wav, features, mask and the manifest row as `json`; otherwise only the row), written by
`ShardWriter` under a temporary name and renamed into place. From then on a kill cannot lose it.

`pack` (a Ray task, also on a worker) turns a list of segments into one shard and its manifest
part, in an order that a kill at any moment cannot break:
1. the intent `.segments/shard-N.pack.json` lists the segments;
2. `shards/shard-N.tar` gets the kept samples (webdataset's writer, atomic rename);
3. `manifest/shard-N.parquet` gets every row (the commit marker: a shard without its part is an orphan);
4. the segments, then the intent, are deleted.
`recover` finishes or undoes a pack that a kill interrupted: with its part the leftover segments
are deleted, without it the shard is. Readers only ever list complete shards and parts. In a bucket each step is a whole-object put in
the same order, and each delete is one request, so the same argument holds there.
"""

from __future__ import annotations

import json
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vividhead.envfail import ENVIRONMENT_REASON, environment_message
from vividhead.pipelines.output import OutputDir
from vividhead.pipelines.records import Clip
from vividhead.pipelines.rows import clip_row, row_from_json, row_problem, sample_json, source_row, write_part
from vividhead.pipelines.units import SourceRejection
from vividhead.shards import ShardWriter, iter_samples
from vividhead.storage import Location, put_bytes


@dataclass(frozen=True)
class Segment:
    """A committed clip waiting to be packed: the small record the driver keeps of it."""

    unit: str
    key: str
    path: str
    status: str
    bytes: int                     # size of the segment file (what it adds to a shard when kept)
    hours: float = 0.0


def write_segment(row: dict[str, Any], out_root: Location, hashes: dict[str, str],
                  committed: dict[str, frozenset[str]]) -> dict[str, Any]:
    """Commit one clip as a segment (a Ray task); returns the small record the driver needs.

    A clip whose key its unit already committed (a resumed unit re-making a piece after a gap) is
    not written again. A full disk or a lost cluster comes back as `env` for the driver to stop on.
    """
    clip: Clip = pickle.loads(row["clip"])
    unit = row["unit"]
    record = {"unit": unit, "key": clip.key, "pieces": row["pieces"], "status": clip.status,
              "path": "", "bytes": 0, "hours": (clip.end - clip.start) / 3600, "env": None, "duplicate": False}
    try:
        if clip.reject_reason == ENVIRONMENT_REASON:
            record["env"] = clip.reject_detail
        elif clip.key in committed.get(unit, ()):
            record["duplicate"] = True
        else:
            path = OutputDir(out_root).segment(unit, clip.key)
            record["path"], record["bytes"] = str(path), _write(path, clip.key, _files(clip, clip_row(clip, unit, hashes)))
    except OSError as err:
        record["env"] = environment_message(err, where=out_root) or f"{type(err).__name__}: {err}"
    finally:
        for staged in (clip.video_path, clip.wav_path):
            if staged:
                Path(staged).unlink(missing_ok=True)
    return record


def write_source_segment(out: OutputDir, rejection: SourceRejection, hashes: dict[str, str]) -> Segment:
    """Commit a source rejected, skipped or failed before segmentation (on the driver: one small row)."""
    path = out.segment(rejection.unit_id, rejection.unit_id)
    size = _write(path, rejection.unit_id, {"json": sample_json(source_row(rejection, hashes))})
    return Segment(rejection.unit_id, rejection.unit_id, str(path), rejection.status, size)


def _files(clip: Clip, row: dict[str, Any]) -> dict[str, bytes]:
    if clip.status != "kept":
        return {"json": sample_json(row)}
    return {"mp4": Path(clip.video_path).read_bytes(), "wav": Path(clip.wav_path).read_bytes(), **clip.outputs,
            "json": sample_json(row)}


def _write(path: Location, key: str, files: dict[str, bytes]) -> int:
    with ShardWriter(path) as writer:
        writer.add(key, files)
    return writer.size


def read_segment_rows(out: OutputDir) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The manifest rows of every committed, unpacked segment (at most about one shard's worth), and
    the segments that cannot be read (path -> why: a truncated or corrupt tar, or a row without its
    unit, status or hashes)."""
    rows, damaged = [], {}
    for path in sorted(out.segments.glob("*/*.tar")):
        try:
            row = read_segment_row(path)
        except SegmentError as err:
            damaged[str(path)] = str(err)
            continue
        rows.append({**row, "_segment": str(path), "_bytes": path.stat().st_size})
    return rows, damaged


class SegmentError(ValueError):
    """A segment that cannot be read; the message says why."""


def read_segment_row(path: Location) -> dict[str, Any]:
    """The manifest row of one segment, after reading every member header (a truncated tar fails here)."""
    try:
        samples = list(iter_samples(path, {"json"}))
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        raise SegmentError(f"unreadable tar ({type(err).__name__}: {err})") from err
    if len(samples) != 1 or "json" not in samples[0].files:
        raise SegmentError(f"holds {len(samples)} samples, not one with a manifest row")
    try:
        row = row_from_json(samples[0].files["json"])
    except (ValueError, TypeError, AttributeError) as err:
        raise SegmentError(f"its manifest row is not a JSON object ({err})") from err
    problem = row_problem(row)
    if problem is None and (row["key"] or row["unit"]) != samples[0].key:
        problem = f"the row is of {row['key'] or row['unit']!r}, its sample of {samples[0].key!r}"
    if problem is not None:
        raise SegmentError(problem)
    return row


# ------------------------------------------------------------------------------------------------ pack
def pack(out_root: Location, name: str, paths: list[str], metric_types: dict[str, str], stages_hash: str) -> str | None:
    """Pack segments into shard `name` and its manifest part (a Ray task); None, or an environment failure."""
    out = OutputDir(out_root)
    try:
        if out.part(name).exists():                    # Ray retried a pack whose first try committed
            _finish(out, name, paths)
            return None
        _atomic_json(out.intent(name), paths)
        rows, kept = [], 0
        with ShardWriter(out.shard(name)) as writer:
            for path in paths:
                for sample in iter_samples(out.at(path)):
                    row = row_from_json(sample.files["json"])
                    if row["status"] == "kept":
                        row["shard"] = out.shard(name).name
                        writer.add(sample.key, {**sample.files, "json": sample_json(row)})
                        kept += 1
                    rows.append(row)
        if not kept:
            out.shard(name).unlink()
        rows.sort(key=lambda r: (r["unit"], r.get("start") or 0.0))
        write_part(out.part(name), rows, metric_types, stages_hash)
        _finish(out, name, paths)
    except OSError as err:
        return environment_message(err, where=out.root) or f"{type(err).__name__}: {err}"
    return None


def recover(out: OutputDir) -> int:
    """Finish or undo the packs a kill interrupted; returns how many shards were undone."""
    undone = 0
    for intent in sorted(out.segments.glob("*.pack.json")):
        name = intent.name.removesuffix(".pack.json")
        if out.part(name).exists():
            _finish(out, name, _intent_paths(intent))
        else:
            undone += out.shard(name).exists()
            out.shard(name).unlink(missing_ok=True)
            intent.unlink()
    return undone


def _intent_paths(intent: Location) -> list[str]:
    """The segments an intent lists; none when it cannot be read (resume then deletes the packed segments
    by their keys, `resume._pending_segments`)."""
    try:
        paths = json.loads(intent.read_text())
    except (OSError, ValueError):
        return []
    return [path for path in paths if isinstance(path, str)] if isinstance(paths, list) else []


def _finish(out: OutputDir, name: str, paths: list[str]) -> None:
    for path in paths:
        out.at(path).unlink(missing_ok=True)
        try:
            out.at(path).parent.rmdir()
        except OSError:
            pass                                       # the unit still has segments (or others share it)
    out.intent(name).unlink(missing_ok=True)


def _atomic_json(path: Location, data: Any) -> None:
    put_bytes(path, json.dumps(data).encode())
