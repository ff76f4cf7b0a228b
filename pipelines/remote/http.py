"""Plain http(s) file downloads (`url:` sources): an overall deadline, a minimum rate, a size cap, 429 backoff.

`run.download_timeout` bounds one read; `run.download_deadline` bounds the whole transfer and
`run.download_min_rate` (bytes/s over `run.download_rate_window`) ends a trickle that sends a byte
now and then, so no server can hold a build forever. A 429 backs the host off and retries.
"""

from __future__ import annotations

import hashlib
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vividhead.media import MediaError
from vividhead.pipelines.remote.hosts import HostGate, backoff_seconds


@dataclass(frozen=True)
class Limits:
    """What one transfer may take: per-read timeout, overall deadline, minimum rate, size cap (from `run`)."""

    read_timeout: float
    deadline: float
    min_rate: float
    rate_window: float
    max_bytes: int

    @classmethod
    def of(cls, run) -> "Limits":
        return cls(run.download_timeout, run.download_deadline, run.download_min_rate, run.download_rate_window,
                   run.max_download_bytes)


class RateWatch:
    """Raises MediaError when a transfer passes its deadline or runs below the minimum rate."""

    def __init__(self, what: str, limits: Limits, clock=time.monotonic) -> None:
        self.what, self.limits, self.clock = what, limits, clock
        self.started = clock()
        self.window_start, self.window_bytes = self.started, 0

    def remaining(self) -> float:
        return self.limits.deadline - (self.clock() - self.started)

    def check(self, new_bytes: int) -> None:
        """Count `new_bytes`; fail past the deadline, or when the last full window was too slow."""
        now = self.clock()
        self.window_bytes += new_bytes
        if now - self.started > self.limits.deadline:
            raise MediaError("download_deadline",
                             f"{self.what}: not finished within run.download_deadline {self.limits.deadline:g} s")
        span = now - self.window_start
        if span >= self.limits.rate_window:
            rate = self.window_bytes / span
            if rate < self.limits.min_rate:
                raise MediaError("download_too_slow", f"{self.what}: {rate:.1f} bytes/s over {span:.0f} s, below "
                                                      f"run.download_min_rate {self.limits.min_rate:g}")
            self.window_start, self.window_bytes = now, 0


def fetch_file(url: str, downloads: Path, limits: Limits, gate: HostGate, retries: int = 4,
               backoff: float = 5.0, max_backoff: float = 300.0) -> Path:
    """The local copy of `url` in `downloads` (downloaded once; a re-run finds it)."""
    name = hashlib.sha1(url.encode()).hexdigest()[:16]
    target = downloads / f"{name}{Path(url.split('?')[0]).suffix[:8]}"
    if target.exists():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    partial = downloads / f".{target.name}.part"
    for attempt in range(retries + 1):
        try:
            with gate.slot(url):
                download(url, partial, limits)
            break
        except MediaError as err:
            partial.unlink(missing_ok=True)
            if err.reason != "rate_limited" or attempt == retries:
                raise
            gate.back_off(url, backoff_seconds(attempt, backoff, max_backoff))
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    partial.replace(target)
    return target


def download(url: str, partial: Path, limits: Limits) -> None:
    """Stream `url` into `partial`; every failure is a MediaError with its reason."""
    watch = RateWatch(url, limits)
    try:
        with urllib.request.urlopen(url, timeout=min(limits.read_timeout, limits.deadline)) as response:
            length = int(response.headers.get("Content-Length") or 0)
            if length > limits.max_bytes:
                raise MediaError("download_too_large",
                                 f"{url}: {length} bytes > run.max_download_bytes {limits.max_bytes}")
            with open(partial, "wb") as handle:
                _copy(response, handle, url, limits, watch)
    except urllib.error.HTTPError as err:
        raise MediaError(http_reason(err.code), f"{url}: HTTP {err.code} {err.reason}") from None
    except (socket.timeout, TimeoutError):
        if watch.remaining() <= 0:
            raise MediaError("download_deadline",
                             f"{url}: not finished within run.download_deadline {limits.deadline:g} s") from None
        raise MediaError("download_stalled",
                         f"{url}: no data for run.download_timeout {limits.read_timeout} s") from None
    except urllib.error.URLError as err:
        raise MediaError("download_failed", f"{url}: {err.reason}") from None


def _copy(response, handle: BinaryIO, url: str, limits: Limits, watch: RateWatch) -> None:
    size = 0
    sock = _socket_of(response)
    while True:
        if sock is not None:              # a blocked read ends by the deadline too, not only by the read timeout
            sock.settimeout(max(0.01, min(limits.read_timeout, watch.remaining())))
        chunk = response.read1(1 << 20) if hasattr(response, "read1") else response.read(1 << 20)
        if not chunk:
            watch.check(0)
            return
        size += len(chunk)
        if size > limits.max_bytes:
            raise MediaError("download_too_large", f"{url}: more than run.max_download_bytes {limits.max_bytes} bytes")
        handle.write(chunk)
        watch.check(len(chunk))


def _socket_of(response) -> socket.socket | None:
    """The socket under an http.client response, when it can be reached (to shorten its timeout)."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    return getattr(raw, "_sock", None)


def http_reason(code: int) -> str:
    """The reason of an HTTP error status of a plain file: a 429 is retried; the rest fail as `download_failed`."""
    return "rate_limited" if code == 429 else "download_failed"
