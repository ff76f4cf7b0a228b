"""Politeness per host, across the processes of one machine: at most `per_host` downloads at once,
starts spaced by `spacing` seconds, and a shared backoff after a 429.

State lives in lock files under one folder (the build's downloads folder), so every Ray worker
process of the machine sees the same slots: a slot is an `flock` on `HOST.N.lock`; the next allowed
start and the backoff deadline are times in `HOST.next` and `HOST.backoff`, read and written under
an `flock` of `HOST.clock`.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


def host_of(url: str) -> str:
    """The host (and port) a URL goes to, as a safe file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", urlparse(url).netloc or "local")


@dataclass(frozen=True)
class HostGate:
    """Per-host limits, shared through lock files in `folder`."""

    folder: Path
    per_host: int = 2
    spacing: float = 1.0
    poll: float = 0.05

    @contextmanager
    def slot(self, url: str) -> Iterator[None]:
        """Hold one of the host's download slots, started no sooner than the spacing and backoff allow."""
        host = host_of(url)
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = self._take_slot(host)
        try:
            self._wait_turn(host)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)

    def back_off(self, url: str, seconds: float) -> None:
        """Ask every download to this host to wait `seconds` from now (a 429 slows the whole host)."""
        host = host_of(url)
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._clock(host):
            path = self.folder / f"{host}.backoff"
            until = max(_read_time(path), time.time() + seconds)
            path.write_text(f"{until:.3f}")

    def _take_slot(self, host: str) -> int:
        while True:
            for index in range(self.per_host):
                handle = os.open(self.folder / f"{host}.{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return handle
                except BlockingIOError:
                    os.close(handle)
            time.sleep(self.poll)

    def _wait_turn(self, host: str) -> None:
        """Reserve the next start time of the host (after its backoff), then sleep until it."""
        with self._clock(host):
            next_path = self.folder / f"{host}.next"
            start = max(time.time(), _read_time(next_path), _read_time(self.folder / f"{host}.backoff"))
            next_path.write_text(f"{start + self.spacing:.3f}")
        time.sleep(max(0.0, start - time.time()))

    @contextmanager
    def _clock(self, host: str) -> Iterator[None]:
        handle = os.open(self.folder / f"{host}.clock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)


def backoff_seconds(attempt: int, base: float, most: float) -> float:
    """Exponential backoff: base x 2^attempt, at most `most`."""
    return min(most, base * 2 ** attempt)


def _read_time(path: Path) -> float:
    try:
        return float(path.read_text() or 0)
    except (OSError, ValueError):
        return 0.0
