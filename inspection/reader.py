"""Find a build's files and stream them: manifest record batches and shard samples.

`vividhead inspect` accepts build directories, directories of shards, single `.tar` / `.parquet`
files and globs of any of these. `resolve` turns those arguments into a `Dataset` (lists of files,
nothing read yet). The manifest is read batch by batch with only the columns asked for, and
shards are read member by member, so memory stays bounded whatever the dataset's size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from vividhead.envfail import InputError
from vividhead.manifest import FIXED_COLUMNS, read_schema
from vividhead.paths import is_glob
from vividhead.shards import Sample, iter_samples, shard_files
from vividhead.storage import Location, arrow_files, expand_location

BATCH_ROWS = 65_536
REQUIRED_COLUMNS = ("key", "status")        # without these a Parquet file is not a manifest
# Kept clips whose sync the build could not verify (the weight-free check's `unsure`): counted in the funnel.
UNVERIFIED = "sync.verified"
# The type of each column inspect reads, when it is there: docs/FORMATS.md's fixed columns and the flag above.
READ_TYPES = {**dict(FIXED_COLUMNS), UNVERIFIED: pa.bool_()}


class InspectError(InputError):
    """Bad input to inspect: names the path or field and what was expected."""


@dataclass(frozen=True)
class Dataset:
    """The files of one or more builds, as found on disk (nothing is read here)."""

    roots: tuple[Path, ...]                 # build directories (or shard directories) given
    manifests: tuple[Path, ...]             # parquet files holding manifest rows
    shards: tuple[Path, ...]                # webdataset tar files
    build_jsons: tuple[Path, ...]           # build.json of each build directory

    @property
    def has_manifest(self) -> bool:
        return bool(self.manifests)

    def build_info(self) -> list[dict[str, Any]]:
        """The parsed build.json of every build directory (small files)."""
        infos = []
        for path in self.build_jsons:
            try:
                infos.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError) as error:
                raise InspectError(f"{path}: not a readable JSON file ({error})") from error
        return infos


def _expand(argument: str) -> list[Location]:
    matches = expand_location(argument)
    if not matches:
        raise InspectError(f"{argument}: the glob matches no file or directory" if is_glob(argument) else
                           f"{argument}: no such file or directory (expected a build directory, shards or a glob)")
    return matches


def _build_manifest_files(root: Path) -> list[Path]:
    consolidated = root / "manifest.parquet"
    if consolidated.is_file():
        return [consolidated]
    return sorted(path for path in (root / "manifest").glob("*.parquet") if not path.name.startswith("."))


def resolve(arguments: Iterable[str | Path]) -> Dataset:
    """Turn command-line paths and globs into the files of a dataset."""
    roots: list[Path] = []
    manifests: list[Path] = []
    shards: list[Path] = []
    build_jsons: list[Path] = []
    for argument in arguments:
        for path in _expand(str(argument)):
            if path.is_dir():
                is_build = (path / "manifest.parquet").is_file() or (path / "manifest").is_dir() \
                    or (path / "shards").is_dir() or (path / "build.json").is_file()
                if is_build:
                    roots.append(path)
                    manifests += _build_manifest_files(path)
                    shards += shard_files(path / "shards")
                    if (path / "build.json").is_file():
                        build_jsons.append(path / "build.json")
                elif shard_files(path):
                    roots.append(path)
                    shards += shard_files(path)
                else:
                    raise InspectError(f"{path}: neither a build directory (manifest.parquet, manifest/, "
                                       "shards/) nor a directory of .tar shards")
            elif path.suffix == ".tar":
                shards.append(path)
            elif path.suffix == ".parquet":
                manifests.append(path)
            else:
                raise InspectError(f"{path}: expected a build directory, a .tar shard or a .parquet manifest")
    if not manifests and not shards:
        raise InspectError("no manifest and no shards found in: " + ", ".join(map(str, arguments)))
    unique = lambda paths: tuple(dict.fromkeys(path.resolve() for path in paths))  # noqa: E731
    return Dataset(unique(roots), unique(manifests), unique(shards), unique(build_jsons))


def _same_kind(found: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type `found` reads as `expected` (any string, integer or number width; all-null)."""
    if pa.types.is_null(found):
        return True
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(found)
    if pa.types.is_floating(expected):
        return pa.types.is_integer(found) or pa.types.is_floating(found)
    return found == expected


