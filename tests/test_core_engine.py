"""Engine guarantees: flush, timer, bound and policies, errors, threads, fork, exit."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time

import pytest

from asyncsummary import (
    AsyncSummaryWriter,
    FileSink,
    FlushTimeoutError,
    PendingLimitError,
    WriteError,
)
from asyncsummary._engine import ITEM_OVERHEAD
from asyncsummary.testing import FailingSink, GatedSink, WrappedSink

from .procs import pid_in_name
from .readers import TF_CROSS_CHECKS, event_files, scalars, tb_events, tb_run_events, tf_records


def _wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_flush_makes_events_visible_to_another_reader(logdir):
    writer = AsyncSummaryWriter(logdir, flush_secs=3600)
    for step in range(100):
        writer.add_scalar("x", step, step)
    writer.flush()
    # Another process reads the file while the writer is still open.
    code = (
        "import sys; from tests.readers import scalars; "
        "print(len(scalars(sys.argv[1])))"
    )
    out = subprocess.run([sys.executable, "-c", code, logdir], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120, check=True)
    assert out.stdout.strip() == "100"
    writer.close()


def test_timer_writes_without_any_flush_call(logdir):
    writer = AsyncSummaryWriter(logdir, flush_secs=0.2)
    writer.add_scalar("x", 1.0, 1)
    _wait_until(lambda: event_files(logdir) and scalars(logdir) == [(1, "x", 1.0)])
    writer.add_scalar("x", 2.0, 2)  # a second one, long after the first batch
    _wait_until(lambda: len(scalars(logdir)) == 2)
    writer.close()


def test_nothing_waits_below_the_batch_threshold(logdir):
    """Small adds stay in memory until the timer or a flush: no per-event write."""
    writer = AsyncSummaryWriter(logdir, flush_secs=3600)
    for step in range(10):
        writer.add_scalar("x", step, step)
    assert writer.stats().pending_events == 10
    writer.flush()
    assert writer.stats().pending_events == 0 and writer.stats().written == 10
    writer.close()


def _gated(logdir, gate, **options):
    sinks = []

    def factory(path):
        sinks.append(GatedSink(FileSink(path), gate))
        return sinks[-1]

    return AsyncSummaryWriter(logdir, sink_factory=factory, flush_secs=3600, **options), sinks


PAYLOAD = b"\x0a\x0b\x0a\x04loss\x15\x00\x00\x80\x3f"  # Summary(value=[Value(tag="loss", simple_value=1)])
ITEM = len(PAYLOAD) + ITEM_OVERHEAD


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest", "raise"])
def test_bound_holds_on_a_stalled_sink(logdir, policy):
    gate = threading.Event()
    writer, sinks = _gated(logdir, gate, max_pending_bytes=ITEM * 10, batch_bytes=ITEM, policy=policy)
    writer.add_summary(PAYLOAD, 0)
    _wait_until(lambda: sinks and sinks[0].entered.is_set())  # the drain is stuck in a write
    raised = 0
    for step in range(1, 101):
        try:
            writer.add_summary(PAYLOAD, step)
        except PendingLimitError:
            raised += 1
        assert writer.stats().pending_bytes <= ITEM * 10
    stats = writer.stats()
    assert stats.peak_pending_bytes <= ITEM * 10
    gate.set()
    writer.close()
    steps = [e.step for e in tb_run_events(logdir) if e.HasField("summary")]
    # The event stuck in the write still counts: the bound holds it and nine more.
    if policy == "raise":
        assert raised == 91 and stats.dropped == 0
        assert steps == list(range(0, 10))
    elif policy == "drop_newest":
        assert stats.dropped == 91 and raised == 0
        assert steps == list(range(0, 10))  # the first ones kept
    else:
        assert stats.dropped == 91 and raised == 0
        assert steps == [0] + list(range(92, 101))  # the last nine kept


def test_a_batch_being_written_keeps_room_for_its_copies_and_leaves_a_quarter(logdir):
    """A batch of several events keeps its own room and its two copies' until written;
    ``batch_bytes`` is cut to a quarter of the bound, so the queue keeps the rest."""
    gate = threading.Event()
    bound = ITEM * 40
    writer, sinks = _gated(logdir, gate, max_pending_bytes=bound, batch_bytes=bound, policy="raise")
    for step in range(10):  # a quarter of the bound: wakes the drain, which takes them
        writer.add_summary(PAYLOAD, step)
    _wait_until(lambda: sinks and sinks[0].entered.is_set())
    assert writer.stats().pending_events == 10  # the batch being written is counted
    for step in range(10, 20):  # the room left: 40 - 10 (the batch) - 20 (its copies)
        writer.add_summary(PAYLOAD, step)
    with pytest.raises(PendingLimitError):
        writer.add_summary(PAYLOAD, 20)
    stats = writer.stats()
    assert stats.pending_events == 20 and stats.pending_bytes == ITEM * 20
    assert stats.peak_pending_bytes <= bound
    gate.set()
    writer.flush(timeout=10)
    assert writer.stats().pending_events == 0  # written: the room is back
    for step in range(20, 30):
        writer.add_summary(PAYLOAD, step)
    writer.close()
    assert [e.step for e in tb_run_events(logdir) if e.HasField("summary")] == list(range(30))


def test_block_policy_waits_and_resumes_when_the_sink_does(logdir):
    gate = threading.Event()
    writer, sinks = _gated(logdir, gate, max_pending_bytes=ITEM * 5, batch_bytes=ITEM)
    writer.add_summary(PAYLOAD, 0)
    _wait_until(lambda: sinks and sinks[0].entered.is_set())
    for step in range(1, 5):
        writer.add_summary(PAYLOAD, step)  # fills the bound (with the event in the write)
    done = threading.Event()

    def producer():
        writer.add_summary(PAYLOAD, 5)  # must block: no room
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert not done.wait(0.3)  # still blocked while the storage is stalled
    gate.set()
    assert done.wait(10)
    thread.join()
    writer.close()
    assert [e.step for e in tb_run_events(logdir) if e.HasField("summary")] == list(range(6))
    assert writer.stats().dropped == 0


def test_block_policy_gives_up_after_block_timeout(logdir):
    gate = threading.Event()
    writer, sinks = _gated(logdir, gate, max_pending_bytes=ITEM * 2, batch_bytes=ITEM, block_timeout=0.2)
    writer.add_summary(PAYLOAD, 0)
    _wait_until(lambda: sinks and sinks[0].entered.is_set())
    writer.add_summary(PAYLOAD, 1)  # the bound: this one and the one being written
    with pytest.raises(PendingLimitError):
        writer.add_summary(PAYLOAD, 2)
    with pytest.raises(FlushTimeoutError):
        writer.flush(timeout=0.2)
    gate.set()
    writer.close()
    assert [e.step for e in tb_run_events(logdir) if e.HasField("summary")] == [0, 1]


def test_failed_write_is_raised_on_next_add_and_retried(logdir):
    failing = threading.Event()
    failing.set()
    writer = AsyncSummaryWriter(logdir, flush_secs=3600,
                                sink_factory=lambda p: FailingSink(FileSink(p), failing))
    writer.add_scalar("x", 0.0, 0)
    with pytest.raises(WriteError) as info:
        writer.flush(timeout=10)
    assert isinstance(info.value.__cause__, OSError)
    writer.add_scalar("x", 1.0, 1)  # the error was already reported by flush
    failing.clear()
    writer.flush(timeout=10)  # the kept events are written on the retry
    writer.close()
    assert [s for s, _, _ in scalars(logdir)] == [0, 1]
    assert writer.stats().write_errors >= 1 and writer.stats().lost == 0


def test_error_raised_once_on_the_next_add(logdir):
    failing = threading.Event()
    failing.set()
    writer = AsyncSummaryWriter(logdir, flush_secs=0.05, sink_factory=lambda p: FailingSink(FileSink(p), failing))
    writer.add_scalar("x", 0.0, 0)
    _wait_until(lambda: writer.stats().write_errors > 0)
    with pytest.raises(WriteError):
        writer.add_scalar("x", 1.0, 1)
    failing.clear()
    writer.add_scalar("x", 2.0, 2)
    writer.close()
    # The add that raised the stored error had queued its own event first (issue 14.10).
    assert [s for s, _, _ in scalars(logdir)] == [0, 1, 2]
    stats = writer.stats()
    assert (stats.queued, stats.written, stats.lost, stats.dropped) == (3, 3, 0, 0)


def test_removed_logdir_is_reported_and_a_new_file_started(tmp_path):
    import shutil

    logdir = str(tmp_path / "run")
    writer = AsyncSummaryWriter(logdir, flush_secs=3600)
    writer.add_scalar("x", 0.0, 0)
    writer.flush()
    shutil.rmtree(logdir)
    writer.add_scalar("x", 1.0, 1)
    with pytest.raises(WriteError) as info:
        writer.flush(timeout=10)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    writer.add_scalar("x", 2.0, 2)
    writer.close()
    assert [s for s, _, _ in scalars(logdir)] == [2]
    assert writer.stats().lost == 1  # step 1 went into the removed file


def test_close_is_bounded_on_a_hung_sink_and_idempotent(logdir):
    gate = threading.Event()
    writer, _ = _gated(logdir, gate)
    writer.add_scalar("x", 0.0, 0)
    with pytest.raises(FlushTimeoutError):
        writer.close(timeout=0.3)
    writer.close()  # idempotent: already closed
    assert writer.closed
    gate.set()


def test_threads_lose_nothing_and_keep_their_order(logdir):
    writer = AsyncSummaryWriter(logdir, max_pending_bytes=1 << 20)
    per_thread = 5000

    def produce(index):
        for i in range(per_thread):
            writer.add_scalar(f"t{index}", float(i), i)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    by_tag: dict[str, list[int]] = {}
    for step, tag, _ in scalars(logdir):
        by_tag.setdefault(tag, []).append(step)
    assert by_tag == {f"t{i}": list(range(per_thread)) for i in range(8)}


def test_fork_child_writes_its_own_file(logdir):
    writer = AsyncSummaryWriter(logdir)
    for step in range(1000):
        writer.add_scalar("parent", step, step)
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            writer.add_scalar("child", 1.0, 1)
            writer.close()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for step in range(1000, 1100):
        writer.add_scalar("parent", step, step)
    writer.close()
    files = event_files(logdir)
    assert len(files) == 2
    by_pid = {}
    for path in files:
        by_pid[pid_in_name(path)] = [(e.step, v.tag) for e in tb_events(path) for v in e.summary.value]
    assert by_pid[os.getpid()] == [(s, "parent") for s in range(1100)]
    assert by_pid[pid] == [(1, "child")]


def test_exit_without_close_keeps_everything(logdir):
    code = (
        "import sys, asyncsummary\n"
        "w = asyncsummary.AsyncSummaryWriter(sys.argv[1], flush_secs=3600)\n"
        "for i in range(20000): w.add_scalar('x', i, i)\n"
    )
    subprocess.run([sys.executable, "-c", code, logdir], check=True, timeout=120)
    assert [s for s, _, _ in scalars(logdir)] == list(range(20000))


def test_file_names_sort_in_rotation_order(logdir):
    writer = AsyncSummaryWriter(logdir, max_file_bytes=2000, batch_bytes=1000)
    for step in range(500):
        writer.add_scalar("x", step, step)
        if step % 50 == 0:
            writer.flush()
    writer.close()
    files = event_files(logdir)
    assert len(files) > 3
    assert list(writer.stats().files) == files  # opened in name order
    assert [s for s, _, _ in scalars(logdir)] == list(range(500))
    for path in files:
        assert tb_events(path)[0].file_version == "brain.Event:2"


def test_relative_logdir_does_not_follow_chdir(tmp_path, monkeypatch):
    """Files are created on the background side; a later chdir must not move them."""
    monkeypatch.chdir(tmp_path)
    writer = AsyncSummaryWriter("rel", flush_secs=3600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    writer.add_scalar("x", 1.0, 1)
    writer.close()
    assert writer.get_logdir() == "rel"
    assert scalars(str(tmp_path / "rel")) == [(1, "x", 1.0)]
    assert not (elsewhere / "rel").exists()


class _ShortWrites(WrappedSink):
    """Takes at most 20 000 bytes per write, and fails every third write: the engine must
    resume each chunk at the exact byte, large payloads (kept as their own chunks) too."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls = 0

    async def write(self, data):
        self.calls += 1
        if self.calls % 3 == 0:
            raise OSError(errno.EIO, "injected failure", self.name)
        return await self.inner.write(data[:20_000])


