"""Fault injection for benchmarks/kill_anywhere.py: no hook in the product, only this file on PYTHONPATH.

Python imports `sitecustomize` at start-up in every process of a build that inherits PYTHONPATH:
the driver, the local Ray's workers, and the workers of `ray start` nodes started with it. When
VH_FAULTS is set, a post-import hook wraps a few functions of `vividhead.pipelines` as they are
imported, so that the n-th time a named moment is reached (counted across all processes through
files in VH_FAULT_DIR), an action runs there:

- `stop`: write `VH_FAULT_DIR/hit-<point>` and sleep; the harness sees the file and SIGKILLs the build;
- `die`: SIGKILL this process only (a Ray worker dies mid-clip; Ray retries its task);
- `enospc`: raise OSError(ENOSPC) (a full disk);
- `raise`: raise RuntimeError (an error inside the step).

VH_FAULTS is a comma-separated list of `point:n:action` (n may be `1+3`: the first and third time). The moments (points):
source_segment  after a source-level row (a source rejected before it had clips) is committed as a segment
clip_segment    after a clip is committed as a segment (on a worker)
clip            inside a unit's decode pass, after its first clip is made (on a worker)
pack_intent     a pack task wrote its intent, nothing else
pack_shard      inside a pack, its shard tar half written
pack_part       between a pack's shard and its manifest part
pack_finish     after the manifest part, before the packed segments are deleted
ledger          while the resume ledger is written (half a temporary file on disk)
manifest        while the consolidated manifest.parquet is written
VH_FAIL_SOURCE names a source file whose decode pass always raises (a failed unit in every run).
"""

from __future__ import annotations

import errno
import fcntl
import importlib.abc
import os
import signal
import sys
import time
from pathlib import Path

PATCHED = ("vividhead.pipelines.segments", "vividhead.pipelines.extract", "vividhead.pipelines.resume",
           "vividhead.manifest")


def _faults() -> dict[str, tuple[set[int], str]]:
    found = {}
    for item in filter(None, os.environ.get("VH_FAULTS", "").split(",")):
        point, times, action = item.split(":")
        found[point] = ({int(n) for n in times.split("+")}, action)
    return found


def _count(point: str) -> int:
    """How many times `point` has been reached in any process of this build, this time included."""
    path = Path(os.environ["VH_FAULT_DIR"]) / f"count-{point}"
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write("x")
        handle.flush()
        return os.path.getsize(path)


def reached(point: str) -> None:
    """Run the action configured for `point` when this is its n-th time."""
    fault = _faults().get(point)
    if fault is None or _count(point) not in fault[0]:
        return
    action = fault[1]
    if action == "stop":
        (Path(os.environ["VH_FAULT_DIR"]) / f"hit-{point}").write_text(str(os.getpid()))
        while True:
            time.sleep(60)
    if action == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if action == "raise":
        raise RuntimeError(f"injected fault at {point}")


def _patch_segments(module) -> None:
    original_write, original_json = module._write, module._atomic_json
    original_part, original_finish = module.write_part, module._finish

    def _write(path, key, files):
        size = original_write(path, key, files)
        reached("source_segment" if Path(path).parent.name == key else "clip_segment")
        return size

    def _atomic_json(path, data):
        original_json(path, data)
        if str(path).endswith(".pack.json"):
            reached("pack_intent")

    def write_part(path, rows, *args, **kwargs):
        reached("pack_part")
        return original_part(path, rows, *args, **kwargs)

    def _finish(out, name, paths):
        if out.part(name).exists():
            reached("pack_finish")
        return original_finish(out, name, paths)

    class ShardWriter(module.ShardWriter):
        def add(self, key, files):
            super().add(key, files)
            if self.path.parent.name == "shards":
                self.flush_for_fault()
                reached("pack_shard")

        def flush_for_fault(self) -> None:
            for value in vars(self).values():            # the open tar's file, so the half shard is on disk
                flush = getattr(getattr(value, "fileobj", value), "flush", None)
                if callable(flush):
                    try:
                        flush()
                    except (OSError, ValueError):
                        pass

    module._write, module._atomic_json, module.write_part, module._finish = _write, _atomic_json, write_part, _finish
    module.ShardWriter = ShardWriter


def _patch_extract(module) -> None:
    original = module.UnitExtractor.run

    def run(self):
        if os.path.basename(self.unit.path) == os.environ.get("VH_FAIL_SOURCE"):
            raise RuntimeError("injected failure of " + os.path.basename(self.unit.path))
        for index, clip in enumerate(original(self)):
            yield clip
            if index == 0:
                reached("clip")

    module.UnitExtractor.run = run


def _half_written(original, point: str, name: str):
    def write_atomic(table, path):
        path = Path(path)
        if path.name == name and point in _faults():
            import pyarrow.parquet as pq

            tmp = path.parent / f".{path.name}.tmp"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp)
            tmp.write_bytes(tmp.read_bytes()[: max(1, tmp.stat().st_size // 2)])
            reached(point)
        return original(table, path)
    return write_atomic


def _patch_resume(module) -> None:
    module.write_atomic = _half_written(module.write_atomic, "ledger", "ledger.parquet")


def _patch_manifest(module) -> None:
    module.write_atomic = _half_written(module.write_atomic, "manifest", "manifest.parquet")


PATCHES = {"vividhead.pipelines.segments": _patch_segments, "vividhead.pipelines.extract": _patch_extract,
           "vividhead.pipelines.resume": _patch_resume, "vividhead.manifest": _patch_manifest}


class _After(importlib.abc.MetaPathFinder):
    """Patches a module of PATCHES right after it is first executed."""

    def find_spec(self, name, path=None, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                loader_exec = spec.loader.exec_module

                def exec_module(module, _exec=loader_exec, _name=name):
                    _exec(module)
                    PATCHES[_name](module)

                spec.loader.exec_module = exec_module
                return spec
        return None


if os.environ.get("VH_FAULTS") or os.environ.get("VH_FAIL_SOURCE"):
    sys.meta_path.insert(0, _After())