def check_manifest_schema(path: Path, schema: pa.Schema) -> None:
    """InspectError naming the missing columns and those of the wrong type, when `schema` is not a manifest's.

    `key` and `status` must be there; every column of `READ_TYPES` that is there must have its type (older
    builds lack some, and metric columns vary by build)."""
    expected = READ_TYPES
    missing = [name for name in REQUIRED_COLUMNS if name not in schema.names]
    wrong = [f"{field.name} is {field.type}, expected {expected[field.name]}" for field in schema
             if field.name in expected and not _same_kind(field.type, expected[field.name])]
    problems = ([f"missing column(s) {', '.join(missing)} (it has {', '.join(schema.names[:8]) or 'none'}"
                 f"{', ...' if len(schema.names) > 8 else ''})"] if missing else []) + wrong
    if problems:
        raise InspectError(f"{path}: not a vividhead manifest: {'; '.join(problems)}")


def manifest_schema(dataset: Dataset) -> pa.Schema:
    """The unified schema of all manifest files (metadata only; builds may differ in metric columns), each
    checked to be a manifest's (`check_manifest_schema`)."""
    schemas = []
    for path in dataset.manifests:
        try:
            schema = read_schema(path)
        except (OSError, pa.ArrowInvalid) as error:
            raise InspectError(f"{path}: not a readable Parquet manifest ({error})") from error
        check_manifest_schema(path, schema)
        schemas.append(schema)
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise InspectError(f"the manifests disagree on a column's type ({error})") from error


def manifest_batches(dataset: Dataset, columns: Iterable[str] | None = None,
                     batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Stream the manifest rows, `batch_rows` at a time, with only the columns asked for.

    Columns missing from the manifest are returned as nulls, so callers can ask for optional ones.
    """
    schema = manifest_schema(dataset)
    wanted = list(dict.fromkeys(columns)) if columns is not None else schema.names
    present = [name for name in wanted if name in schema.names]
    files, filesystem = arrow_files(dataset.manifests)
    scanner = pads.dataset(files, filesystem=filesystem, schema=schema, format="parquet").scanner(
        columns=present, batch_size=batch_rows, batch_readahead=2, fragment_readahead=1)
    for batch in scanner.to_batches():
        if batch.num_rows == 0:
            continue
        arrays = [batch.column(name) if name in present else pa.nulls(batch.num_rows) for name in wanted]
        yield pa.RecordBatch.from_arrays(arrays, names=wanted)


def shard_rows(dataset: Dataset) -> Iterator[pa.RecordBatch]:
    """Manifest rows rebuilt from the shards' `json` files (kept clips only), for shards without a manifest."""
    rows: list[dict[str, Any]] = []
    for shard in dataset.shards:
        for sample in iter_samples(shard, {"json"}):
            try:
                row = json.loads(sample.files.get("json") or b"{}")
            except json.JSONDecodeError:
                row = {}
            row.setdefault("key", sample.key)
            row.setdefault("status", "kept")
            row.setdefault("shard", shard.name)
            rows.append({name: _scalar(value) for name, value in row.items()})
            if len(rows) >= 4096:
                yield pa.RecordBatch.from_pylist(rows)
                rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows)


def _scalar(value: Any) -> Any:
    """Nested JSON values (lists, dicts) become JSON strings so that batches keep flat columns."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def read_sample(dataset: Dataset, key: str, shard_name: str | None = None) -> Sample | None:
    """Find one sample by key, in the named shard when the manifest says where it is, else in all."""
    shards = [path for path in dataset.shards if shard_name is None or path.name == shard_name]
    for shard in shards or dataset.shards:
        for sample in iter_samples(shard):
            if sample.key == key:
                return sample
    return None
