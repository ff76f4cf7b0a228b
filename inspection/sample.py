"""`inspect --sample KEY --out DIR`: write one sample's files (KEY.mp4, KEY.wav, ...) to a directory."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

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


def dump_sample(dataset: Dataset, key: str, out: Path) -> list[Path]:
    """Find the sample (in the shard its manifest row names, else by scanning) and write its files."""
    row = manifest_entry(dataset, key)
    if row is not None and row["status"] != "kept":
        reason = f"{row['reject_stage']}: {row['reject_reason']}" if row["reject_stage"] else row["status"]
        detail = f" ({row['reject_detail']})" if row.get("reject_detail") else ""
        raise InspectError(f"clip {key} was not kept ({reason}{detail}), so no shard holds a sample for it")
    sample = read_sample(dataset, key, row["shard"] if row else None)
    if sample is None:
        where = f"shards/{row['shard']}" if row else f"{len(dataset.shards)} shard(s)"
        raise InspectError(f"no sample with key {key!r} in {where}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for extension, data in sorted(sample.files.items()):
        path = out / f"{key}.{extension}"
        path.write_bytes(data)
        written.append(path)
    return written
