"""One build per output directory: the lock file `OUT/.build.lock`.

The lock is a small JSON record (host, pid, start time, a random token) created with a hard link
from a complete temporary file, which is atomic on local disks and on NFS alike, so a second build
sees either no lock or a whole one. While a build runs, a heartbeat thread touches the lock every
`heartbeat_s` seconds. A lock is stale, and is taken over, when its process is gone (same host)
or when its heartbeat is older than `stale_s` (any host: a preempted node cannot clean up after
itself on a shared filesystem). Takeover happens under a second, short-lived lock so that two
builds finding the same stale lock cannot both take it. Readers (`vividhead inspect`) never lock:
every file they read is renamed into place whole.

An output in a bucket (`s3://`) keeps the same lock as an object: it is created with a conditional
put (`If-None-Match: *`, `storage.create_exclusive`), so of two builds exactly one creates it; the
heartbeat rewrites it, and its age is the store's modification time (so the builds' clocks should
agree within `stale_s`). A store without conditional creates refuses to lock (docs/build.md).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vividhead.storage import Location, ObjectPath, create_exclusive, put_bytes

LOCK_NAME = ".build.lock"
HEARTBEAT_S = 10.0
STALE_S = 120.0


class LockHeld(Exception):
    """Another live build holds the lock; the message names it."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written in the lock file."""

    host: str
    pid: int
    started: str
    token: str

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started}"


def _me() -> Holder:
    return Holder(socket.gethostname(), os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  secrets.token_hex(8))


def _read(path: Location) -> tuple[Holder | None, float | None]:
    """The lock's holder (None when unreadable) and its heartbeat time (None when there is no lock)."""
    try:
        beat = path.stat().st_mtime
        data = json.loads(path.read_text())
        return Holder(str(data["host"]), int(data["pid"]), str(data["started"]), str(data["token"])), beat
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, KeyError, TypeError):
        try:
            return None, path.stat().st_mtime          # half-written by hand or corrupt: judged by its age
        except FileNotFoundError:
            return None, None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(holder: Holder | None, beat: float, stale_s: float, now: float | None = None) -> str | None:
    """Why a lock is stale (a dead process on this host, or no heartbeat for `stale_s`), or None if live."""
    age = (now if now is not None else time.time()) - beat
    if age > stale_s:
        return f"no heartbeat for {age:.0f} s"
    if holder is None:
        return None                                     # young and unreadable: being written, wait
    if holder.host == socket.gethostname() and not _pid_alive(holder.pid):
        return f"process {holder.pid} is gone"
    return None


def _link_new(path: Location, holder: Holder) -> bool:
    """Create `path` holding `holder` atomically; False when it already exists."""
    if isinstance(path, ObjectPath):
        return create_exclusive(path, json.dumps(asdict(holder)).encode())
    tmp = path.with_name(f"{path.name}.{holder.token}.tmp")
    tmp.write_text(json.dumps(asdict(holder)))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


class BuildLock:
    """The lock of one output directory; use as a context manager around a build."""

    def __init__(self, out: Location, wait: bool = False, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S,
                 poll_s: float = 2.0) -> None:
        self.out = out if isinstance(out, ObjectPath) else Path(out)
        self.path = self.out / LOCK_NAME
        self.wait, self.heartbeat_s, self.stale_s, self.poll_s = wait, heartbeat_s, stale_s, poll_s
        self.holder = _me()
        self.took_over: str | None = None               # why a stale lock was taken over, if one was
        self.lost = threading.Event()                    # set when another build took our lock away
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BuildLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; raise LockHeld (or wait, with `wait`) while it is live."""
        self.out.mkdir(parents=True, exist_ok=True)
        told = False
        while not self._try_once():
            holder, _ = _read(self.path)
            who = holder.describe() if holder else "a build whose lock is being written"
            if not self.wait:
                raise LockHeld(f"{self.out} is being built by {who} (lock {self.path}); "
                               "wait for it, or give --wait to start when it ends")
            if not told:
                print(f"waiting for the build of {self.out} by {who} ...", file=sys.stderr, flush=True)
                told = True
            time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._beat, name="vividhead-lock-heartbeat", daemon=True)
        self._thread.start()

    def _try_once(self) -> bool:
        if _link_new(self.path, self.holder):
            return True
        holder, beat = _read(self.path)
        if beat is None:
            return False                                 # removed meanwhile: try again at once next round
        reason = stale_reason(holder, beat, self.stale_s)
        if reason is None:
            return False
        return self._take_over(holder, reason)

    def _take_over(self, stale: Holder | None, reason: str) -> bool:
        """Replace a stale lock under the takeover guard, if it is still the same stale lock."""
        guard = self.path.with_name(self.path.name + ".takeover")
        if not _link_new(guard, self.holder):
            _, guard_beat = _read(guard)
            if guard_beat is not None and time.time() - guard_beat > self.stale_s:
                guard.unlink(missing_ok=True)            # a taker died mid-takeover
            return False
        try:
            holder, beat = _read(self.path)
            if beat is not None and (holder != stale or stale_reason(holder, beat, self.stale_s) is None):
                return False                             # someone else replaced it meanwhile
            self.path.unlink(missing_ok=True)
            if not _link_new(self.path, self.holder):
                return False
            who = stale.describe() if stale else "an unreadable lock"
            self.took_over = f"took over the stale lock of {who}: {reason}"
            print(f"vividhead: {self.took_over}", file=sys.stderr, flush=True)
            return True
        finally:
            guard.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            holder, beat = _read(self.path)
            if beat is None or (holder is not None and holder.token != self.holder.token):
                self.lost.set()
                print(f"vividhead: warning: lost the lock {self.path} to another build", file=sys.stderr, flush=True)
                return
            try:
                if isinstance(self.path, ObjectPath):
                    put_bytes(self.path, json.dumps(asdict(self.holder)).encode())
                else:
                    os.utime(self.path)
            except OSError:
                pass                                     # a full or read-only disk: the build itself reports it

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder, _ = _read(self.path)
        if holder is not None and holder.token == self.holder.token:
            self.path.unlink(missing_ok=True)
