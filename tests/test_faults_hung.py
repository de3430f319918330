"""Hung storage stalls only the writers on it; every other writer of the process goes on.

A hung mount (a dead NFS server, a stuck FUSE daemon) makes ``write(2)`` never return:
the thread that called it is stuck for good. Each file sink runs its storage calls on
a thread of its own, so a hung file holds that thread only:

* six writers whose storage hangs (a :class:`GatedSink` per writer, blocking the
  thread of its own file, as a hung write does), and one writer on healthy local
  disk: the healthy one writes all its events and its ``flush()`` returns; when the
  storage comes back, every event of every writer is on disk, counts exact;
* ``flush_all`` flushes every writer at once: a hung writer opened first times out
  (``FlushTimeoutError``, raised after all), and the healthy one's events are on disk
  when ``flush_all`` returns.

Read back with TensorBoard's loader and ``tf.data``, counts exact.
"""

from __future__ import annotations

import threading
import time

import pytest

from asyncsummary import AsyncSummaryWriter, FileSink, FlushTimeoutError, flush_all
from asyncsummary.testing import GatedSink

from .procs import DEADLINE, read_run

HUNG_WRITERS = 6


def _steps(logdir: str) -> list[int]:
    files = read_run(logdir)
    assert all(f.tail == 0 for f in files)
    return [e.step for f in files for e in f.events if e.HasField("summary")]


class _HungWriters:
    """Writers whose every write blocks its file's thread until ``release()``."""

    def __init__(self, root, count: int, events: int, **options) -> None:
        self.gates = [threading.Event() for _ in range(count)]
        self.sinks: list[GatedSink] = []
        self.logdirs = [str(root / f"hung{i}") for i in range(count)]
        self.writers = []
        for logdir, gate in zip(self.logdirs, self.gates, strict=True):

            def factory(path: str, gate: threading.Event = gate) -> GatedSink:
                sink = GatedSink(FileSink(path), gate)
                self.sinks.append(sink)
                return sink

            writer = AsyncSummaryWriter(logdir, sink_factory=factory, **options)
            self.writers.append(writer)
            for step in range(events):
                writer.add_scalar("hung", step, step)

    def wait_until_stuck(self) -> None:
        """Every writer has a write stuck in its storage (made on the loop: poll, bounded)."""
        deadline = time.monotonic() + DEADLINE
        while len(self.sinks) < len(self.writers) or not all(
            s.entered.is_set() for s in self.sinks
        ):
            assert time.monotonic() < deadline, "the hung writers never started writing"
            time.sleep(0.01)

    def release(self) -> None:
        for gate in self.gates:
            gate.set()


@pytest.fixture
def hung_writers(tmp_path):
    made: list[_HungWriters] = []

    def make(count: int, events: int, **options) -> _HungWriters:
        made.append(_HungWriters(tmp_path, count, events, **options))
        return made[-1]

    try:
        yield make
    finally:
        for group in made:  # let the stuck threads go, whatever the test did
            group.release()
            for writer in group.writers:
                try:
                    writer.close(timeout=DEADLINE)
                except Exception:  # noqa: BLE001 - the test's own assertions said it
                    pass


def test_hung_writers_stall_nothing_but_themselves(tmp_path, hung_writers):
    hung = hung_writers(HUNG_WRITERS, 300, flush_secs=0.02)
    hung.wait_until_stuck()

    healthy_dir = str(tmp_path / "healthy")
    healthy = AsyncSummaryWriter(healthy_dir, flush_secs=3600)
    for step in range(2000):
        healthy.add_scalar("healthy", step, step)
    healthy.flush(timeout=DEADLINE)  # raises FlushTimeoutError if stalled
    assert _steps(healthy_dir) == list(range(2000))
    healthy.close(timeout=DEADLINE)
    assert all(writer.stats().written == 0 for writer in hung.writers), "storage was not hung"

    hung.release()
    for writer, logdir in zip(hung.writers, hung.logdirs, strict=True):
        writer.close(timeout=DEADLINE)
        assert writer.stats().lost == writer.stats().dropped == 0
        assert _steps(logdir) == list(range(300))


def test_flush_all_flushes_the_others_while_one_writer_hangs(tmp_path, hung_writers):
    hung = hung_writers(1, 10, flush_secs=0.02)  # opened first: flushed first in order
    hung.wait_until_stuck()
    healthy_dir = str(tmp_path / "healthy")
    # Nothing is written before a flush asks: no timer, no batch wake-up.
    healthy = AsyncSummaryWriter(healthy_dir, flush_secs=3600, batch_bytes=64 << 20)
    for step in range(500):
        healthy.add_scalar("healthy", step, step)

    with pytest.raises(FlushTimeoutError):
        flush_all(timeout=1.0)
    assert _steps(healthy_dir) == list(range(500))
    healthy.close(timeout=DEADLINE)

    hung.release()
    hung.writers[0].close(timeout=DEADLINE)
    assert _steps(hung.logdirs[0]) == list(range(10))
