"""The native lane (``asyncsummary/_lane.c``): full batches written without the GIL.

Guarantees tested here:

* What the lane writes is byte for byte what the pure-Python encoder makes of the same
  events, in call order, and the events it does not take stay queued, in order.
* It takes only what it can frame alone: a summary (validated in Python) in the ring
  sends the batch to the loop (``wake``) instead.
* Its batch keeps its room (the slots and the framed copy) until written; the next add
  after that gets it back. While it writes, ``lane_stop`` says so and its pipe tells
  when it is done.
* ``lane_give`` (the loop's hand-over) gives it a ring that filled while it was off, and
  a backlog past half the bound head first, within the bound.
* A failed write hands the engine the exact unwritten bytes, with the errno (also in the
  middle of a batch written a chunk at a time); nothing is lost, and the lane stops
  taking batches.
* No reference is leaked: the objects of written slots are freed by later adds or
  ``lane_collect``.
* Through a writer: everything reaches the file in order, with summaries between the
  lane's batches, across rotated files, and across a write failure (the file size limit
  of ``RLIMIT_FSIZE``) once the storage takes bytes again; no full batch is left for the
  ``flush_secs`` timer when the adds stop.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import subprocess
import sys
import time
from typing import Any

from tensorboard.compat.proto import summary_pb2

from asyncsummary import AsyncSummaryWriter, _encoder, _native
from asyncsummary._encoder import RAW_EVENT, SCALAR
from asyncsummary._event import GRAPH_DEF, SUMMARY

from .readers import event_files, tb_events, tb_run_events

OVERHEAD = 256
ROOM = 1 << 20
NATIVE_WRITER = _encoder.IMPLEMENTATION == "native" and bool(_native.LANE)


class Calls:
    def __init__(self) -> None:
        self.wakes = 0
        self.slow: list[tuple[Any, ...]] = []

    def wake(self) -> None:
        self.wakes += 1

    def on_slow(self, *args: Any) -> None:
        self.slow.append(args)


def lane_queue(fd: int, batch_bytes: int = 4096, room: int = ROOM) -> tuple[Any, Calls, int]:
    calls = Calls()
    queue = _native.PendingQueue(room, batch_bytes, OVERHEAD, calls.wake, calls.on_slow)
    pipe = queue.lane_start(fd, 1 << 62, room)
    return queue, calls, pipe


def stop(queue: Any, pipe: int) -> tuple[Any, ...]:
    """Stop the lane as the engine does (waiting on its pipe), and collect."""
    deadline = time.monotonic() + 30
    while not queue.lane_stop():
        ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "the lane never said it was done"
        os.read(pipe, 4096)
    return queue.lane_collect()


def python_bytes(items: list[tuple[Any, ...]]) -> bytes:
    chunks, rejected = asyncio.run(_encoder.encode_python(list(items), set()))
    assert rejected == []
    return b"".join(chunks)


def take_rest(queue: Any) -> list[tuple[Any, ...]]:
    took = queue.take(1 << 40, ROOM)
    if took is None:
        return []
    batch = took[0]
    return [batch.item(i) for i in range(len(batch))]


def varied_items(n: int) -> list[tuple[Any, ...]]:
    """Every kind the lane frames: scalars (odd tags and values), raw events, fields."""
    tags = ["loss", "", "ünïcode/タグ", "t" * 300]
    values = [0.5, -0.0, float("inf"), float("nan"), 1e300, -1e-300]
    items: list[tuple[Any, ...]] = []
    for i in range(n):
        step = [0, 1, i, -5, 2**62][i % 5]
        wall = 1.7e9 + i / 7
        if i % 11 == 3:
            payload = bytes([0x10, i % 100])  # an Event with only a step
            items.append((RAW_EVENT, payload, step, wall, len(payload)))
        elif i % 13 == 5:
            payload = os.urandom(i % 300)
            items.append((GRAPH_DEF, payload, step, wall, len(payload)))
        else:
            tag = tags[i % len(tags)]
            items.append((SCALAR, (tag, values[i % len(values)]), step, wall, len(tag) * 4 + 8))
    return items


def accounted(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The items as the queue gives them back: sizes with the overhead added."""
    return [(*item[:4], item[4] + OVERHEAD) for item in items]


def add_all(queue: Any, items: list[tuple[Any, ...]]) -> None:
    for kind, payload, step, wall, size in items:
        if kind == SCALAR:
            queue.add_scalar(payload[0], payload[1], step, wall, size)
        else:
            queue.add(kind, payload, step, wall, size)


