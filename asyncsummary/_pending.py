"""A writer's pending events, on the caller's side: the queue the drain takes batches from.

One job: hold events in call order with their accounted bytes, append them cheaply and
atomically, and hand the drain batches. The rules (the bound's policies, close, fork,
errors) are :class:`._engine.WriterEngine`'s: when its gate is closed (``open`` False)
or an event does not fit, ``add`` calls the engine's ``slow`` with its own arguments.

Two implementations with the same behaviour, chosen with the encoder (see
:func:`new_queue`):

* ``_native.PendingQueue`` (C, ``_queue.c``): an add is one C call, atomic under the GIL
  for other threads and for signal handlers without any lock, and an event is a slot in
  a ring buffer, not a tuple: nothing for the GC to walk or the drain to free;
* :class:`PendingQueue` here: the reference, which takes the engine's lock for the
  same atomicity; items are tuples ``(kind, payload, step, wall_time, size)``.

The C queue also feeds the native lane (``_lane.c``, where the engine starts it): the add
that fills a batch hands the whole ring to the lane's thread, which writes it to the local
file without the GIL (see ``has_lane`` and ``WriterEngine._lane_resume``).

Atomic means: a signal handler (which Python runs between bytecodes) or another thread
finds an add either not done or done, never half done (a lock left held once stopped
every writer of the process; a counter updated without its event lost count).
"""

from __future__ import annotations

import collections
import itertools
import operator
import threading
from collections.abc import Callable, MutableSequence
from typing import Any

from . import _encoder

__all__ = ["PendingQueue", "has_lane", "new_queue"]

Item = tuple[int, Any, int, float, int]
_DEFERRED = _encoder.DEFERRED


class PendingQueue:
    """The pure-Python queue (see the module docstring); ``_native.PendingQueue``'s twin.

    ``wake()`` is called once a batch is due (:meth:`batch_due`; once until the drain
    takes a batch); ``slow(kind, payload, step, wall_time, size)`` takes an add
    that the fast path cannot; ``closed_during_add(seq)`` is called, with the lock held,
    when the gate closed while this thread was appending its ``seq``-th event (a signal
    handler's ``close()``, see ``WriterEngine._closed_during_add``).
    """

    def __init__(
        self,
        room: int,
        batch_bytes: int,
        overhead: int,
        wake: Callable[[], None],
        slow: Callable[[int, Any, int, float, int], None],
        lock: threading.RLock,
        closed_during_add: Callable[[int], None],
    ) -> None:
        self.room = room
        self.open = True
        self.wake_sent = False
        self.bytes = 0
        self.deferred = 0  # of the bytes, the DEFERRED events' (see batch_due)
        self.added = 0
        self._items: collections.deque[Item] = collections.deque()
        self._batch_bytes = batch_bytes
        self._overhead = overhead
        self._wake = wake
        self._slow = slow
        self._lock = lock
        self._closed_during_add = closed_during_add

    def __len__(self) -> int:
        return len(self._items)

    def add(self, kind: int, payload: Any, step: int, wall_time: float, size: int) -> None:
        """Queue one event (``size``: its payload's bytes; the overhead is added here).

        The lock is taken by ``with`` (never ``acquire()`` then ``try``: an interrupt
        between those two once left the lock held), and each change puts every counter
        first and the one call that commits it last.
        """
        size += self._overhead
        with self._lock:
            if not self.open or self.bytes + size > self.room:
                return self._slow(kind, payload, step, wall_time, size - self._overhead)
            self._append((kind, payload, step, wall_time, size))
            if not self.open:
                self._closed_during_add(self.added)

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float, size: int) -> None:
        """``add(SCALAR, (tag, value), step, wall_time, size)``."""
        self.add(_encoder.SCALAR, (tag, value), step, wall_time, size)

    def _append(self, item: Item) -> None:
        self.bytes += item[4]
        if item[0] == _DEFERRED:
            self.deferred += item[4]
        self.added += 1
        self._items.append(item)
        if not self.wake_sent and self.batch_due():
            self.wake_sent = True
            self._wake()

    def batch_due(self) -> bool:
        """Whether the drain has a batch to take (``q_batch_due`` in ``_queue.c``).

        A DEFERRED event (a summary a worker builds) is accounted by its inputs, a
        snapshot its build releases long before the drain comes: it counts toward the
        bound but not toward a batch, so that a histogram or an image does not wake the
        loop (which takes the GIL and a core from the trainer) for a few KB. The timer
        writes them, or a batch of other events, or the queue holding a quarter of its
        room (as ``batch_bytes`` is at most): an add still finds the rest free.
        """
        return self.bytes - self.deferred >= self._batch_bytes or self.bytes >= self.room // 4

    def _forget(self, item: Item) -> None:
        """Count one event out (dropped or taken back), before it leaves the deque."""
        self.bytes -= item[4]
        if item[0] == _DEFERRED:
            self.deferred -= item[4]

    def put(
        self, kind: int, payload: Any, step: int, wall_time: float, size: int, drop_oldest: bool
    ) -> int:
        """The slow path's append, under the engine's lock (``size``: accounted).

        When the event does not fit: -1 (nothing queued), or with ``drop_oldest`` the
        oldest events are dropped until it fits (one larger than the room is still
        queued). Returns how many were dropped.
        """
        with self._lock:
            if self.bytes + size > self.room and not drop_oldest:
                return -1
            dropped = 0
            items = self._items
            while items and self.bytes + size > self.room:
                dropped += 1
                self._forget(items[0])  # the counters first, the popleft() last
                items.popleft()
            self._append((kind, payload, step, wall_time, size))
            return dropped

    def fits(self, size: int) -> bool:
        return self.bytes + size <= self.room

    def unappend(self, seq: int) -> bool:
        """Take back the last event if it is still queued and was the ``seq``-th."""
        with self._lock:
            if self.added != seq or not self._items:
                return False
            self._forget(self._items[-1])
            self.added -= 1
            self._items.pop()
            return True

    def take(
        self, batch_bytes: int, max_pending: int
    ) -> tuple[MutableSequence[Item], int, int] | None:
        """Detach the drain's next batch: ``(items, their accounted bytes, seq of the last)``.

        Items from the head while they fit in ``batch_bytes`` (at least one). The room
        becomes ``max_pending`` less what the batch keeps until written
        (:func:`reserved_for`). None when empty.
        """
        with self._lock:
            self.wake_sent = False
            items = self._items
            if not items:
                return None
            batch: MutableSequence[Item]
            taken = self.bytes
            if taken <= batch_bytes:  # all of it: one swap
                batch, self._items = items, collections.deque()
            else:
                guess = len(items) * batch_bytes // taken
                batch, taken = _take_batch(items, guess, batch_bytes)
            self.bytes -= taken
            if self.deferred:
                self.deferred -= sum(item[4] for item in batch if item[0] == _DEFERRED)
            self.room = max_pending - reserved_for(len(batch), taken)
            return batch, taken, self.added - len(self._items)

    def clear(self) -> int:
        """Drop every queued event; how many there were."""
        with self._lock:
            count = len(self._items)
            self._items = collections.deque()
            self.bytes = self.deferred = 0
            return count


