"""The Parquet manifest: one row per candidate clip, and per source rejected before segmentation.

Every part (`manifest/<unit>.parquet`) has the same schema: the fixed columns of docs/FORMATS.md
plus one typed column per declared stage metric (the build passes the stage table's metrics). A part is written to a temporary name and renamed
into place after its shard, so a part's existence is the commit marker of its unit. In a bucket a
part is one whole-object put (`vividhead.storage.put_bytes`), made after its shard's.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vividhead.storage import Location, ObjectPath, put_bytes

ARROW_TYPES = {"float": pa.float64(), "int": pa.int64(), "str": pa.string(), "bool": pa.bool_()}
ATTRIBUTES = ("language", "gender", "age", "ethnicity")

FIXED_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("key", pa.string()), ("unit", pa.string()), ("status", pa.string()),
    ("reject_stage", pa.string()), ("reject_reason", pa.string()), ("reject_detail", pa.string()),
    ("source_id", pa.string()), ("dataset", pa.string()), ("uri", pa.string()), ("md5", pa.string()),
    ("start", pa.float64()), ("end", pa.float64()), ("duration", pa.float64()), ("n_frames", pa.int64()),
    ("crop_x", pa.int64()), ("crop_y", pa.int64()), ("crop_side", pa.int64()), ("shard", pa.string()),
    *[(column, pa.string()) for name in ATTRIBUTES for column in (name, f"{name}_provenance")],
    ("config_hash", pa.string()), ("content_hash", pa.string()), ("pipeline_version", pa.string()),
    ("timings", pa.string()),
]


def manifest_schema(metric_types: dict[str, str]) -> pa.Schema:
    """Fixed columns, then one column per metric (sorted by name) typed as declared."""
    fields = [pa.field(name, kind) for name, kind in FIXED_COLUMNS]
    for name in sorted(metric_types):
        kind = metric_types[name]
        if kind not in ARROW_TYPES:
            raise ValueError(f"metric {name!r}: type {kind!r} is not one of {sorted(ARROW_TYPES)}")
        fields.append(pa.field(name, ARROW_TYPES[kind]))
    return pa.schema(fields)


def safe_text(text: str | None) -> str | None:
    """Text that Arrow can store: undecodable file-name bytes become backslash escapes."""
    if text is None:
        return None
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def rows_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows as a table of `schema`; values of undeclared metrics are dropped."""
    names = schema.names
    columns = {name: [row.get(name) for row in rows] for name in names}
    return pa.Table.from_pydict(columns, schema=schema)


def write_atomic(table: pa.Table, path: Location) -> None:
    """Write a Parquet file whole: under a temporary name, fsynced and renamed (a bucket: one put)."""
    if isinstance(path, ObjectPath):
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        put_bytes(path, buffer.getvalue())
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_table(path: Location, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file on disk or in a bucket."""
    if isinstance(path, ObjectPath):
        return pq.read_table(io.BytesIO(path.read_bytes()), columns=columns)
    return pq.read_table(path, columns=columns)


def read_schema(path: Location) -> pa.Schema:
    """The schema (with its metadata) of a Parquet file on disk or in a bucket."""
    if isinstance(path, ObjectPath):
        with path.open("rb") as handle:
            return pq.read_schema(handle)
    return pq.read_schema(path)


def row_count(path: Location) -> int:
    """The rows of a Parquet file, from its footer."""
    if isinstance(path, ObjectPath):
        with path.open("rb") as handle:
            return pq.read_metadata(handle).num_rows
    return pq.read_metadata(path).num_rows


def _root(path: Location) -> Location:
    return path if isinstance(path, ObjectPath) else Path(path)


def read_parts(manifest_dir: Location) -> pa.Table | None:
    """All committed parts as one table (columns unioned across schema versions), or None."""
    parts = sorted(_root(manifest_dir).glob("*.parquet"))
    if not parts:
        return None
    tables = [read_table(part) for part in parts]
    return pa.concat_tables(tables, promote_options="permissive")


def read_manifest(out_dir: Location) -> pa.Table:
    """The manifest of a build directory: manifest.parquet, or the parts when it is not consolidated."""
    out_dir = _root(out_dir)
    table = read_parts(out_dir / "manifest")
    if table is not None:
        return table
    if (out_dir / "manifest.parquet").exists():
        return read_table(out_dir / "manifest.parquet")
    raise FileNotFoundError(f"{out_dir}: no manifest.parquet and no manifest/*.parquet parts")


def consolidate(out_dir: Location) -> pa.Table | None:
    """Write manifest.parquet from the parts (atomically) and return it."""
    table = read_parts(_root(out_dir) / "manifest")
    if table is not None:
        table = table.sort_by([("unit", "ascending"), ("start", "ascending")])
        write_atomic(table, _root(out_dir) / "manifest.parquet")
    return table