def test_the_lane_writes_what_the_python_encoder_makes_in_call_order(tmp_path):
    path = tmp_path / "events"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        queue, calls, pipe = lane_queue(fd, room=1 << 30)  # it never falls behind the bound
        items = varied_items(5000)
        add_all(queue, items)
        events, nbytes, seq, batches, err, rest, *_ = stop(queue, pipe)
    finally:
        os.close(fd)
    assert err == 0 and rest is None
    assert batches >= 1 and calls.wakes == 0 and calls.slow == []
    written = path.read_bytes()
    assert nbytes == len(written) and seq == events
    left = take_rest(queue)
    assert events + len(left) == len(items)
    assert written == python_bytes(items[:events])
    assert repr(left) == repr(accounted(items[events:]))  # repr: NaN values compare equal


def test_a_summary_in_the_ring_sends_the_batch_to_the_loop(tmp_path):
    fd = os.open(tmp_path / "events", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        queue, calls, pipe = lane_queue(fd, batch_bytes=4096)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="s", simple_value=1)])
        data = summary.SerializeToString()
        queue.add(SUMMARY, data, 1, 1.0, len(data))
        for i in range(100):
            queue.add_scalar("loss", 0.5, i, 1.0, 24)
        assert queue.unlaneable == 1
        assert calls.wakes == 1  # the loop's to take
        events, *_ = stop(queue, pipe)
        assert events == 0
        assert len(take_rest(queue)) == 101 and queue.unlaneable == 0
    finally:
        os.close(fd)


def test_the_lane_s_batch_keeps_its_room_until_written(tmp_path):
    # A pipe as the file: its writes block until the test reads, so the lane's batch
    # stays in flight for as long as the test wants.
    read_end, write_end = os.pipe()
    payload = bytes(1000)
    size = len(payload) + OVERHEAD
    try:
        room = 1_000_000  # batches of 100 KB: more framed bytes than a pipe holds (64 KiB)
        queue, calls, pipe = lane_queue(write_end, batch_bytes=100_000, room=room)
        n = 0
        while queue.lane_reserved == 0:
            queue.add(RAW_EVENT, payload, n, 1.0, len(payload))
            n += 1
        events, taken, _, _, _ = queue.lane_held()
        assert events == n and taken == n * size
        assert queue.lane_reserved == 2 * taken and queue.room == room - 2 * taken
        # The ring fills up to what is left; then adds go to the slow path.
        while not calls.slow:
            queue.add(RAW_EVENT, payload, n, 1.0, len(payload))
            n += 1
        assert queue.bytes + 2 * taken <= room < queue.bytes + 2 * taken + size
        assert not queue.lane_stop()  # busy: the pipe will say when it is done
        framed = b""
        while True:
            ready, _, _ = select.select([read_end, pipe], [], [], 30)
            assert ready
            if read_end in ready:
                framed += os.read(read_end, 1 << 16)
            elif pipe in ready:
                break
        os.read(pipe, 16)
        assert queue.lane_stop()
        assert queue.fits(size)  # the room came back
        assert queue.lane_reserved == 0 and queue.room == room
        collected = queue.lane_collect()
        assert collected[0] == events and collected[1] == len(framed)
        assert framed == python_bytes([(RAW_EVENT, payload, s, 1.0, len(payload)) for s in range(events)])
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_failed_write_hands_the_engine_the_unwritten_bytes(tmp_path):
    fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    try:
        queue, calls, pipe = lane_queue(fd, batch_bytes=4096)
        items = [(SCALAR, (f"t{i}", float(i)), i, 2.0, 24) for i in range(200)]
        add_all(queue, items)
        ready, _, _ = select.select([pipe], [], [], 30)  # the lane says it stopped
        assert ready
        os.read(pipe, 16)
        assert queue.lane_stop()
        events, nbytes, _, _, err, rest, rest_events, rest_seq, rest_taken = queue.lane_collect()
        assert err == errno.ENOSPC and events == 0 and nbytes == 0
        assert rest == python_bytes(items[:rest_events]) and rest_seq == rest_events
        assert rest_taken == rest_events * (24 + OVERHEAD)
        assert queue.room == ROOM - 2 * rest_taken  # the engine gives it back once written
        # The lane is off: the next full batch wakes the loop.
        more = [(SCALAR, ("x", 1.0), i, 2.0, 24) for i in range(200)]
        add_all(queue, more)
        assert calls.wakes == 1
        assert take_rest(queue) == accounted(items[rest_events:] + more)
    finally:
        os.close(fd)


