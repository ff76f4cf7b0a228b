"""Shared generation: the DiT and VAE calls of concurrent stream sessions run together, batched.

Each session keeps generating in its own thread through the unchanged engine code (`StreamSession.chunks`),
with its own audio cache, motion latents and noise generator. `Batcher.engine(engine)` gives a view of the
engine whose `denoiser` and `codec` are proxies: a call from a session thread is queued, and one executor
thread runs every queued call of the same function and shapes as ONE call with the rows concatenated on the
batch dimension, then hands each session its rows. Calls whose shapes or options differ run as separate
batches (a call given its own `torch.Generator`, such as an LTX posterior sample, is never merged with
another session's).

The executor gathers: after the first call of a round it waits until every session that is inside a chunk
(`Batcher.generating`) has queued a call, or a window has passed: `gather_s`, or half the mean duration of
recent batched calls when that is longer (a straggler still encoding its audio is worth waiting for when
its own call would cost a whole model call). Of the calls gathered, those of the earliest stage of a chunk
(DiT, then VAE decode, then the motion re-encode) run; later-stage calls wait for the next round, so sessions
that drifted apart fall back into step and share every DiT step and VAE call. A session alone pays nothing
(it is the only one generating).
Noise is drawn by each session from its own generator before the call, so a session's frames do not depend
on who else is connected (only on float rounding of the batched matmuls; see tests/test_stream_server.py).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class _Call:
    name: str
    fn: Callable[..., torch.Tensor]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    rows: int
    future: Future = field(default_factory=Future)

    def key(self) -> tuple:
        """Calls with equal keys can be concatenated: same function, same shapes past the batch dim, same options."""
        def sig(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return ("tensor", tuple(value.shape[1:]), value.dtype, value.device)
            return ("value", repr(value))
        owner = id(getattr(self.fn, "__self__", self.fn))            # the module or codec the call belongs to
        return (self.name, owner, tuple(sig(a) for a in self.args),
                tuple((k, sig(v)) for k, v in sorted(self.kwargs.items())))


@dataclass
class BatchStats:
    """How the executor batched: calls and rows per function name."""

    calls: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def record(self, name: str, rows: int) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        self.rows[name] = self.rows.get(name, 0) + rows

    def mean_batch(self, name: str) -> float:
        return self.rows.get(name, 0) / self.calls[name] if self.calls.get(name) else 0.0


class Batcher:
    """One executor thread that runs queued DiT/VAE calls of all sessions as batched calls."""

    def __init__(self, gather_s: float = 0.01, max_rows: int = 16) -> None:
        self.gather_s, self.max_rows = gather_s, max_rows
        self.queue: list[_Call] = []
        self.active = 0                              # sessions inside a chunk (may queue a call soon)
        self.cond = threading.Condition()
        self.stats = BatchStats()
        self.call_s = 0.0                            # running mean of a batched call's duration
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True, name="vividhead-batcher")
        self.thread.start()

    def engine(self, engine):
        """A view of `engine` whose DiT and codec calls go through this batcher (the model is shared, not copied)."""
        view = copy.copy(engine)
        view.denoiser = _BatchedModule(self, "dit", engine.denoiser)
        view.codec = _BatchedCodec(self, engine.codec)
        return view

    @contextmanager
    def generating(self) -> Iterator[None]:
        """Mark the calling session as inside a chunk for as long as the block runs."""
        with self.cond:
            self.active += 1
        try:
            yield
        finally:
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    def call(self, name: str, fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run fn(*args, **kwargs) batched with other sessions' calls; blocks the calling session thread."""
        rows = next(a.shape[0] for a in args if isinstance(a, torch.Tensor))
        call = _Call(name, fn, args, kwargs, rows)
        with self.cond:
            if self.closed:
                raise RuntimeError("the batcher is closed")
            self.queue.append(call)
            self.cond.notify_all()
        return call.future.result()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join(10)

    # ------------------------------------------------------------------------------ executor
    def _loop(self) -> None:
        while (batch := self._gather()) is not None:
            earliest = min(_stage(call.name) for call in batch)
            later = [call for call in batch if _stage(call.name) > earliest]
            if later:                             # they wait for the sessions still at an earlier stage
                with self.cond:
                    self.queue[:0] = later
            groups: dict[tuple, list[_Call]] = {}
            for call in batch:
                if _stage(call.name) == earliest:
                    groups.setdefault(call.key(), []).append(call)
            for calls in groups.values():
                for start in range(0, len(calls), self.max_rows):
                    self._run(calls[start: start + self.max_rows])

    def _gather(self) -> list[_Call] | None:
        with self.cond:
            while not self.queue and not self.closed:
                self.cond.wait()
            if self.closed:
                for call in self.queue:
                    call.future.set_exception(RuntimeError("the batcher is closed"))
                return None
            deadline = time.monotonic() + max(self.gather_s, 0.5 * self.call_s)
            while len(self.queue) < self.active and (left := deadline - time.monotonic()) > 0:
                self.cond.wait(left)
            batch, self.queue = self.queue, []
            return batch

    def _run(self, calls: list[_Call]) -> None:
        first = calls[0]
        started = time.monotonic()
        try:
            with torch.inference_mode():
                if len(calls) == 1:
                    out = first.fn(*first.args, **first.kwargs)
                else:
                    args = tuple(_cat([c.args[i] for c in calls]) for i in range(len(first.args)))
                    kwargs = {k: _cat([c.kwargs[k] for c in calls]) for k in first.kwargs}
                    out = first.fn(*args, **kwargs)
        except BaseException as err:          # the sessions of this batch see the error; the executor goes on
            for call in calls:
                call.future.set_exception(err)
            return
        self.stats.record(first.name, sum(c.rows for c in calls))
        self.call_s = 0.8 * self.call_s + 0.2 * (time.monotonic() - started)
        start = 0
        for call in calls:
            call.future.set_result(out[start: start + call.rows])
            start += call.rows


STAGES = ("dit", "vae_decode", "vae_encode")       # the order of a chunk's batched calls


def _stage(name: str) -> int:
    return STAGES.index(name) if name in STAGES else len(STAGES)


def _cat(values: list[Any]) -> Any:
    """Tensors concatenated on the batch dimension; anything else is equal across the group (it is in the key)."""
    return torch.cat(values) if isinstance(values[0], torch.Tensor) else values[0]


class _BatchedModule:
    """Calls go through the batcher; every other attribute is the wrapped module's."""

    def __init__(self, batcher: Batcher, name: str, module: Any) -> None:
        self._batcher, self._name, self._module = batcher, name, module

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._batcher.call(self._name, self._module, *args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._module, attr)


class _BatchedCodec:
    """`encode` and `decode` go through the batcher; every other attribute is the wrapped codec's."""

    def __init__(self, batcher: Batcher, codec: Any) -> None:
        self._batcher, self._codec = batcher, codec

    def encode(self, video: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self._batcher.call("vae_encode", self._codec.encode, video, **kwargs)

    def decode(self, latent: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self._batcher.call("vae_decode", self._codec.decode, latent, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._codec, attr)
