"""The async API: never blocks the caller's event loop; uvloop runs the writer's."""

from __future__ import annotations

import asyncio

import pytest

import asyncsummary
from asyncsummary import AsyncSummaryWriter, FileSink, FlushTimeoutError, WriterClosedError
from asyncsummary.testing import DelayedSink

from .readers import scalars


async def test_async_with_writes_and_closes(logdir):
    async with AsyncSummaryWriter(logdir) as writer:
        for step in range(100):
            writer.add_scalar("x", step, step)
        await writer.aflush()
        assert writer.stats().written == 100
    assert writer.closed
    with pytest.raises(WriterClosedError):
        writer.add_scalar("x", 0.0, 0)
    assert [s for s, _, _ in scalars(logdir)] == list(range(100))


async def test_aflush_does_not_block_the_running_loop(logdir):
    """A ticker keeps ticking while a slowed sink flushes."""
    sinks = []

    def slow(path):
        sinks.append(DelayedSink(FileSink(path), 0.1))
        return sinks[-1]

    writer = AsyncSummaryWriter(logdir, sink_factory=slow, flush_secs=3600)
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    for step in range(10):
        writer.add_scalar("x", step, step)
    await writer.aflush()  # file header + batch: at least two writes of 100 ms
    stop.set()
    await task
    assert sinks[0].writes >= 1
    assert ticks >= 10  # the loop ran the ticker during the ~200 ms flush
    await writer.aclose()
    assert [s for s, _, _ in scalars(logdir)] == list(range(10))


async def test_aflush_timeout_raises_and_keeps_events(logdir):
    writer = AsyncSummaryWriter(logdir, sink_factory=lambda p: DelayedSink(FileSink(p), 0.5), flush_secs=3600)
    writer.add_scalar("x", 1.0, 1)
    with pytest.raises(FlushTimeoutError):
        await writer.aflush(timeout=0.05)
    await writer.aclose()
    assert scalars(logdir) == [(1, "x", 1.0)]


async def test_aflush_all(logdir):
    writers = [AsyncSummaryWriter(f"{logdir}/{i}", flush_secs=3600) for i in range(3)]
    for i, writer in enumerate(writers):
        writer.add_scalar("x", float(i), i)
    await asyncsummary.aflush_all()
    for i in range(3):
        assert scalars(f"{logdir}/{i}") == [(i, "x", float(i))]
    for writer in writers:
        await writer.aclose()


def test_writer_loop_is_uvloop():
    assert asyncsummary.loop_implementation() == "uvloop"
