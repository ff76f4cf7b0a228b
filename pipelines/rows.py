"""Manifest rows of the build: what one clip or one rejected source becomes, in the part and in the shard.

A row is a dict of the manifest's columns (`vividhead/manifest.py`, docs/FORMATS.md). In a Parquet
part, `timings` is JSON text; in a kept sample's `json` member the row is a JSON object whose
`timings` is an object and whose NaNs are nulls (`sample_json` / `row_from_json` convert).
`write_part` writes one manifest part with the model stages' hash in its metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vividhead.manifest import ATTRIBUTES, manifest_schema, rows_table, safe_text, write_atomic
from vividhead.pipelines.records import STATUSES, Clip, Source
from vividhead.pipelines.units import SourceRejection, probe_metrics

STAGES_KEY = b"vividhead.stages_hash"              # Parquet metadata: the hash of the model stages' config


def _source_columns(source: Source) -> dict[str, Any]:
    given = dict(source.attributes)
    row: dict[str, Any] = {"source_id": safe_text(source.source_id), "dataset": source.dataset,
                           "uri": safe_text(source.uri), "md5": source.md5,
                           **{f"sources.{name}": value for name, value in source.fetched}}   # remote: format, offset
    for name in ATTRIBUTES:
        row[name] = given.get(name, "unknown")
        row[f"{name}_provenance"] = "given" if name in given else "unknown"
    return row


def clip_row(clip: Clip, unit: str, hashes: dict[str, str]) -> dict[str, Any]:
    """The manifest row of one clip (kept, rejected, skipped or failed); `shard` is set when it is packed."""
    row = _source_columns(clip.source)
    x, y, side = clip.crop_box if clip.crop_box else (None, None, None)
    row.update({
        "key": clip.key, "unit": unit, "status": clip.status, "reject_stage": clip.reject_stage,
        "reject_reason": clip.reject_reason, "reject_detail": safe_text(clip.reject_detail),
        "start": clip.start, "end": clip.end, "duration": clip.end - clip.start, "n_frames": clip.n_frames,
        "crop_x": x, "crop_y": y, "crop_side": side, "shard": None,
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


def sample_json(row: dict[str, Any]) -> bytes:
    """A manifest row as a sample's `json` member holds it (NaN -> null, timings as an object)."""
    out = {}
    for key, value in row.items():
        if isinstance(value, float) and value != value:
            value = None
        elif hasattr(value, "item"):
            value = value.item()
        out[key] = value
    if isinstance(out.get("timings"), str):
        out["timings"] = json.loads(out["timings"])
    return json.dumps(out, sort_keys=True).encode()


def row_from_json(data: bytes) -> dict[str, Any]:
    """The manifest row of a `json` member (timings back to JSON text)."""
    row = json.loads(data)
    if not isinstance(row.get("timings"), str):
        row["timings"] = json.dumps(row.get("timings") or {}, sort_keys=True)
    return row


def row_problem(row: Any) -> str | None:
    """Why a row read back from disk (a segment's `json`, a part) cannot be resumed from, or None.

    Resume needs the unit, the status, the key (None only for a source-level row) and the config
    hash; every other column may be missing (a source-level row has no `duration`, no piece bounds).
    """
    if not isinstance(row, dict):
        return f"the row is a {type(row).__name__}, not an object"
    for name in ("unit", "config_hash"):
        if not isinstance(row.get(name), str) or not row[name]:
            return f"the row has no {name}"
    if row.get("status") not in STATUSES:
        return f"the row's status {row.get('status')!r} is not one of {', '.join(STATUSES)}"
    if row.get("key") is not None and not isinstance(row["key"], str):
        return f"the row's key {row['key']!r} is not text"
    if row.get("key") is None and row["status"] == "kept":
        return "the row is kept but has no key"
    return None


def write_part(path: Path, rows: list[dict[str, Any]], metric_types: dict[str, str], stages_hash: str) -> None:
    """Write a manifest part atomically, with the model stages' hash in its metadata."""
    table = rows_table(rows, manifest_schema(metric_types))
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), STAGES_KEY: stages_hash})
    write_atomic(table, path)
