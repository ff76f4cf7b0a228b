"""Ray for `vividhead build`: start or join it quietly, and turn the stage table's resources into call arguments.

`start_ray` joins `--address` (or RAY_ADDRESS, which Ray itself would join anyway), or starts a local Ray
limited to this machine's CPUs (or `--workers`). It leaves the driver's signal handling as it found it:
`ray.init` makes SIGTERM a silent `sys.exit(15)`, which is undone, and a SIGTERM that this handler took during
`ray.init` is handed to the handler it replaced (the command's: one line, `vividhead.envfail.stop_on_signals`);
Ray's crash reporter, which would print a stack and abort the driver on that SIGTERM, is off during the init.
`start_ray` records what it starts before it starts it, so `stop_ray` (in the caller's `finally`) ends a local
Ray whatever moment a stop comes at: `ray.shutdown`, then every process that carries the local Ray's mark in its
environment, and their descendants (the raylet's dashboard and runtime-env agents, which `ray.shutdown` leaves
when the init is stopped before Ray knows its node).
Ray blocks SIGINT in the processes it starts, so a Ctrl-C to the process group reaches the driver alone.
`on_cluster` fills in what a Ray call leaves open, from what the cluster reports: a GPU share on a
cluster without GPUs becomes 0 (the stage runs on the CPU), and an actor pool without a declared
size may grow until its GPU shares fill the GPUs, or to one actor per two CPUs without GPUs (so a
2-core laptop is not oversubscribed). A declared 0 stays 0. `stage_pools` lets consecutive model stages whose
calls come out the same share one actor pool: one actor process runs them in turn, so a clip crosses one process
boundary instead of four and each worker imports and loads once (on a CPU machine all four share a pool; on a
GPU node the GPU-less speech stage gets a pool of its own).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray._private import ray_constants

from vividhead.pipelines.stages import Resources, Stage

RAY_MARK = "VIVIDHEAD_RAY_INIT"                        # in the environment of a local Ray's processes during its start
_started: str | None = None     # what `start_ray` started: None nothing, "" a joined cluster, else a local Ray's mark


def start_ray(address: str | None, workers: int | None) -> None:
    """Join `address` (default: RAY_ADDRESS), or start a quiet local Ray; nothing when Ray is already initialized.
    A cluster that is joined has its own CPUs: `workers` sizes only a local Ray. What was started is recorded here
    before it starts, so `stop_ray` ends it whatever moment a stop comes at (call both inside one `try`)."""
    global _started
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray Data calls `max_retries` a deprecated remote argument but offers no named one for it yet.
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        options["address"] = address
    else:
        options["num_cpus"] = workers or os.cpu_count() or 1
    _started = f"{os.getpid()}-{time.time_ns()}" if not address else ""
    _init_keeping_sigterm(options, _started)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.max_errored_blocks = -1            # a unit whose worker died is recorded as failed, not fatal
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def stop_ray() -> None:
    """Shut down the Ray that `start_ray` started (none: nothing), then end what `ray.shutdown` left of a local
    one: the raylet's agents, found as its children before it goes (orphaned, they carry no mark), which can
    outlive a shutdown in the middle of a build or while Ray is still starting them."""
    global _started
    mark, _started = _started, None
    if mark is None:
        return
    if not mark:                                       # a joined cluster: only this driver leaves it
        ray.shutdown()
        return
    ours = _marked(mark)
    ray.shutdown()
    _end(mark, ours)


def _init_keeping_sigterm(options: dict[str, Any], mark: str) -> None:
    """`ray.init(**options)`, with the SIGTERM handler of before put back. A local Ray (`mark` not empty) marks
    its processes' environment with `mark`; a SIGTERM during the init reaches the handler of before, not Ray's
    crash reporter (which prints a stack and aborts the driver)."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    if mark:
        os.environ[RAY_MARK] = mark                    # inherited by the local Ray's processes, theirs too
    reporting = ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True   # read as the driver's core worker is made
    try:
        ray.init(**options)
    except SystemExit as err:
        if callable(before) and err.code == signal.SIGTERM:
            before(signal.SIGTERM, None)               # Ray's handler took the SIGTERM: the one it replaced acts
        raise
    finally:
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = reporting
        os.environ.pop(RAY_MARK, None)
        if main and before is not None:
            signal.signal(signal.SIGTERM, before)


def _marked(mark: str) -> set[int]:
    """The living processes whose environment holds `RAY_MARK=mark` (this one aside), and their descendants (the
    raylet starts its agents with an environment of their own), from /proc: Linux; elsewhere none."""
    entry = f"{RAY_MARK}={mark}".encode()
    marked = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if entry in (proc / "environ").read_bytes().split(b"\0"):
                marked.add(int(proc.name))
        except OSError:
            continue
    return with_descendants(marked - {os.getpid()})


def with_descendants(pids: set[int]) -> set[int]:
    """`pids` and every living process descending from one of them, from /proc (Linux; elsewhere `pids`). Ray
    renames its agents' command lines, so a search by command line finds a raylet but not the agents it started."""
    parent = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent[int(proc.name)] = parent_of(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    found, grew = set(pids), True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def parent_of(pid: int) -> int:
    """The parent process id of `pid`, from /proc/PID/stat (field 4, after the parenthesised name)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _end(mark: str, known: set[int], grace_s: float = 5.0) -> None:
    """SIGTERM the `known` processes and those of `mark` (a raylet then ends what it started), SIGKILL what is left
    after `grace_s`. `mark` is searched again before each signal and while waiting, and the set only grows: a raylet
    stopped while it starts can still spawn an agent, and a child orphaned by its parent's end carries no mark."""
    deadline = time.monotonic() + grace_s
    targets = set(known)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        targets |= _marked(mark)
        for pid in _living(targets):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        while sig == signal.SIGTERM and _living(targets := targets | _marked(mark)) and time.monotonic() < deadline:
            time.sleep(0.1)


def _living(pids: set[int]) -> set[int]:
    """`pids` less the zombies (ended, not yet reaped by their parent)."""
    def state(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return "Z"
    return {pid for pid in pids if state(pid) != "Z"}


def on_cluster(resources: Resources, cluster: dict[str, float], pool: bool) -> Resources:
    """The resources of one Ray call on this cluster; `pool` for an actor pool (whose size must be bounded)."""
    cpus, gpus = cluster.get("CPU", 1.0), cluster.get("GPU", 0.0)
    num_gpus = resources.num_gpus if gpus > 0 else 0.0
    concurrency: Any = resources.concurrency
    if pool:
        most = concurrency or (int(gpus / num_gpus) if num_gpus else int(cpus // 2))
        concurrency = (1, max(1, most))
    return Resources(resources.num_cpus, num_gpus, concurrency)


@dataclass(frozen=True)
class StagePool:
    """Model stages (in table order) that one actor pool runs, and the pool's resources on this cluster."""

    stages: tuple[Stage, ...]
    resources: Resources


def stage_pools(stages: list[Stage], resources_of: Callable[[Stage], Resources],
                cluster: dict[str, float]) -> list[StagePool]:
    """The actor pools of the model stages: consecutive stages whose resources on this cluster are equal share one."""
    pools: list[StagePool] = []
    for stage in stages:
        resources = on_cluster(resources_of(stage), cluster, pool=True)
        if pools and pools[-1].resources == resources:
            pools[-1] = StagePool((*pools[-1].stages, stage), resources)
        else:
            pools.append(StagePool((stage,), resources))
    return pools
