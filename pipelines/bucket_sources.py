"""Sources in a bucket (`s3://bucket/prefix/`, a glob, one object): listing them and reading them.

`expand_object_path` lists a sources.yaml `path:` that is an object-store URL on the driver (names
only, no bytes). `local_copy` is called by the worker that needs the bytes (the fetch task that
probes and hashes a source, and the decode task of each of its units): it downloads the object once
per node into the build's local downloads folder, whole, under a `.NAME.part` name renamed when
complete. `object_md5` is the store's checksum where it is a real MD5 (`storage.real_md5`), so the
MD5 dedupe reads no bytes for it; otherwise the fetch task hashes the copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from vividhead.storage import ObjectPath, StorageConfig, location, real_md5


def expand_object_path(text: str, extensions: set[str], recursive: bool,
                       storage: StorageConfig) -> tuple[list[str], tuple[str, str] | None]:
    """The object URLs a `path:` names (a glob, a prefix or one object), sorted; or why none."""
    root = location(text, storage)
    assert isinstance(root, ObjectPath)
    fs = root.fs
    if any(char in text for char in "*?["):
        keys = fs.glob(root.key)
        problem = ("no_match", f"{text}: the glob matches no video object")
    elif fs.isfile(root.key):
        return [root.url], None
    else:
        keys = fs.find(root.key) if recursive else [entry for entry in fs.ls(root.key, detail=False)]
        problem = ("no_match", f"{text}: the prefix holds no video object") if keys else (
            "missing_file", f"{text}: no such object or prefix")
    urls = sorted(f"{root.protocol}://{key}" for key in keys
                  if PurePosixPath(key).suffix.lower() in extensions and not PurePosixPath(key).name.startswith("."))
    return urls, None if urls else problem


def object_md5(uri: str, storage: StorageConfig) -> str | None:
    """The MD5 the store states for the object, when it is a real one."""
    path = location(uri, storage)
    assert isinstance(path, ObjectPath)
    return real_md5(path)


def local_copy(uri: str, downloads: Path, storage: StorageConfig) -> Path:
    """The object's bytes in a local file under `downloads` (downloaded once per node)."""
    path = location(uri, storage)
    assert isinstance(path, ObjectPath)
    target = downloads / f"{hashlib.sha1(uri.encode()).hexdigest()[:16]}{path.suffix[:8]}"
    if target.exists():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    partial = downloads / f".{target.name}.{os.getpid()}.part"
    try:
        path.fs.get_file(path.key, str(partial))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