def test_lane_give_hands_over_a_ring_filled_while_the_lane_was_off(tmp_path):
    path = tmp_path / "events"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        calls = Calls()
        queue = _native.PendingQueue(ROOM, 4096, OVERHEAD, calls.wake, calls.on_slow)
        items = [(SCALAR, ("loss", float(i)), i, 1.0, 24) for i in range(100)]
        add_all(queue, items)  # no lane yet: the loop was woken for it
        assert calls.wakes == 1 and not queue.lane_give()  # no lane: nothing to give
        pipe = queue.lane_start(fd, 1 << 62, ROOM)
        assert queue.lane_give() and len(queue) == 0
        assert stop(queue, pipe)[0] == 100
        assert path.read_bytes() == python_bytes(items)
        queue.lane_start(fd, 1 << 62, ROOM)
        queue.add(SUMMARY, _summary("s", 1.0), 1, 1.0, 10)
        assert not queue.lane_give() and len(queue) == 1  # a summary: the loop's
        stop(queue, pipe)
    finally:
        os.close(fd)


def test_lane_give_hands_over_a_backlog_head_first_within_the_bound(tmp_path):
    path = tmp_path / "events"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    room = 1 << 20
    try:
        queue = _native.PendingQueue(room, 4096, OVERHEAD, Calls().wake, Calls().on_slow)
        items = [(SCALAR, ("loss", float(i)), i, 1.0, 24) for i in range(3000)]
        add_all(queue, items)  # 840 KB accounted: past half the bound
        pipe = queue.lane_start(fd, 1 << 62, room)
        given = []
        while len(queue):
            before, queued = len(queue), queue.bytes
            assert queue.lane_give()
            events, taken, _, _, _ = queue.lane_held()
            if 2 * queued > room:  # a head: the ring and the lane's copies within the
                # bound, half of the room left for the adds (at least one event given)
                assert taken <= max((room - queued) // 2, OVERHEAD + 24)
                assert queue.bytes + 2 * taken <= room
            assert events == before - len(queue) >= 1
            given.append(stop(queue, pipe)[0])
            queue.lane_start(fd, 1 << 62, room)
        assert len(given) >= 2 and sum(given) == 3000
        assert path.read_bytes() == python_bytes(items)
        assert queue.room == room and queue.lane_reserved == 0
        stop(queue, pipe)
    finally:
        os.close(fd)


def test_a_write_failing_mid_batch_hands_back_exactly_the_bytes_not_written():
    # A batch of 3 MB is framed and written a chunk (1 MiB) at a time; the reader of the
    # pipe it goes to leaves after 1.5 MB: the write in the middle of the second chunk
    # fails (EPIPE), and the rest of that chunk plus the slots never framed come back.
    import threading

    read_end, write_end = os.pipe()
    got = bytearray()

    def reader() -> None:
        while len(got) < 1_500_000:
            got.extend(os.read(read_end, 1 << 16))
        os.close(read_end)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        queue = _native.PendingQueue(1 << 30, 1 << 29, OVERHEAD, Calls().wake, Calls().on_slow)
        items = [(RAW_EVENT, os.urandom(1000), i, 0.0, 1000) for i in range(3000)]
        add_all(queue, items)
        pipe = queue.lane_start(write_end, 1 << 62, 1 << 30)
        assert queue.lane_give()
        ready, _, _ = select.select([pipe], [], [], 30)  # it stopped: the error
        assert ready
        assert queue.lane_stop()
        events, nbytes, _, _, err, rest, rest_events, rest_seq, _ = queue.lane_collect()
        thread.join()
        assert err == errno.EPIPE and events == 0 and (rest_events, rest_seq) == (3000, 3000)
        whole = python_bytes(items)
        # Written: what the reader got, and what the pipe held when it left.
        assert 1_500_000 <= len(got) <= nbytes <= len(got) + (1 << 16) < len(whole)
        assert whole[: len(got)] == got and whole[nbytes:] == rest
    finally:
        thread.join()
        os.close(write_end)


def test_no_reference_is_leaked(tmp_path):
    tag = "".join(["leak", "-check"])  # a str of its own
    payload = bytes(100)
    before = (sys.getrefcount(tag), sys.getrefcount(payload))
    fd = os.open(tmp_path / "events", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        queue, calls, pipe = lane_queue(fd, batch_bytes=4096, room=1 << 30)
        for i in range(3000):
            queue.add_scalar(tag, 1.0, i, 1.0, 24)
            queue.add(RAW_EVENT, payload, i, 1.0, len(payload))
        assert stop(queue, pipe)[0] > 0
        take_rest(queue)
        assert calls.slow == []
        del queue
    finally:
        os.close(fd)
    assert (sys.getrefcount(tag), sys.getrefcount(payload)) == before


def _summary(tag: str, value: float) -> bytes:
    return summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]
    ).SerializeToString()


