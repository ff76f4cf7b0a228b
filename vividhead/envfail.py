"""Failures that end a command with one line, never a traceback.

- Environment failures: a full disk, a read-only or forbidden path, an `--out` that is a file, a Ray
  cluster that cannot be reached or went away, an address already in use. The line names the path or
  the cause (exit 1); they never become a manifest decision about a clip.
- Bad input (`InputError`): a file, argument or value the user gave that the command cannot use. The line
  names the thing and what was expected (exit 2).

`vividhead.cli.main` is the one handler: commands raise, and `failure_line` turns the error into the line.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# errno -> what the line says; anything else is a bug or bad input, not the environment.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a path component is a file, not a directory",
    errno.EIO: "input/output error of the storage",
    errno.EMFILE: "too many open files (raise `ulimit -n`)",
}
RAY_CLUSTER_ERRORS = ("RaySystemError", "NodeDiedError", "RayletError", "GcsUnavailableError", "ObjectLostError",
                      "OwnerDiedError", "LocalRayletDiedError", "WorkerCrashedError")
STORE_ERRORS = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError")
ENVIRONMENT_REASON = "environment"                      # reject_reason of a clip that met an environment failure


ENVIRONMENT_EXIT, INPUT_EXIT = 1, 2


class EnvironmentFailure(Exception):
    """An environment failure already put in one line."""


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: the command stops at once, with one line (exit 128 + the signal's number).

    A BaseException, so that no `except Exception` on the way holds it up; `hint` says what to do next."""

    def __init__(self, signum: int, hint: str) -> None:
        super().__init__(signum, hint)
        self.signum, self.hint = signum, hint

    @property
    def line(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}; {self.hint}"


@contextmanager
def stop_on_signals(hint: str, prefix: str = "vividhead") -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM raise `Stopped` in the main thread: `vividhead.cli` ends the
    command with one line, exit 130 / 143 (`hint` says what to do next).

    - Install it before anything starts (a local Ray, threads): a signal at any moment then stops the same way.
    - A SIGINT that was ignored when the process started (a background job of a non-interactive shell) stays
      ignored, as Python itself leaves it.
    - The first signal lets the command tear down in order (a build shuts its Ray down, which takes seconds);
      a second signal meanwhile ends the process at once, with the same line (after `prefix: `).
    - Outside the main thread (where Python cannot set handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[int] = []

    def _stop(signum: int, _frame: Any) -> None:
        stop = Stopped(signum, hint)
        if stopping:                                   # a second signal during the first one's teardown
            print(f"{prefix}: {stop.line}", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        stopping.append(signum)
        raise stop

    catch = [signum for signum in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(signum) != signal.SIG_IGN]
    before = {signum: signal.signal(signum, _stop) for signum in catch}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


class InputError(ValueError):
    """Bad user input, already put in one line that names the file, argument or field and what was expected."""


def _chain(err: BaseException) -> Iterator[BaseException]:
    """The error, its causes and contexts, and a Ray task error's wrapped cause."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, getattr(current, "cause", None)]


def environment_message(err: BaseException, where: str | Path | None = None) -> str | None:
    """One line naming the path or cause when `err` is an environment failure, else None.

    `where` names the path when the OS error itself names none (a write to an open file): the output
    the command was writing."""
    for current in _chain(err):
        if isinstance(current, EnvironmentFailure):
            return str(current)
        if isinstance(current, OSError) and current.errno in ENVIRONMENT_ERRNOS:
            where = current.filename or current.filename2 or where
            return f"{where}: {ENVIRONMENT_ERRNOS[current.errno]}" if where else ENVIRONMENT_ERRNOS[current.errno]
        if type(current).__name__ in RAY_CLUSTER_ERRORS or (
                isinstance(current, ConnectionError) and "ray" in f"{type(current).__module__} {current}".lower()):
            first = (str(current).strip().splitlines() or [type(current).__name__])[0]
            return f"the Ray cluster cannot be reached or went away ({first[:200]})"
        if type(current).__name__ in STORE_ERRORS:                        # botocore: retries exhausted
            return f"the object store cannot be reached ({str(current).splitlines()[0][:200]})"
        if "node timed out during startup" in str(current):           # Ray's own words, a plain Exception
            return "the local Ray did not start in time (an overloaded machine or a full /tmp?)"
    return None


def failure_line(err: BaseException, where: str | Path | None = None,
                 input_errors: tuple[type[BaseException], ...] = ()) -> tuple[str, int] | None:
    """(one line, exit status) for bad input or an environment failure; None for anything else (a bug).

    `input_errors` are the library exceptions that the command declares to mean bad input."""
    if isinstance(err, (InputError, *input_errors)):
        return (str(err).strip().splitlines() or [type(err).__name__])[0], INPUT_EXIT
    message = environment_message(err, where)
    return None if message is None else (message, ENVIRONMENT_EXIT)


def check_out_dir(out: Path) -> None:
    """Raise EnvironmentFailure when `out` cannot be an output directory (a file, or under a file)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EnvironmentFailure(f"--out {out} is a file, not a directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise EnvironmentFailure(f"--out {out}: {parent} is a file, not a directory")
            break


def check_ray_address(address: str | None, timeout_s: float = 10.0) -> None:
    """Raise EnvironmentFailure when a HOST:PORT Ray address does not answer (Ray itself would retry forever)."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise EnvironmentFailure(f"cannot reach the Ray cluster at {address}: {err.strerror or err}") from err
