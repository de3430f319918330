"""Sinks for tests and benchmarks: slow, stalled and failing storage.

They wrap a real sink (usually :class:`asyncsummary.FileSink`) and are passed to a
writer through ``sink_factory``::

    gate = threading.Event()
    w = AsyncSummaryWriter(logdir, sink_factory=lambda p: GatedSink(FileSink(p), gate))

Latency is injected as a *blocking* sleep on the thread that runs the wrapped sink's
storage calls (``Sink.run_blocking``: a file sink's own thread), before the real
write, which is how a slow NFS or FUSE write looks to a process.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._sinks import Sink

__all__ = ["DelayedSink", "FailingSink", "GatedSink", "WrappedSink"]

T = TypeVar("T")


class WrappedSink(Sink):
    """Forwards everything to ``inner``; subclasses change one step."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.name = inner.name

    async def open(self) -> None:
        await self.inner.open()

    async def write(self, data: memoryview) -> int:
        return await self.inner.write(data)

    async def flush(self, sync: bool, *, explicit: bool = True) -> bool | None:
        return await self.inner.flush(sync, explicit=explicit)

    async def close(self) -> None:
        await self.inner.close()

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.inner.run_blocking(fn, *args)


class DelayedSink(WrappedSink):
    """Every write (and flush) first blocks an executor thread for ``delay`` seconds."""

    def __init__(self, inner: Sink, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.writes = 0

    async def write(self, data: memoryview) -> int:
        await self.inner.run_blocking(time.sleep, self.delay)
        self.writes += 1
        return await self.inner.write(data)


class GatedSink(WrappedSink):
    """Writes wait until ``gate`` (a ``threading.Event``) is set: a stalled storage.

    The wait blocks the thread a hung write would block (the wrapped sink's, see
    ``Sink.run_blocking``). ``entered`` is set when a write starts waiting, so tests
    can wait for the stall with an Event instead of a sleep.
    """

    def __init__(self, inner: Sink, gate: threading.Event) -> None:
        super().__init__(inner)
        self.gate = gate
        self.entered = threading.Event()

    async def write(self, data: memoryview) -> int:
        if not self.gate.is_set():
            self.entered.set()
            await self.inner.run_blocking(self.gate.wait)
        return await self.inner.write(data)


class FailingSink(WrappedSink):
    """Writes raise ``OSError(code)`` while ``failing`` is set (a ``threading.Event``)."""

    def __init__(self, inner: Sink, failing: threading.Event, code: int = errno.ENOSPC) -> None:
        super().__init__(inner)
        self.failing = failing
        self.code = code
        self.failures = 0

    async def write(self, data: memoryview) -> int:
        if self.failing.is_set():
            self.failures += 1
            raise OSError(self.code, "injected failure", self.name)
        return await self.inner.write(data)