class _ShortWritev(FileSink):
    """FileSink's own ``write_parts`` (one ``writev`` per batch: an image and its framing
    are three parts) cut at 50 000 bytes, wherever that falls among the parts, and
    failing every third call: the engine must resume at the exact byte of the exact part."""

    def __init__(self, path):
        super().__init__(path)
        self.calls = 0
        self.parts_seen = 0

    async def write_parts(self, parts):
        self.calls += 1
        self.parts_seen = max(self.parts_seen, len(parts))
        if self.calls % 3 == 0:
            raise OSError(errno.EIO, "injected failure", self.name)
        cut, left = [], 50_000
        for part in parts:
            if left <= 0:
                break
            cut.append(part[:left])
            left -= len(cut[-1])
        return await super().write_parts(cut)


@pytest.mark.parametrize(
    "sink", [lambda p: _ShortWrites(FileSink(p)), _ShortWritev], ids=["write", "write_parts"]
)
def test_short_and_failed_writes_resume_at_the_exact_byte(logdir, sink):
    import numpy as np
    from tensorboard.compat.proto import summary_pb2

    rng = np.random.default_rng(1)
    sinks = []
    writer = AsyncSummaryWriter(
        logdir, flush_secs=0.05, sink_factory=lambda p: sinks.append(sink(p)) or sinks[-1]
    )
    expected = []
    for step in range(40):
        size = 70_000 if step % 5 == 0 else 30  # large payloads among small ones
        blob = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag="blob", image=summary_pb2.Summary.Image(encoded_image_string=blob))])
        expected.append((step, blob))
        while True:
            try:
                writer.add_summary(summary.SerializeToString(), step)
                break
            except WriteError:  # the injected failures are reported; the add is retried
                pass
    while True:
        try:
            writer.close()
            break
        except WriteError:
            pass
    (path,) = event_files(logdir)
    got = [(e.step, e.summary.value[0].image.encoded_image_string) for e in tb_events(path) if e.HasField("summary")]
    assert got == expected
    if TF_CROSS_CHECKS:
        assert len(tf_records(path)) == 41  # every CRC checked by TensorFlow too
    assert writer.stats().write_errors > 0 and writer.stats().lost == 0
    if isinstance(sinks[0], _ShortWritev):
        assert max(s.parts_seen for s in sinks) >= 3  # several parts in one call
