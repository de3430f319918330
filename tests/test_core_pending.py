"""The pending queue (``asyncsummary._pending``): the C queue and the pure-Python one.

Guarantees tested here, for both implementations alike:

* Events come out in call order, as the items ``(kind, payload, step, wall_time,
  accounted size)`` they went in as (any payload, step or wall time; the usual ones
  are slots in C), across the ring buffer's wrap-around and growth.
* The fast path appends only while the gate is open and the event fits; otherwise
  ``slow`` gets the add's own arguments. ``wake`` is called once per filled batch;
  deferred builds take room but do not fill a batch, until a quarter of the room is queued.
* ``put`` (the slow path's append) drops the oldest events for ``drop_oldest`` and
  refuses (-1) otherwise; ``take`` detaches at most ``batch_bytes`` (at least one
  event) and sets the room to what the batch keeps; ``unappend`` and ``clear``.
* The C queue allocates nothing the GC tracks per event and leaks no reference.
"""

from __future__ import annotations

import concurrent.futures
import gc
import sys
import threading
from typing import Any

import pytest

from asyncsummary import _encoder, _pending
from asyncsummary._encoder import DEFERRED, RAW_EVENT, SCALAR
from asyncsummary._event import SUMMARY

try:
    from asyncsummary import _native
except ImportError:  # test_core_encoder says whether a normal install has it
    _native = None

OVERHEAD = 256
IMPLEMENTATIONS = ["python"] + (["native"] if _native is not None else [])


class Calls:
    """What a queue called back: wakes and slow adds."""

    def __init__(self) -> None:
        self.wakes = 0
        self.slow: list[tuple[Any, ...]] = []
        self.closed: list[int] = []

    def wake(self) -> None:
        self.wakes += 1

    def on_slow(self, *args: Any) -> None:
        self.slow.append(args)

    def closed_during_add(self, seq: int) -> None:
        self.closed.append(seq)


def make(implementation: str, room: int = 1 << 30, batch_bytes: int = 1 << 20) -> tuple[Any, Calls]:
    calls = Calls()
    if implementation == "native":
        queue = _native.PendingQueue(room, batch_bytes, OVERHEAD, calls.wake, calls.on_slow)
    else:
        queue = _pending.PendingQueue(
            room,
            batch_bytes,
            OVERHEAD,
            calls.wake,
            calls.on_slow,
            threading.RLock(),
            calls.closed_during_add,
        )
    return queue, calls


def items_of(batch: Any) -> list[tuple[Any, ...]]:
    """The items of what take() gave: a C Batch, or the Python queue's deque or list."""
    return [batch.item(i) for i in range(len(batch))] if hasattr(batch, "item") else list(batch)


def take_all(queue: Any) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    while (took := queue.take(1 << 40, 1 << 40)) is not None:
        out += items_of(took[0])
    return out


