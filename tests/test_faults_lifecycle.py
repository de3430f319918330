"""Use after close, double close, reopen, flush on a closed writer: one documented thing each.

* every ``add_*``, ``flush()`` and ``aflush()`` on a closed writer raises
  :class:`WriterClosedError` (a ``ValueError``, like a closed file) and writes nothing;
  ``stats()``, ``get_logdir()`` and ``closed`` keep working;
* ``close()``/``aclose()`` on a closed writer return at once and do nothing (also
  after a close that failed);
* ``reopen()`` after ``close()`` accepts events again, into a new event file that
  sorts after the old one (left untouched); on an open writer it does nothing;
* ``close()`` releases a thread blocked in ``add`` (policy ``block``) at once, with
  :class:`WriterClosedError`.
"""

from __future__ import annotations

import errno
import threading
import time

import pytest
from tensorboard.compat.proto import config_pb2, event_pb2, graph_pb2, meta_graph_pb2, summary_pb2

from asyncsummary import (
    AsyncSummaryWriter,
    FileSink,
    FlushTimeoutError,
    WriteError,
    WriterClosedError,
)
from asyncsummary._engine import ITEM_OVERHEAD
from asyncsummary.testing import FailingSink, GatedSink

from .procs import read_run
from .readers import event_files

ADDS = {
    "add_scalar": ("x", 1.0, 7),
    "add_summary": (summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="s", simple_value=1.0)]), 7),
    "add_event": (event_pb2.Event(step=7),),
    "add_session_log": (event_pb2.SessionLog(status=event_pb2.SessionLog.START), 7),
    "add_graph": (graph_pb2.GraphDef(),),
    "add_meta_graph": (meta_graph_pb2.MetaGraphDef(),),
    "add_run_metadata": (config_pb2.RunMetadata(), "run"),
}


def _steps(logdir: str) -> list[list[int]]:
    """Steps of the events of each file (headers left out), files in name order."""
    return [[e.step for e in f.events[1:]] for f in read_run(logdir)]


def test_use_after_close_raises_and_writes_nothing(logdir):
    writer = AsyncSummaryWriter(logdir)
    writer.add_scalar("x", 0.0, 0)
    writer.close()
    (path,) = event_files(logdir)
    with open(path, "rb") as f:
        before = f.read()
    for method, args in ADDS.items():
        with pytest.raises(WriterClosedError):
            getattr(writer, method)(*args)
    with pytest.raises(WriterClosedError):
        writer.flush()
    with pytest.raises(ValueError):  # as writing to a closed file
        writer.add_scalar("x", 1.0, 1)
    assert writer.closed and writer.get_logdir() == logdir
    assert writer.stats().queued == 1
    with open(path, "rb") as f:
        assert f.read() == before
    assert event_files(logdir) == [path]


async def test_async_use_after_close(logdir):
    writer = AsyncSummaryWriter(logdir)
    writer.add_scalar("x", 0.0, 0)
    await writer.aclose()
    await writer.aclose()  # a no-op
    with pytest.raises(WriterClosedError):
        await writer.aflush()
    writer.close()  # a no-op too
    assert _steps(logdir) == [[0]]


def test_double_close_is_a_no_op(logdir):
    writer = AsyncSummaryWriter(logdir)
    writer.add_scalar("x", 0.0, 0)
    writer.close()
    stats = writer.stats()
    assert writer.close() is None
    assert writer.close(timeout=0.0) is None
    assert writer.stats() == stats
    with writer:  # the context manager's close is one more no-op
        pass
    assert _steps(logdir) == [[0]]


def test_close_after_a_failed_close_is_a_no_op(logdir):
    failing = threading.Event()
    failing.set()
    writer = AsyncSummaryWriter(logdir, sink_factory=lambda p: FailingSink(FileSink(p), failing))
    for step in range(10):
        writer.add_scalar("x", step, step)
    with pytest.raises(WriteError, match="10 events could not be written") as info:
        writer.close(timeout=0.3)
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert writer.closed and writer.stats().lost == 10
    writer.close()  # no second error: it was raised once
    failing.clear()
    writer.reopen()  # and the writer can start over
    writer.add_scalar("x", 10.0, 10)
    writer.close()
    assert _steps(logdir)[-1] == [10]


def test_reopen_after_close_writes_a_new_file(logdir):
    writer = AsyncSummaryWriter(logdir)
    writer.add_scalar("x", 0.0, 0)
    writer.close()
    (first,) = event_files(logdir)
    with open(first, "rb") as f:
        before = f.read()
    writer.reopen()
    assert not writer.closed
    writer.add_scalar("x", 1.0, 1)
    writer.flush()
    # A reopened writer is a new writer on the same folder: its own file and counters.
    assert writer.stats().queued == 1 and len(writer.stats().files) == 1
    writer.close()
    files = event_files(logdir)
    assert len(files) == 2 and files[0] == first  # the new file sorts after the old one
    with open(first, "rb") as f:
        assert f.read() == before
    assert _steps(logdir) == [[0], [1]]


def test_reopen_of_an_open_writer_does_nothing(logdir):
    writer = AsyncSummaryWriter(logdir)
    writer.add_scalar("x", 0.0, 0)
    writer.reopen()
    writer.add_scalar("x", 1.0, 1)
    writer.close()
    assert _steps(logdir) == [[0, 1]]


def test_close_releases_a_thread_blocked_in_add(logdir):
    gate = threading.Event()
    writer = AsyncSummaryWriter(
        logdir, sink_factory=lambda p: GatedSink(FileSink(p), gate),
        max_pending_bytes=4096, batch_bytes=1024, block_timeout=60,
    )
    outcome: list[BaseException | None] = []

    def train():
        try:
            for step in range(10_000):  # far beyond the bound: blocks on the stalled sink
                writer.add_scalar("x", step, step)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    thread = threading.Thread(target=train, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 30
        size = ITEM_OVERHEAD + 4 * len("x") + 8  # what add_scalar("x", ...) counts
        while writer.stats().pending_bytes + size <= 4096:  # until the next add must wait
            assert time.monotonic() < deadline, "the pending buffer never filled up"
            time.sleep(0.005)
        assert thread.is_alive()
        with pytest.raises(FlushTimeoutError):  # the close itself times out: the sink hangs
            writer.close(timeout=0.2)
        thread.join(30)
        assert not thread.is_alive(), "close() left a thread blocked in add()"
        assert isinstance(outcome[0], WriterClosedError)
    finally:
        gate.set()
