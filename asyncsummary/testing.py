"""Sinks for tests and benchmarks: slow, stalled and failing storage.

They wrap a real sink (usually :class:`asyncsummary.FileSink`) and are passed to a
writer through ``sink_factory``::

    gate = threading.Event()
    w = AsyncSummaryWriter(logdir, sink_factory=lambda p: GatedSink(FileSink(p), gate))

Latency is injected as a *blocking* sleep on the I/O executor thread, before the real
write, which is how a slow NFS or FUSE write looks to a process.
"""

from __future__ import annotations

import asyncio
import errno
import threading
import time

from ._sinks import Sink

__all__ = ["DelayedSink", "FailingSink", "GatedSink", "WrappedSink"]


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


class DelayedSink(WrappedSink):
    """Every write (and flush) first blocks an executor thread for ``delay`` seconds."""

    def __init__(self, inner: Sink, delay: float) -> None:
        super().__init__(inner)
        self.delay = delay
        self.writes = 0

    async def write(self, data: memoryview) -> int:
        await asyncio.get_running_loop().run_in_executor(None, time.sleep, self.delay)
        self.writes += 1
        return await self.inner.write(data)


class GatedSink(WrappedSink):
    """Writes wait until ``gate`` (a ``threading.Event``) is set: a stalled storage.

    ``entered`` is set when a write starts waiting, so tests can wait for the stall
    with an Event instead of a sleep.
    """

    def __init__(self, inner: Sink, gate: threading.Event) -> None:
        super().__init__(inner)
        self.gate = gate
        self.entered = threading.Event()

    async def write(self, data: memoryview) -> int:
        if not self.gate.is_set():
            self.entered.set()
            await asyncio.get_running_loop().run_in_executor(None, self.gate.wait)
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