def mixed_items() -> list[tuple[Any, ...]]:
    """Adds of every sort: (kind, payload, step, wall_time, size), as add() gets them."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    return [
        (SCALAR, ("loss", 0.5), 3, 1.5, 24),
        (SCALAR, ("näme", 1e300), -(2**63), 2.0, 24),  # beyond float32: inf when framed
        (SCALAR, ("x", 7), 1, 1.0, 8),  # an int value: left to Python
        (SCALAR, ("\ud800", 1.0), 1, 1.0, 8),  # not UTF-8: left to Python
        (SUMMARY, b"\x0a\x00", 2**40, 3.0, 2),
        (SUMMARY, b"s" * (70 << 10), 4, 4.0, 70 << 10),  # large: its own chunk
        (RAW_EVENT, b"raw", 0, 0.0, 3),
        (7, b"session", 5, 5.0, 7),
        (DEFERRED, future, 6, 6.0, 300),
        (SUMMARY, bytearray(b"odd"), 7, 7.0, 3),
        (SUMMARY, b"big step", 2**64, 8.0, 8),  # beyond int64: left to Python
        (SUMMARY, b"int wall", 9, 9, 8),
    ]


def expected(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(*item[:4], item[4] + OVERHEAD) for item in items]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_items_come_out_in_call_order_as_they_went_in(implementation):
    queue, calls = make(implementation)
    items = mixed_items()
    for item in items:
        if item[0] == SCALAR:
            queue.add_scalar(*item[1], *item[2:])
        else:
            queue.add(*item)
    assert len(queue) == len(items) and queue.added == len(items)
    assert queue.bytes == sum(item[4] + OVERHEAD for item in items)
    assert not calls.slow and not calls.wakes
    out = take_all(queue)
    assert out == expected(items)
    assert [type(a[1]) for a in out] == [type(b[1]) for b in items]  # bytearray stays one
    assert out[8][1] is items[8][1]  # the future itself
    assert len(queue) == 0 and queue.bytes == 0 and queue.added == len(items)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_order_survives_wrap_around_and_growth(implementation):
    queue, _ = make(implementation, batch_bytes=1 << 40)
    out: list[tuple[Any, ...]] = []
    n = 0
    for rounds in range(40):
        for _ in range(rounds * 7 + 1):
            queue.add_scalar(f"t{n % 3}", float(n), n, 1.0, 8)
            n += 1
        took = queue.take((OVERHEAD + 8) * (rounds * 5 + 1), 1 << 40)
        out += items_of(took[0])
        assert took[2] == len(out)  # the sequence number of the last taken
    out += take_all(queue)
    assert [item[2] for item in out] == list(range(n))
    assert [item[1] for item in out] == [(f"t{i % 3}", float(i)) for i in range(n)]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_the_gate_and_the_room_send_adds_to_slow(implementation):
    queue, calls = make(implementation, room=3 * (OVERHEAD + 8))
    for step in range(3):
        queue.add_scalar("a", 1.0, step, 1.0, 8)
    queue.add_scalar("b", 2.0, 3, 1.0, 8)  # no room
    queue.add(SUMMARY, b"xy", 4, 1.0, 2)
    assert calls.slow == [(SCALAR, ("b", 2.0), 3, 1.0, 8), (SUMMARY, b"xy", 4, 1.0, 2)]
    assert len(queue) == 3
    queue.take(1 << 40, 1 << 40)
    queue.open = False
    queue.add_scalar("c", 3.0, 5, 1.0, 8)
    assert calls.slow[-1] == (SCALAR, ("c", 3.0), 5, 1.0, 8) and len(queue) == 0
    queue.open = True
    queue.add_scalar("c", 3.0, 5, 1.0, 8)
    assert len(queue) == 1 and len(calls.slow) == 3


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_wake_once_per_filled_batch(implementation):
    size = OVERHEAD + 8
    queue, calls = make(implementation, batch_bytes=10 * size)
    for step in range(25):
        queue.add_scalar("a", 1.0, step, 1.0, 8)
    assert calls.wakes == 1 and queue.wake_sent
    queue.take(10 * size, 1 << 40)
    assert not queue.wake_sent
    queue.add_scalar("a", 1.0, 25, 1.0, 8)  # 16 pending: over a batch again
    assert calls.wakes == 2
    queue.wake_sent = False
    queue.add_scalar("a", 1.0, 26, 1.0, 8)
    assert calls.wakes == 3


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_deferred_builds_count_toward_the_bound_not_a_batch(implementation):
    # A DEFERRED event is accounted by its snapshot (released once built, long before
    # the drain): it takes room, but only other events make a batch that wakes the
    # loop, or the queue holding a quarter of its room.
    size, deferred = OVERHEAD + 8, OVERHEAD + 500  # a scalar's, a build's accounted bytes
    queue, calls = make(implementation, room=100 * size, batch_bytes=10 * size)
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    for step in range(4):
        queue.add(DEFERRED, future, step, 1.0, 500)
    assert calls.wakes == 0 and queue.bytes == queue.deferred == 4 * deferred
    assert not queue.batch_due()  # what the engine asks before it lets the lane run alone
    assert not queue.fits(90 * size)  # the bound counts them
    for step in range(4, 13):
        queue.add_scalar("a", 1.0, step, 1.0, 8)
    assert calls.wakes == 0  # 9 other events: no batch yet
    queue.add_scalar("a", 1.0, 13, 1.0, 8)
    assert calls.wakes == 1 and queue.batch_due()  # 10: a batch
    batch, _, _ = queue.take(1 << 40, 1 << 40)
    assert len(batch) == 14 and queue.deferred == 0 and queue.bytes == 0
    # A quarter of the room: woken, whatever the bytes are.
    queue.room = 80 * size  # a quarter: 7 builds of `deferred` bytes, not 6
    for step in range(6):
        queue.add(DEFERRED, future, step, 1.0, 500)
    assert calls.wakes == 1 and queue.deferred == 6 * deferred
    queue.add(DEFERRED, future, 6, 1.0, 500)
    assert calls.wakes == 2
    # Taken back, dropped, cleared: the count follows.
    assert queue.unappend(queue.added) and queue.deferred == 6 * deferred
    assert queue.put(SCALAR, ("a", 1.0), 7, 1.0, 70 * size, True) == 3
    assert queue.deferred == 3 * deferred and queue.bytes == 3 * deferred + 70 * size
    queue.clear()
    assert queue.deferred == 0 and queue.bytes == 0


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_take_detaches_a_batch_and_keeps_its_room(implementation):
    size = OVERHEAD + 8
    queue, _ = make(implementation)
    assert queue.take(100, 1000) is None
    for step in range(10):
        queue.add_scalar("a", 1.0, step, 1.0, 8)
    batch, taken, seq = queue.take(4 * size + 1, 100 * size)
    assert (len(batch), taken, seq) == (4, 4 * size, 4)
    assert queue.room == 100 * size - 3 * taken  # the batch and its two copies
    batch, taken, seq = queue.take(1, 100 * size)  # at least one
    assert (len(batch), taken, seq) == (1, size, 5)
    assert queue.room == 100 * size - size  # a lone event: no copies
    assert len(queue) == 5 and queue.bytes == 5 * size


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_put_drops_the_oldest_or_refuses(implementation):
    size = OVERHEAD + 8
    queue, _ = make(implementation, room=3 * size)
    for step in range(3):
        queue.add_scalar("a", 1.0, step, 1.0, 8)
    assert queue.put(SCALAR, ("a", 1.0), 3, 1.0, size, False) == -1
    assert not queue.fits(size) and len(queue) == 3
    assert queue.put(SCALAR, ("a", 1.0), 3, 1.0, 2 * size, True) == 2
    assert [item[2] for item in take_all(queue)] == [2, 3]
    queue.room = size
    assert queue.put(SUMMARY, b"x" * 10_000, 4, 1.0, 10_000, True) == 0  # too big, still queued
    assert len(queue) == 1


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_unappend_and_clear(implementation):
    queue, _ = make(implementation)
    queue.add_scalar("a", 1.0, 1, 1.0, 8)
    queue.add_scalar("b", 1.0, 2, 1.0, 8)
    assert not queue.unappend(1)  # not the last one
    assert queue.unappend(2) and queue.added == 1 and len(queue) == 1
    assert queue.bytes == OVERHEAD + 8
    queue.add(SUMMARY, b"x", 3, 1.0, 1)
    assert queue.clear() == 2 and len(queue) == 0 and queue.bytes == 0
    assert queue.added == 2  # counts what was ever appended


@pytest.mark.skipif(_native is None, reason="needs the compiled queue (see test_core_encoder)")
def test_native_adds_allocate_nothing_the_gc_tracks_and_leak_nothing():
    queue, _ = make("native")
    tag = "".join(("loss/", str(id(queue))))  # objects of this test's own, not interned
    payload = bytes(bytearray(b"\x0a\x00"))
    before_tag, before_payload = sys.getrefcount(tag), sys.getrefcount(payload)
    gc.collect()
    tracked = len(gc.get_objects())
    for step in range(5000):
        queue.add_scalar(tag, 0.5, step, 1.5, 8)
        queue.add(SUMMARY, payload, step, 1.5, 2)
    assert len(gc.get_objects()) - tracked < 50  # not one per event
    assert sys.getrefcount(tag) == before_tag + 5000
    batch, _, _ = queue.take(1 << 40, 1 << 40)
    batch.item(0)  # a copy as a tuple, freed at once
    batch.release(512)
    assert sys.getrefcount(tag) == before_tag and sys.getrefcount(payload) == before_payload
    with pytest.raises(IndexError):
        batch.item(0)  # released
    for step in range(100):  # left in the queue, and in a batch never released
        queue.add_scalar(tag, 0.5, step, 1.5, 8)
    batch = queue.take(50 * (OVERHEAD + 8), 1 << 40)[0]
    del queue, batch
    assert sys.getrefcount(tag) == before_tag


@pytest.mark.skipif(_native is None, reason="needs the compiled queue (see test_core_encoder)")
def test_native_queue_refuses_bad_arguments():
    queue, _ = make("native")
    with pytest.raises(TypeError):
        queue.add(SUMMARY, b"x", 1, 1.0)
    with pytest.raises(TypeError):
        queue.add_scalar("a", 1.0, 1, 1.0, "8")
    with pytest.raises(TypeError):
        _native.PendingQueue(1, 1, 1, None, print)
    assert len(queue) == 0


def test_the_writer_uses_the_queue_of_the_active_encoder(tmp_path):
    from asyncsummary import AsyncSummaryWriter

    writer = AsyncSummaryWriter(str(tmp_path), flush_secs=3600)
    try:
        native = _encoder.IMPLEMENTATION == "native"
        queue = writer._engine._queue
        assert isinstance(queue, _native.PendingQueue if native else _pending.PendingQueue)
        writer.add_scalar("loss", 0.5, 1)
        assert len(queue) == 1
    finally:
        writer.close()
