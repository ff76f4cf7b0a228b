"""Ray for `vividhead build`: start or join it quietly, and turn the stage table's resources into call arguments.

`start_ray` joins `--address` (or RAY_ADDRESS, which Ray itself would join anyway), or starts a local Ray
limited to this machine's CPUs (or `--workers`). It leaves the driver's signal handling as it found it:
`ray.init` makes SIGTERM a silent `sys.exit(15)`, which is undone, and a SIGTERM that this handler took during
`ray.init` is handed to the handler it replaced (the command's: one line, `vividhead.envfail.stop_on_signals`).
A local Ray whose start is interrupted is shut down, and what `ray.shutdown` leaves of it (the raylet's
dashboard and runtime-env agents, when the init is stopped before Ray knows its node) is ended too.
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

from vividhead.pipelines.stages import Resources, Stage

RAY_MARK = "VIVIDHEAD_RAY_INIT"                        # in the environment of a local Ray's processes during its start


def start_ray(address: str | None, workers: int | None) -> str | None:
    """Join `address` (default: RAY_ADDRESS), or start a quiet local Ray. None when Ray was already initialized;
    else what `stop_ray` takes to shut it down: the mark of a local Ray's processes, or "" for a joined cluster. A cluster that is joined has its own
    CPUs: `workers` sizes only a local Ray."""
    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray Data calls `max_retries` a deprecated remote argument but offers no named one for it yet.
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        options["address"] = address
    else:
        options["num_cpus"] = workers or os.cpu_count() or 1
    mark = _init_keeping_sigterm(options, local=not address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.max_errored_blocks = -1            # a unit whose worker died is recorded as failed, not fatal
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return mark


def stop_ray(mark: str) -> None:
    """Shut down the Ray that `start_ray` started, then end what `ray.shutdown` left of a local one (the raylet's
    agents, when it is shut down while still starting them)."""
    ray.shutdown()
    if mark:
        _end(mark)


def _init_keeping_sigterm(options: dict[str, Any], local: bool) -> str:
    """`ray.init(**options)`, with the SIGTERM handler of before put back; a half-done init is shut down
    (`local`: with every process it had started, found by a mark in their environment)."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    mark = f"{os.getpid()}-{time.time_ns()}"
    if local:
        os.environ[RAY_MARK] = mark                    # inherited by the local Ray's processes, theirs too
    try:
        ray.init(**options)
    except BaseException as err:
        ray.shutdown()                                 # whatever the interrupted init had started
        if local:
            _end(mark)                                 # what ray.shutdown did not know of
        if callable(before) and isinstance(err, SystemExit) and err.code == signal.SIGTERM:
            before(signal.SIGTERM, None)               # Ray's handler took the SIGTERM: the one it replaced acts
        raise
    finally:
        os.environ.pop(RAY_MARK, None)
        if main and before is not None:
            signal.signal(signal.SIGTERM, before)
    return mark if local else ""


def _marked(mark: str) -> set[int]:
    """The living processes whose environment holds `RAY_MARK=mark` (from /proc: Linux; elsewhere none)."""
    entry = f"{RAY_MARK}={mark}".encode()
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if entry in (proc / "environ").read_bytes().split(b"\0"):
                found.add(int(proc.name))
        except (OSError, ValueError):
            continue
    return found - {os.getpid()}


def _end(mark: str, grace_s: float = 5.0) -> None:
    """SIGTERM the processes of `mark` (a raylet then ends what it started), SIGKILL what is left after `grace_s`."""
    deadline = time.monotonic() + grace_s
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _marked(mark):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        while sig == signal.SIGTERM and _living(_marked(mark)) and time.monotonic() < deadline:
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
