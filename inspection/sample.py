"""`inspect --sample KEY --out DIR`: write one sample's files (KEY.mp4, KEY.wav, ...) to a directory.

Keys and member names come from the shard, which may be hostile: each file written must be a plain file name
inside DIR (no folder part, no `..`, not absolute), or nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from vividhead.envfail import check_out_dir
from vividhead.inspection.reader import Dataset, InspectError, manifest_batches, read_sample


def manifest_entry(dataset: Dataset, key: str) -> dict | None:
    """The manifest row of one key (streamed with a filter), or None."""
    if not dataset.has_manifest:
        return None
    columns = ["key", "status", "shard", "reject_stage", "reject_reason", "reject_detail"]
    for batch in manifest_batches(dataset, columns):
        match = batch.filter(pc.equal(batch.column("key"), key))
        if match.num_rows:
            return match.slice(0, 1).to_pylist()[0]
    return None


def plain_file_name(name: str) -> bool:
    """True for a name that stays inside any folder it is joined to: one path component, not `.` or `..`."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def dump_sample(dataset: Dataset, key: str, out: Path) -> list[Path]:
    """Find the sample (in the shard its manifest row names, else by scanning) and write its files."""
    check_out_dir(out)
    if not plain_file_name(key):
        raise InspectError(f"sample key {key!r} is not a plain file name; refusing to write outside --out {out}")
    row = manifest_entry(dataset, key)
    if row is not None and row["status"] != "kept":
        reason = f"{row['reject_stage']}: {row['reject_reason']}" if row["reject_stage"] else row["status"]
        detail = f" ({row['reject_detail']})" if row.get("reject_detail") else ""
        raise InspectError(f"clip {key} was not kept ({reason}{detail}), so no shard holds a sample for it")
    sample = read_sample(dataset, key, row["shard"] if row else None)
    if sample is None:
        where = f"shards/{row['shard']}" if row else f"{len(dataset.shards)} shard(s)"
        raise InspectError(f"no sample with key {key!r} in {where}")
    names = {extension: f"{key}.{extension}" for extension in sorted(sample.files)}
    bad = [name for name in names.values() if not plain_file_name(name)]
    if bad:
        raise InspectError(f"sample {key!r}: member name {bad[0]!r} is not a plain file name; nothing written")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for extension, name in names.items():
        path = out / name
        path.write_bytes(sample.files[extension])
        written.append(path)
    return written
