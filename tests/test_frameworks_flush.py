"""``flush_waits=False``: a ``flush()`` that asks for the write and returns at once.

Frameworks (Lightning, Hugging Face, accelerate) call ``flush()`` after every logged
step. These tests pin down what the option keeps and what it trades: the flush returns
while the storage is stalled, yet it does make the loop write and flush; write errors
still reach the caller, on the next call; ``close()``, exit and ``flush_secs`` still
bound what is lost; the default (``True``) still waits.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest

from asyncsummary import (
    AsyncSummaryWriter,
    FileSink,
    FlushTimeoutError,
    WriteError,
    WriterClosedError,
)
from asyncsummary._loop import run_coroutine
from asyncsummary.testing import FailingSink, GatedSink

from .readers import event_files, scalars


def _wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class _RecordingGatedSink(GatedSink):
    """A GatedSink that sets ``flushed`` when the engine flushes it (fsync, upload)."""

    def __init__(self, inner, gate):
        super().__init__(inner, gate)
        self.flushed = threading.Event()

    async def flush(self, sync, *, explicit=True):
        result = await super().flush(sync, explicit=explicit)
        self.flushed.set()
        return result


def _gated(logdir, gate, **options):
    sinks = []

    def factory(path):
        sinks.append(_RecordingGatedSink(FileSink(path), gate))
        return sinks[-1]

    options.setdefault("flush_secs", 3600)
    return AsyncSummaryWriter(logdir, sink_factory=factory, **options), sinks


class _FailOnceSink(FailingSink):
    """Its first write fails (ENOSPC); it sets ``failed`` then, on the loop thread.

    Failing once keeps the test exact: the engine's retry succeeds, so the one
    stored error is the only one any later call can raise.
    """

    def __init__(self, inner, failed):
        failing = threading.Event()
        failing.set()
        super().__init__(inner, failing)
        self.failed = failed

    async def write(self, data):
        try:
            return await super().write(data)
        except OSError:
            self.failing.clear()
            self.failed.set()
            raise


def _loop_caught_up():
    """Return once the loop ran everything scheduled before this call.

    The engine records a failed write in the same loop callback in which the sink
    raised, so after the sink's ``failed`` event this makes the error observable.
    """

    async def nothing():
        return None

    run_coroutine(nothing()).result(10)


def test_flush_returns_while_the_storage_is_stalled_yet_asks_for_the_write(logdir):
    gate = threading.Event()
    writer, sinks = _gated(logdir, gate, flush_waits=False)
    for step in range(10):
        writer.add_scalar("x", step, step)
    writer.flush()  # returns although nothing can be written
    # flush_secs=3600 and 10 events are far below batch_bytes: only the flush
    # request can have started this write.
    _wait_until(lambda: sinks and sinks[0].entered.is_set())
    assert writer.stats().written == 0
    for _ in range(100):
        writer.flush()  # repeated requests on a stalled storage neither wait nor pile up
    assert not sinks[0].flushed.is_set()
    gate.set()
    # No further call: the request alone writes the events and flushes the file.
    assert sinks[0].flushed.wait(20)
    assert len(scalars(logdir)) == 10
    writer.close()
    assert [s for s, _, _ in scalars(logdir)] == list(range(10))


def test_default_flush_still_waits_for_the_storage(logdir):
    gate = threading.Event()
    writer, sinks = _gated(logdir, gate)
    assert writer.flush_waits is True
    writer.add_scalar("x", 1.0, 1)
    with pytest.raises(FlushTimeoutError):
        writer.flush(timeout=0.2)
    gate.set()
    writer.flush(timeout=10)
    assert scalars(logdir) == [(1, "x", 1.0)]
    writer.close()


@pytest.mark.parametrize("next_call", ["add", "flush", "close"])
def test_write_error_is_raised_by_the_next_call(logdir, next_call):
    failed = threading.Event()
    writer = AsyncSummaryWriter(
        logdir,
        flush_secs=3600,
        flush_waits=False,
        sink_factory=lambda p: _FailOnceSink(FileSink(p), failed),
    )
    writer.add_scalar("x", 0.0, 0)
    writer.flush()  # asks; the write fails on the loop
    assert failed.wait(10)
    _loop_caught_up()
    if next_call == "close":
        with pytest.raises(WriteError) as info:  # after writing everything
            writer.close(timeout=10)
    else:
        with pytest.raises(WriteError) as info:
            if next_call == "add":
                writer.add_scalar("x", 1.0, 1)
            else:
                writer.flush()
    assert isinstance(info.value.__cause__, OSError)
    if next_call != "close":
        writer.add_scalar("x", 2.0, 2)  # raised once: this call goes through
        writer.close(timeout=10)  # the kept events are written on the retry
    assert [s for s, _, _ in scalars(logdir)] == {"close": [0], "add": [0, 1, 2]}.get(next_call, [0, 2])  # an add that raises has queued its event
    assert writer.stats().lost == 0


def test_close_waits_and_writes_everything(logdir):
    gate = threading.Event()
    writer, _ = _gated(logdir, gate, flush_waits=False)
    for step in range(500):
        writer.add_scalar("x", step, step)
        writer.flush()
    with pytest.raises(FlushTimeoutError):
        writer.close(timeout=0.2)  # close() is bounded, and waits: the storage is stalled
    gate.set()
    _wait_until(lambda: writer.stats().written == 500)  # the loop keeps going after it
    assert [s for s, _, _ in scalars(logdir)] == list(range(500))


def test_close_after_release_has_every_event_on_disk(logdir):
    gate = threading.Event()
    writer, _ = _gated(logdir, gate, flush_waits=False)
    for step in range(200):
        writer.add_scalar("x", step, step)
        writer.flush()
    gate.set()
    writer.close(timeout=10)
    assert [s for s, _, _ in scalars(logdir)] == list(range(200))
    with pytest.raises(WriterClosedError):
        writer.flush()


def test_flush_secs_still_writes_without_any_flush(logdir):
    writer = AsyncSummaryWriter(logdir, flush_secs=0.2, flush_waits=False)
    writer.add_scalar("x", 1.0, 1)
    _wait_until(lambda: event_files(logdir) and scalars(logdir) == [(1, "x", 1.0)])
    writer.close()


def test_exit_without_close_writes_everything(tmp_path):
    logdir = str(tmp_path / "run")
    code = (
        "import sys, threading\n"
        "from asyncsummary import AsyncSummaryWriter, FileSink\n"
        "from asyncsummary.testing import DelayedSink\n"
        "w = AsyncSummaryWriter(sys.argv[1], flush_secs=3600, flush_waits=False,\n"
        "                       sink_factory=lambda p: DelayedSink(FileSink(p), 0.05))\n"
        "for step in range(300):\n"
        "    w.add_scalar('x', step, step)\n"
        "    w.flush()\n"
        "print('ADDED', flush=True)\n"  # exits here: atexit closes the writer
    )
    out = subprocess.run(
        [sys.executable, "-c", code, logdir],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "ADDED"
    assert [s for s, _, _ in scalars(logdir)] == list(range(300))


async def test_aflush_does_not_wait_either(logdir):
    gate = threading.Event()
    writer, sinks = _gated(logdir, gate, flush_waits=False)
    writer.add_scalar("x", 1.0, 1)
    await asyncio.wait_for(writer.aflush(), 5)  # returns although the storage is stalled
    _wait_until(lambda: sinks and sinks[0].entered.is_set())
    gate.set()
    await writer.aclose()
    assert scalars(logdir) == [(1, "x", 1.0)]


def test_flush_waits_must_be_a_bool(logdir):
    with pytest.raises(TypeError):
        AsyncSummaryWriter(logdir, flush_waits="no")


def test_torch_writer_flush_does_not_wait_for_runs_or_hparams(tmp_path):
    from asyncsummary import SummaryWriter

    gate = threading.Event()
    sinks = []

    def factory(path):
        sinks.append(GatedSink(FileSink(path), gate))
        return sinks[-1]

    logdir = str(tmp_path / "run")
    writer = SummaryWriter(logdir, flush_waits=False, sink_factory=factory, flush_secs=3600)
    for step in range(20):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.add_scalars("pair", {"a": step, "b": -step}, step)
    writer.add_hparams({"lr": 0.1}, {"hp/acc": 0.5}, run_name="hp")  # closed in the background
    writer.flush()  # returns although no run can be written
    _wait_until(lambda: sinks and any(s.entered.is_set() for s in sinks))
    gate.set()
    writer.close()
    assert [s for s, _, _ in scalars(logdir)] == list(range(20))
    assert len(scalars(str(tmp_path / "run" / "pair_a"))) == 20
    assert [t for _, t, _ in scalars(str(tmp_path / "run" / "hp"))] == ["hp/acc"]


def test_flushes_every_step_are_coalesced_yet_each_one_is_written(logdir):
    """Per-step flushes wake the loop about ten times a second, not per call, and a
    flush that did not wake it is still written (the loop looks at the flag itself)."""
    writer = AsyncSummaryWriter(logdir, flush_secs=3600, flush_waits=False)
    for step in range(1000):
        writer.add_scalar("x", step, step)
        writer.flush()
    # No further call needed: the last flushes did not wake the loop, it looked itself.
    _wait_until(lambda: writer.stats().written == 1000)
    assert writer.stats().flushes < 100
    writer.add_scalar("x", 1000, 1000)
    writer.flush()  # woken or looked at: written either way
    _wait_until(lambda: len(scalars(logdir)) == 1001)
    writer.close()
