"""Stages 1-2 around their Ray call: the rows it reads, the work each task does, and the plan it yields.

`source_rows` lists the sources with their cached MD5s; `fetch_and_probe` (one Ray task per
source) downloads a URL (a video page through yt-dlp, section by section: pipelines/remote/),
hashes the bytes and probes each file into work units or a rejection;
`plan` (on the driver) deduplicates by MD5, remembers the MD5s, and returns the work units and
the source-level rows to commit. MD5s are cached in OUT/.cache/md5.json by (path, size, mtime).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vividhead.envfail import ENVIRONMENT_REASON, environment_message
from vividhead.media import MediaError
from vividhead.pipelines.bucket_sources import local_copy, object_md5
from vividhead.pipelines.config import BuildSettings
from vividhead.pipelines.records import Source
from vividhead.pipelines.remote.ytdlp import fetch_video
from vividhead.pipelines.sources import dedupe_by_md5, fetch, md5_of
from vividhead.pipelines.units import SourceRejection, WorkUnit, plan_source, source_unit_id
from vividhead.storage import Location, is_object_url, put_bytes


@dataclass
class Plan:
    """What stages 1-2 decided: the work units to decode, and the sources rejected or skipped whole."""

    units: list[WorkUnit] = field(default_factory=list)
    rejections: list[SourceRejection] = field(default_factory=list)


def source_rows(sources: list[Source], cache_path: Location) -> list[dict[str, Any]]:
    """One row per source for the fetch tasks, with its MD5 when the cache knows the file."""
    cache = _cached_md5s(cache_path)
    return [{"index": i, "source": pickle.dumps(s), "md5": cache.get(_stamp(s.uri))} for i, s in enumerate(sources)]


def fetch_and_probe(row: dict[str, Any], config: BuildSettings, downloads: str) -> dict[str, Any]:
    """Stages 1-2 for one source (a Ray task): [(source with md5, its work units or its rejection)], one pair
    per piece (a video source fetched as sections has one piece per section)."""
    source: Source = pickle.loads(row["source"])
    try:
        if source.kind == "video":                   # video pages and dataset lists: yt-dlp (pipelines/remote/)
            pieces: list[tuple[Source, Path | Exception]] = fetch_video(source, Path(downloads), config.run,
                                                                         config.remote)
        elif is_object_url(source.uri):              # a bucket's object: copied to this worker's disk
            pieces = [(source, local_copy(source.uri, Path(downloads), config.storage))]
        else:
            pieces = [(source, fetch(source, Path(downloads), config.run, config.remote))]
    except Exception as err:  # noqa: BLE001 - judged with the piece's other failures below
        pieces = [(source, err)]
    md5 = row.get("md5") if source.kind != "video" else None
    return {"index": row.get("index", 0),
            "planned": pickle.dumps([_probe_piece(piece, found, md5, config) for piece, found in pieces])}


def _probe_piece(source: Source, found: Path | Exception, md5: str | None,
                 config: BuildSettings) -> tuple[Source, Any]:
    """(source with md5, its work units or its rejection) for one fetched file, or the reason it has none."""
    try:
        if isinstance(found, Exception):
            raise found
        if not found.is_file():
            raise MediaError("missing_file", f"{found}: no such file")
        in_bucket = is_object_url(source.uri)
        source = replace(source, md5=md5 or (object_md5(source.uri, config.storage) if in_bucket else None)
                         or md5_of(found))
        result: Any = plan_source(source, str(found), config)
        if in_bucket and isinstance(result, list):    # each decode task reads the object on its own node
            result = [replace(unit, path=source.uri) for unit in result]
    except MediaError as err:
        result = SourceRejection(source_unit_id(source, "source"), source, "sources", err.reason, err.detail)
    except Exception as err:  # noqa: BLE001 - one bad source must not stop the build ...
        env = environment_message(err)                   # ... unless the disk or the cluster failed: the driver stops
        result = SourceRejection(source_unit_id(source, "source"), source, "sources",
                                 ENVIRONMENT_REASON if env else "error", env or f"{type(err).__name__}: {err}",
                                 status="failed")
    return source, result


def plan(rows: list[dict[str, Any]], cache_path: Path) -> Plan:
    """Dedupe the fetched sources by MD5 (first listing wins), cache the MD5s, return the plan.

    Ray returns the fetch tasks' rows in the order they finish: they are put back in listed order first,
    so that which copy of a duplicate is kept never depends on timing (a re-run keeps the same one)."""
    rows = sorted(rows, key=lambda row: row.get("index", 0))
    planned: list[tuple[Source, Any]] = [pair for row in rows for pair in pickle.loads(row["planned"])]
    _remember(cache_path, {_stamp(source.uri): source.md5 for source, _ in planned if source.md5})
    _, duplicates = dedupe_by_md5([source for source, _ in planned if source.md5])
    originals = {dup.source_id: original for dup, original in duplicates}
    result = Plan()
    for source, found in planned:
        if source.source_id in originals:
            result.rejections.append(SourceRejection(
                source_unit_id(Source(source.source_id, source.uri), "duplicate"), source, "sources", "duplicate_md5",
                f"same bytes (MD5 {source.md5}) as {originals[source.source_id].uri}", status="skipped"))
        elif isinstance(found, SourceRejection):
            result.rejections.append(found)
        else:
            result.units.extend(found)
    return result


def _cached_md5s(cache_path: Location) -> dict[str, str]:
    """The MD5 cache; empty when there is none or it cannot be read (a cache: the MD5s are computed again)."""
    try:
        cache = json.loads(cache_path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        print(f"vividhead build: {cache_path}: unreadable MD5 cache ({type(err).__name__}); it is rebuilt",
              file=sys.stderr, flush=True)
        return {}
    return {k: v for k, v in cache.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(cache, dict) else {}


def _remember(cache_path: Location, found: dict[str | None, str]) -> None:
    cache = _cached_md5s(cache_path)
    cache.update({stamp: md5 for stamp, md5 in found.items() if stamp})
    put_bytes(cache_path, json.dumps(cache).encode())


def _stamp(uri: str) -> str | None:
    """Cache key of a local file: real path, size and modification time (None for URLs or missing files)."""
    try:
        stat = os.stat(uri)
    except (OSError, ValueError):
        return None
    return f"{os.path.realpath(uri)}|{stat.st_size}|{stat.st_mtime_ns}"
