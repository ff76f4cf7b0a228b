"""WebDataset shards: one tar per work unit, written under a temporary name and renamed when complete.

Members are `<key>.<ext>` in a fixed order per sample (mp4, wav, audio.npy, mask.png, json) with
fixed metadata, so the same clips always give the same bytes. Plain `webdataset` reads them.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

SAMPLE_ORDER = ("mp4", "wav", "audio.npy", "mask.png", "json")


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    """Write (key, {extension: bytes}) samples to `path` atomically (temporary name, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    with open(tmp, "wb") as handle:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, files in samples:
                if "." in key:
                    raise ValueError(f"shard key {key!r} contains a dot; WebDataset would split it")
                extensions = [e for e in SAMPLE_ORDER if e in files] + sorted(set(files) - set(SAMPLE_ORDER))
                for ext in extensions:
                    _add(tar, f"{key}.{ext}", files[ext])
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def read_shard(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample, in file order; for checks and tools (training uses webdataset)."""
    current, files = None, {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            if key != current and current is not None:
                yield current, files
                files = {}
            current = key
            files[ext] = tar.extractfile(member).read()
    if current is not None:
        yield current, files