def _lane_batches(writer: AsyncSummaryWriter) -> int:
    return writer._engine._queue.lane_held()[4] if NATIVE_WRITER else 0


def test_a_writer_writes_everything_in_order_with_summaries_between_lane_batches(tmp_path):
    writer = AsyncSummaryWriter(str(tmp_path), batch_bytes=8192, flush_secs=3600)
    expected = []
    for i in range(30_000):
        if i % 2000 == 1999:
            writer.add_summary(_summary("summary", float(i)), i)
            expected.append(("summary", i))
        else:
            writer.add_scalar(f"m{i % 7}", float(i), i)
            expected.append((f"m{i % 7}", i))
        if i == 20_000:
            writer.flush()  # the loop stops the lane, flushes, starts it again
    writer.flush()
    stats = writer.stats()
    assert stats.written == stats.queued == len(expected) and stats.pending_events == 0
    if NATIVE_WRITER:
        assert _lane_batches(writer) > 0  # it took part (how many batches: timing)
    writer.close()
    events = tb_run_events(str(tmp_path))
    assert events[0].file_version == "brain.Event:2"
    got = [(e.summary.value[0].tag, e.step) for e in events[1:]]
    assert got == expected
    assert [e.summary.value[0].simple_value for e in events[1:]] == [float(s) for _, s in expected]


def test_no_full_batch_waits_for_the_timer_when_the_adds_stop(tmp_path):
    writer = AsyncSummaryWriter(str(tmp_path), batch_bytes=4096, flush_secs=3600)
    for i in range(20_000):
        writer.add_scalar("loss", float(i), i)
        if i % 500 == 499:
            time.sleep(0.001)
    deadline = time.monotonic() + 20
    while writer.stats().pending_bytes >= 4096:  # only less than a batch waits
        assert time.monotonic() < deadline, writer.stats()
        time.sleep(0.01)
    writer.close()


def test_a_writer_rotates_files_under_the_lane(tmp_path):
    writer = AsyncSummaryWriter(str(tmp_path), batch_bytes=4096, max_file_bytes=50_000)
    for i in range(20_000):  # as a trainer logs: a step's values, then the step's work
        writer.add_scalar("loss", float(i), i)
        if i % 100 == 99:
            time.sleep(0.002)
    batches = _lane_batches(writer)
    writer.close()
    files = event_files(str(tmp_path))
    assert len(files) > 5
    steps = []
    for path in files:
        events = tb_events(path)
        assert events[0].file_version == "brain.Event:2"
        steps.extend(e.step for e in events[1:])
    assert steps == list(range(20_000))
    if NATIVE_WRITER:
        assert batches > 0


FILE_SIZE_LIMIT_CHILD = r"""
import resource, sys
from asyncsummary import AsyncSummaryWriter, WriteError

limit = 100_000
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
writer = AsyncSummaryWriter(sys.argv[1], batch_bytes=4096, flush_secs=3600)
errors = 0
for i in range(20_000):  # about 800 KB of events: writes past 100 KB fail (EFBIG)
    try:
        writer.add_scalar("loss", float(i), i)
    except WriteError as exc:
        errors += 1
        assert "File too large" in repr(exc.__cause__), repr(exc.__cause__)
try:
    writer.flush(timeout=2)
except Exception as exc:
    errors += 1
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
while True:  # the storage takes bytes again: the retries write what was kept
    try:
        writer.flush(timeout=30)
        break
    except WriteError:
        errors += 1
stats = writer.stats()
writer.close()
print("ERRORS", errors, stats.written, stats.lost, stats.write_errors)
"""


def test_a_write_failure_under_the_lane_loses_nothing(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    _, errors, written, lost, write_errors = out.stdout.split()
    assert int(errors) >= 1 and int(write_errors) >= 1
    assert (int(written), int(lost)) == (20_000, 0)
    [path] = event_files(str(tmp_path))
    events = tb_events(path)
    assert [e.step for e in events[1:]] == list(range(20_000))  # once each, no torn record
