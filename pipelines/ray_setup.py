"""Ray for `vividhead build`: start or join it quietly, and turn the stage table's resources into call arguments.

`start_ray` joins `--address` (or RAY_ADDRESS, which Ray itself would join anyway), or starts a local Ray
limited to this machine's CPUs (or `--workers`). It leaves the driver's signal handling as it found it:
`ray.init` makes SIGTERM a silent `sys.exit(15)`, which is undone, and a SIGTERM that this handler took during
`ray.init` is handed to the handler it replaced (the command's: one line, `vividhead.envfail.stop_on_signals`).
Ray blocks SIGINT in the processes it starts, so a Ctrl-C to the process group reaches the driver alone.
`on_cluster` fills in what a Ray call leaves open, from what the cluster reports: a GPU share on a
cluster without GPUs becomes 0 (the stage runs on the CPU), and an actor pool without a declared
size may grow until its GPU shares fill the GPUs, or to one actor per two CPUs without GPUs (so a
2-core laptop is not oversubscribed). A declared 0 stays 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from typing import Any

import ray

from vividhead.pipelines.stages import Resources


def start_ray(address: str | None, workers: int | None) -> bool:
    """Join `address` (default: RAY_ADDRESS), or start a quiet local Ray; True when this call started it (and must
    shut it down). A cluster that is joined has its own CPUs: `workers` sizes only a local Ray."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray Data calls `max_retries` a deprecated remote argument but offers no named one for it yet.
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        options["address"] = address
    else:
        options["num_cpus"] = workers or os.cpu_count() or 1
    _init_keeping_sigterm(options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.max_errored_blocks = -1            # a unit whose worker died is recorded as failed, not fatal
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return True


def _init_keeping_sigterm(options: dict[str, Any]) -> None:
    """`ray.init(**options)`, with the SIGTERM handler of before put back; a half-done init is shut down."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(**options)
    except BaseException as err:
        ray.shutdown()                                 # whatever the interrupted init had started
        if callable(before) and isinstance(err, SystemExit) and err.code == signal.SIGTERM:
            before(signal.SIGTERM, None)               # Ray's handler took the SIGTERM: the one it replaced acts
        raise
    finally:
        if main and before is not None:
            signal.signal(signal.SIGTERM, before)


def on_cluster(resources: Resources, cluster: dict[str, float], pool: bool) -> Resources:
    """The resources of one Ray call on this cluster; `pool` for an actor pool (whose size must be bounded)."""
    cpus, gpus = cluster.get("CPU", 1.0), cluster.get("GPU", 0.0)
    num_gpus = resources.num_gpus if gpus > 0 else 0.0
    concurrency: Any = resources.concurrency
    if pool:
        most = concurrency or (int(gpus / num_gpus) if num_gpus else int(cpus // 2))
        concurrency = (1, max(1, most))
    return Resources(resources.num_cpus, num_gpus, concurrency)