def reserved_for(count: int, taken: int) -> int:
    """The room a batch of ``count`` events, ``taken`` accounted bytes, keeps until written.

    The drain copies a batch of small events while it frames them: into the buffer it
    writes, and for a moment into one more (their summaries, checked by one protobuf
    parse). A batch of several events keeps room for itself and both copies, so the
    memory the process holds for a writer stays within ``max_pending_bytes``, and the
    allocator's slack within one batch more (``benchmarks/memory.py``). A lone event
    keeps only its own room: if large, it is written from the caller's own bytes object,
    never copied (payloads over 64 KiB, see ``_encoder``); if small, its copies are small.
    ``_queue.c``'s ``take`` computes the same.
    """
    return taken if count == 1 else 3 * taken


def _take_batch(pending: collections.deque[Item], guess: int, batch: int) -> tuple[list[Item], int]:
    """Pop one batch off the head of ``pending``: (items, their accounted bytes).

    As many items as fit in ``batch`` bytes, and at least one. It pops ``guess`` items
    (the count that fills a batch at the deque's mean event size) in one go and corrects
    the count item by item, instead of testing every item's size in a Python loop.
    """
    popleft = pending.popleft
    items = list(itertools.starmap(popleft, itertools.repeat((), min(max(guess, 1), len(pending)))))
    taken = sum(map(_size_of, items))
    while taken > batch and len(items) > 1:
        item = items.pop()
        pending.appendleft(item)
        taken -= item[4]
    while pending and taken + pending[0][4] <= batch:
        item = popleft()
        items.append(item)
        taken += item[4]
    return items, taken


_size_of = operator.itemgetter(4)


def has_lane(queue: Any) -> bool:
    """Whether ``queue`` has the native lane (the C queue, where POSIX threads are)."""
    return hasattr(queue, "lane_start") and bool(_encoder._native.LANE)


def new_queue(
    room: int,
    batch_bytes: int,
    overhead: int,
    wake: Callable[[], None],
    slow: Callable[[int, Any, int, float, int], None],
    lock: threading.RLock,
    closed_during_add: Callable[[int], None],
) -> Any:
    """The queue of the active implementation (:data:`._encoder.IMPLEMENTATION`)."""
    if _encoder.IMPLEMENTATION == "native":
        return _encoder._native.PendingQueue(room, batch_bytes, overhead, wake, slow)
    return PendingQueue(room, batch_bytes, overhead, wake, slow, lock, closed_during_add)
