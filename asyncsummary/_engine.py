"""The writer engine: a bounded pending buffer on the caller's side, a drain task on the loop.

Guarantees (each one is tested in ``tests/test_core_engine.py`` and ``tests/test_faults_*.py``):

* **Cheap, never-waiting adds.** The caller's side appends the event to a queue
  (:mod:`._pending`: one atomic C call with the native encoder) and adds its size to a
  counter. No syscall, no parsing, no serialization, no
  wake-up of the loop per event: the loop is woken only when the pending bytes cross
  ``batch_bytes`` (events still being built on a worker do not count toward it, only
  toward a quarter of the bound), by the ``flush_secs`` timer, and by ``flush``/``close``. With the
  native lane (local files, the C queue: see ``_lane.c``) a full batch of events that C
  frames alone goes from the add to the lane's thread instead, and nothing of the writer
  takes the GIL until the timer or a call wakes the loop.
* **Bounded memory.** The events a writer holds, those waiting in the queue *and* the
  batch the drain took off it and is writing, never exceed ``max_pending_bytes`` (each
  event counted as its payload plus :data:`ITEM_OVERHEAD`): a batch keeps its room, and
  room for the copies framing makes of it, until the sink took all of its bytes
  (:func:`._pending.reserved_for`). When the bound is reached the policy decides:
  ``block`` (default: wait for room, at most ``block_timeout`` seconds, then
  :class:`PendingLimitError`), ``drop_oldest``, ``drop_newest`` (both counted in
  ``stats().dropped``) or ``raise``.
* **Order.** Events reach the file in the order of the ``add`` calls.
* **Timely.** Pending events are written at least every ``flush_secs`` even when
  nothing else happens.
* **Errors come back.** A failed write is kept as a :class:`WriteError` chained to
  its cause and raised once by the caller's next call (``add``, ``flush`` or
  ``close``); every ``flush``/``close`` whose events could not be written raises it
  too, and a ``flush`` whose events include one rejected as invalid raises
  :class:`InvalidEventError`. While the storage stays down each failed retry is one
  more failure, so a call made after it recovers may still raise one of those. The
  unwritten bytes are *kept*
  and written again (same file, from the exact byte where the failure stopped, so no
  record is torn) on the next attempt, with backoff; meanwhile new events queue up
  to the bound. Only ``close()`` gives up: at its timeout, or at once when retrying
  cannot help (a spool folder refused as unsafe); what it could not write is counted in
  ``stats().lost`` and named in its error. A storage call that never returns (a hung
  mount) cannot be given up on: ``flush``/``close`` raise :class:`FlushTimeoutError`
  after their timeout, and the loop still writes the events if the storage returns.
* **Fork.** A forked child never touches the parent's file or queue: its copy of the
  engine starts empty and creates its own file (with the child's pid) on first add.
  The loop thread never imports (see ``_event.load_protos``), so a fork never leaves
  the child a half-imported module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import _encoder, _event, _pending, _registry
from ._encoder import DEFERRED, RAW_EVENT, SCALAR  # noqa: F401 - the item kinds, for _writer
from ._errors import (
    AsyncSummaryError,
    FlushTimeoutError,
    InvalidEventError,
    PendingLimitError,
    RetryCannotHelp,
    WriteError,
    WriterClosedError,
)
from ._loop import get_loop
from ._records import frame_record
from ._sinks import FileSink, Sink, SinkFactory

__all__ = ["ITEM_OVERHEAD", "Policy", "WriterEngine", "WriterStats"]

#: Bytes counted per pending event on top of its payload: what Python really holds for
#: it with the pure-Python queue (the 5-tuple, its float and int objects, the bytes
#: header, the deque slot, the allocator's share), about 170-240 bytes measured
#: (benchmarks/memory.py), rounded up; the C queue's 64-byte slots hold less (same count,
#: so a bound means the same events either way). Counting less let the resident memory of
#: small events grow to 2.3x the bound.
ITEM_OVERHEAD = 256

_CLOSE_GRACE = 1.0  # close() waits this much past its timeout for the loop to give up
_MAX_BACKOFF = 5.0
_file_counter = itertools.count(1)  # event file sequence numbers of this process
_last_stem = (0, 0)  # (seconds, sequence) of the last file name issued
_name_lock = threading.Lock()
_OPEN_ATTEMPTS = 100  # names tried when one exists already (another writer took it)
_REQUEST_GAP = 0.1  # request_flush(): the loop takes at most one per this many seconds
_NO_BUDGET = 1 << 62  # the lane's byte budget for a file with no max_file_bytes


class Policy(str, enum.Enum):  # noqa: UP042 - str() stays "Policy.BLOCK", as released
    """What ``add`` does when ``max_pending_bytes`` is reached."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    RAISE = "raise"


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"
    FORKED = "forked"  # inherited by a forked child; starts on first add


@dataclasses.dataclass(frozen=True)
class WriterStats:
    """Counters of one writer, read with ``writer.stats()``."""

    queued: int  #: events accepted by add calls
    written: int  #: events whose bytes the sink took
    dropped: int  #: events dropped by the drop_oldest / drop_newest policies
    lost: int  #: events given up on by close(), or in a file removed underneath
    rejected: int  #: events found invalid on the background side and not written
    pending_events: int  #: events waiting in memory
    pending_bytes: int  #: their accounted size
    peak_pending_bytes: int  #: the most pending bytes ever held
    bytes_written: int  #: bytes the sink took, file headers included
    flushes: int  #: sink flushes (timer, flush(), close(), rotation)
    write_errors: int  #: failed attempts to open, write or flush
    last_error: BaseException | None  #: the last storage error, if any
    files: tuple[str, ...]  #: every event file this writer opened, in order


def _event_file_name(suffix: str) -> str:
    """A new event file name, never one another writer of any library can choose.

    ``events.out.tfevents.<secs>.<host>.<pid>.as<seq><suffix>``: torch, tensorboard and
    tensorboardX end theirs in ``.<pid>.<n>`` with their own counter from 0, TF1 in
    ``.<host>``, TF2 in ``.v2``; the ``as`` marker can never be one of their digits, so
    no name of ours equals one of theirs (torch's writer truncates an existing file).
    The sequence number is fixed-width and process-wide, and every name is greater than
    every name issued before in this process (TensorBoard reads a run's files in name
    order and never goes back, so a rotated or reopened file must sort last; "9" < "10"
    would not): when the clock gives an earlier second, the last one is kept.
    """
    global _last_stem
    host = socket.gethostname()
    with _name_lock:
        seconds = max(int(time.time()), _last_stem[0])
        stem = (seconds, next(_file_counter))
        _last_stem = stem
    return f"events.out.tfevents.{stem[0]:010d}.{host}.{os.getpid()}.as{stem[1]:06d}{suffix}"


def longest_event_file_name(suffix: str) -> int:
    """Bytes in the longest name :func:`_event_file_name` can give with ``suffix``."""
    sample = f"events.out.tfevents.{0:010d}.{socket.gethostname()}.{4194304}.as{0:08d}{suffix}"
    return len(os.fsencode(sample))


def _reset_names_after_fork() -> None:
    global _name_lock
    _name_lock = threading.Lock()  # the parent's may have been held by another thread


class WriterEngine:
    """Queue, bound, batching, timers and file handling of one writer."""

    def __init__(
        self,
        logdir: str,
        *,
        sink_factory: SinkFactory,
        join: Callable[[str, str], str] = os.path.join,
        filename_suffix: str = "",
        max_pending_bytes: int,
        policy: Policy,
        flush_secs: float,
        fsync: bool,
        block_timeout: float,
        batch_bytes: int,
        max_file_bytes: int | None,
        close_timeout: float = _registry.EXIT_TIMEOUT,
        display_logdir: str | None = None,
    ) -> None:
        self._logdir = logdir
        self._display = logdir if display_logdir is None else display_logdir  # credentials masked
        self._sink_factory = sink_factory
        self._join = join
        self._suffix = filename_suffix
        self._max_pending = max_pending_bytes
        self._policy = policy
        self._flush_secs = flush_secs
        self._fsync = fsync
        self._block_timeout = block_timeout
        # At most a quarter of the bound: a batch being written keeps room for itself
        # and its copies (_pending.reserved_for), and the queue keeps at least a quarter.
        self._batch_bytes = max(1, min(batch_bytes, max_pending_bytes // 4))
        self._max_file_bytes = max_file_bytes
        self.close_timeout = close_timeout  #: what the exit's close gives this writer
        self._seen_tags: set[str] = set()
        self._files: list[str] = []
        _event.load_protos()  # never on the loop thread (see load_protos)
        self._init_state()
        self._start()

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        # Reentrant: a signal handler that calls flush()/close() may run on a thread
        # that is inside add() with the lock held (see _wait).
        self._lock = threading.RLock()
        self._space = threading.Condition(self._lock)
        # The pending events, their accounted bytes (queue.bytes), the count ever added
        # (queue.added: the sequence number of the last, and stats().queued) and the
        # room (queue.room): max_pending_bytes less what the drain holds for the batch
        # it took off the queue (see _write_pending), given back once it is written.
        # queue.open is the gate of the fast path: True only while the writer is open
        # with no error to report (kept so by _state's and _report's setters); every
        # other add goes to _add_slow.
        self._queue = _pending.new_queue(
            self._max_pending,
            self._batch_bytes,
            ITEM_OVERHEAD,
            self._wake,
            self._add_slow,
            self._lock,
            self._closed_during_add,
        )
        self.add = self._queue.add
        self.add_scalar = self._queue.add_scalar
        # The native lane (the C queue only, see _lane.c): while _lane_on, full batches
        # of the queue go from the caller's add straight to a thread that writes them to
        # the local file without the GIL; the loop stops it before it does anything
        # itself (_lane_pause) and starts it again when it holds nothing (_lane_resume).
        self._lane_able = _pending.has_lane(self._queue)
        self._lane_on = False
        self._lane_fd: int | None = None  # its pipe, watched by the loop
        self._lane_note = asyncio.Event()  # the lane said something on its pipe
        self._in_flight_events = 0
        self._in_flight_bytes = 0  # accounted bytes of the batch being written
        self._peak_pending = 0
        self._dropped = self._lost = self._rejected = 0
        self._blocked = 0
        self._flush_requested = False  # request_flush() asked; the loop clears it
        self._request_poll_at = 0.0  # monotonic time the loop looks at that flag by itself
        self._report_now: AsyncSummaryError | None = None  # raised once on the next add
        self._state_now = _State.OPEN  # the queue's gate starts open
        # Loop side (touched only on the loop, counters read under the GIL).
        self._written = self._bytes_written = self._flushes = self._write_errors = 0
        self._last_error: BaseException | None = None
        self._done_seq = 0  # every event up to here is written (or dropped)
        self._sink: Sink | None = None
        self._file_bytes = 0
        self._dirty = False
        self._events_since_flush = 0
        # Framed bytes the sink has not taken yet, as chunks (large payloads are kept as
        # the caller's own bytes objects, not copied into one buffer), and how many of
        # their bytes the current sink already took.
        self._out: list[bytes] | None = None
        self._out_off = 0
        self._out_events = 0
        self._out_seq = 0
        self._closing = False
        self._close_owed = False  # closed for adds, but the loop was not told yet
        self._close_deadline = 0.0
        self._close_error: WriteError | None = None
        self._backoff = 0.0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task_done: concurrent.futures.Future[None] | None = None

    def _start(self) -> None:
        self._loop = get_loop()
        self._state = _State.OPEN
        self._task_done = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        _registry.register(self)

    def after_fork_in_child(self) -> None:
        """Forget everything of the parent's; start afresh on the first add."""
        self._init_state()
        self._files = []
        self._seen_tags = set()
        self._state = _State.FORKED

    # The fast path of add is open only while the writer is open with nothing to report:
    # every assignment of _state or _report sets the queue's gate again, closing it
    # first, so an interrupt inside one leaves it closed at worst (only slower: the slow
    # path sets it again).
    @property
    def _state(self) -> _State:
        return self._state_now

    @_state.setter
    def _state(self, state: _State) -> None:
        self._queue.open = False
        self._state_now = state
        self._set_gate()

    @property
    def _report(self) -> AsyncSummaryError | None:
        return self._report_now

    @_report.setter
    def _report(self, error: AsyncSummaryError | None) -> None:
        self._queue.open = False
        self._report_now = error
        self._set_gate()

    def _set_gate(self) -> None:
        self._queue.open = self._state_now is _State.OPEN and self._report_now is None

    def _wake(self) -> None:
        self._loop.call_soon_threadsafe(self._wakeup.set)

    @property
    def logdir(self) -> str:
        return self._logdir

    @property
    def display_logdir(self) -> str:
        """The logdir for messages: credentials in a URL masked."""
        return self._display

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    # ------------------------------------------------------------ caller side
    #: ``add(kind, payload, step, wall_time, size)``: queue one event (``size``: its
    #: payload's byte count). The queue's own method (see :mod:`._pending`): atomic for
    #: other threads and signal handlers; what it cannot do goes to :meth:`_add_slow`.
    add: Callable[[int, Any, int, float, int], None]
    #: ``add_scalar(tag, value, step, wall_time, size)``: ``add(SCALAR, (tag, value), ...)``.
    add_scalar: Callable[[str, float, int, float, int], None]

    def _add_slow(self, kind: int, payload: Any, step: int, wall_time: float, size: int) -> None:
        """An add the queue's fast path could not do: the writer is not open, an error
        is to be reported, or the event does not fit.

        Python runs a signal handler (and raises its KeyboardInterrupt) in the main
        thread between bytecodes, at the few that check for it: function entry, loop
        back-edges and returns from calls. So the lock is taken by ``with`` (never
        ``acquire()`` then ``try``: an interrupt between those two once left the lock
        held and every writer of the process stopped), and each change of the queue's
        state is one call of the queue's: an interrupt finds either none of the
        change or all of it.
        """
        size += ITEM_OVERHEAD
        with self._lock:
            queue = self._queue
            drop_oldest = self._policy is Policy.DROP_OLDEST
            while True:
                if not self._make_room(size):
                    return
                dropped = queue.put(kind, payload, step, wall_time, size, drop_oldest)
                if dropped >= 0:
                    break
                # Another thread's add took the room meanwhile (its fast path takes no lock).
            self._dropped += dropped
            self._closed_during_add(queue.added)
            self._set_gate()  # opens a gate an interrupted assignment left closed
            self._raise_report()

    def _closed_during_add(self, seq: int) -> None:
        """A signal handler closed the writer while this thread was inside ``add``.

        (The lock is reentrant, so a handler's ``close()`` runs; see :meth:`_wait`.) If
        the close finished before this event (the ``seq``-th) was taken by the drain,
        nothing will ever write it: take it back and say so, so that it is not counted
        as added. If the drain took it before, the close wrote it.
        """
        if self._state is not _State.OPEN and self._queue.unappend(seq):
            raise WriterClosedError(f"writer for {self._display!r} was closed during this add")

    def _make_room(self, size: int) -> bool:
        """The rare cases of :meth:`add`, with the lock held, before its event is
        appended (by :meth:`_add_slow`). Returns False when the event is dropped (``drop_newest``).

        Which errors mean what: ``WriterClosedError``, ``ValueError`` and
        ``PendingLimitError`` mean this event was not queued. A stored ``WriteError``
        or ``InvalidEventError`` is about earlier events: ``add`` raises it *after* this
        event is queued (it is written once the storage recovers), so the add that
        reports a failure never loses its own event.
        """
        if self._state is _State.FORKED:
            self._start()
        if self._state is _State.CLOSED:
            raise WriterClosedError(f"writer for {self._display!r} is closed")
        if size > self._max_pending:
            raise ValueError(
                f"event of {size - ITEM_OVERHEAD} bytes does not fit in max_pending_bytes="
                f"{self._max_pending}; raise max_pending_bytes to log it"
            )
        if not self._queue.fits(size):
            if self._policy is Policy.BLOCK:
                self._wait_for_room(size)
            elif self._policy is Policy.DROP_NEWEST:
                self._dropped += 1
                self._raise_report()
                return False
            elif self._policy is Policy.DROP_OLDEST:
                # queue.put drops the oldest until it fits. The batch being written
                # cannot be dropped: an event larger than the room beside it
                # (max_pending_bytes less what the batch reserved, see
                # _pending.reserved_for) is still taken.
                pass
            else:
                raise PendingLimitError(
                    f"{self._held_bytes()} bytes pending, max_pending_bytes={self._max_pending}"
                )
        return True

    def _raise_report(self) -> None:
        """Raise the stored error, if any, once this add's own event is dealt with."""
        if self._report is not None:
            error, self._report = self._report, None
            raise error

    def _wait_for_room(self, size: int) -> None:
        # Storage errors meanwhile do not end the wait: the loop retries them, and this
        # add raises the stored error once its event is queued (see _make_room).
        deadline = time.monotonic() + self._block_timeout
        self._blocked += 1
        try:
            while not self._queue.fits(size):
                if not self._queue.wake_sent:
                    self._queue.wake_sent = True
                    self._wake()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PendingLimitError(
                        f"no room in max_pending_bytes={self._max_pending} after waiting "
                        f"{self._block_timeout:g} s for the storage"
                        + (f" (last error: {self._last_error!r})" if self._last_error else "")
                    )
                self._space.wait(remaining)
                if self._state is _State.CLOSED:
                    raise WriterClosedError(f"writer for {self._display!r} was closed")
        finally:
            self._blocked -= 1

    def flush(self, timeout: float) -> None:
        """Block until every event added so far is written (see ``AsyncSummaryWriter.flush``)."""
        self.finish(self.start_flush(), timeout, "flush")

    def start_flush(self) -> concurrent.futures.Future[None] | None:
        """The first half of :meth:`flush`: ask the loop to write every event added so
        far and return at once; :meth:`finish` waits. (``flush_all`` starts every
        writer's flush this way, then waits for all, without a thread per writer: at
        exit, Python 3.12 refuses to start threads.) None: nothing to wait for."""
        target = self._target()
        self._raise_pending_report()
        if target is None:
            return None
        return asyncio.run_coroutine_threadsafe(self._flush_to(target), self._loop)

    def finish(
        self,
        future: concurrent.futures.Future[None] | None,
        timeout: float,
        what: str,
        bound: float | None = None,
    ) -> None:
        """Wait at most ``timeout`` for a flush or close started by ``start_*``; raise
        its error, or :class:`FlushTimeoutError` naming ``bound`` (default ``timeout``)."""
        if future is not None:
            self._wait(future, timeout, what, timeout if bound is None else bound)
        # An event the flush waited for may have been rejected meanwhile
        # (InvalidEventError): not written, so this call must say so, not the next one.
        self._raise_pending_report()

    def request_flush(self) -> None:
        """Ask the loop to write and flush what was added so far; return at once.

        ``flush()`` under ``flush_waits=False``. A stored error is raised as by any
        call. Requests are coalesced: the first wakes the loop at once; after the loop
        took one, requests in the next :data:`_REQUEST_GAP` seconds only set the flag,
        which the loop looks at by itself then. A framework that flushes after every
        step thus wakes the loop (and the storage) about 10 times a second, not once
        per step, whose thread hand-offs cost the training thread the GIL. The loop
        flushes the sink as its timer does (``explicit=False``: a remote sink may
        coalesce segments), so it never makes one object per step either.
        """
        with self._lock:
            if self._state is _State.CLOSED:
                raise WriterClosedError(f"writer for {self._display!r} is closed")
            if self._state is _State.FORKED:  # a child that never wrote has no file
                return
            error, self._report = self._report, None
            if error is None:
                if self._flush_requested:
                    return
                self._flush_requested = True
                if time.monotonic() < self._request_poll_at:
                    return  # the loop looks at the flag by then
        if error is not None:
            raise error
        self._loop.call_soon_threadsafe(self._wakeup.set)

    async def aflush(self, timeout: float) -> None:
        target = self._target()
        self._raise_pending_report()
        if target is not None:
            await self._await_on_loop(self._flush_to(target), timeout, "flush")
            self._raise_pending_report()  # as in flush()

    def close(self, timeout: float) -> None:
        """Write everything, close the file; idempotent, bounded by ``timeout``."""
        self.finish(self.start_close(timeout), timeout + _CLOSE_GRACE, "close", timeout)

    async def aclose(self, timeout: float) -> None:
        future = self.start_close(timeout)
        if future is not None:
            await self._await_future(future, timeout + _CLOSE_GRACE, "close")
        self._raise_pending_report()

    def _lane_held(self) -> tuple[int, int, int, int]:
        """The lane's batch (events, accounted bytes) and what it wrote uncollected
        (events, bytes)."""
        return self._queue.lane_held()[:4] if self._lane_able else (0, 0, 0, 0)

    def _held_bytes(self) -> int:
        """Accounted bytes of every event not written yet: the queue and the batches
        (the loop's, the lane's)."""
        return self._queue.bytes + self._in_flight_bytes + self._lane_held()[1]

    def stats(self) -> WriterStats:
        with self._lock:
            lane_events, lane_bytes, lane_written, lane_bytes_written = self._lane_held()
            pending_events = len(self._queue) + self._in_flight_events + lane_events
            pending_bytes = self._queue.bytes + self._in_flight_bytes + lane_bytes
            queued, dropped = self._queue.added, self._dropped
            lost, rejected = self._lost, self._rejected
            peak = self._peak_pending = max(self._peak_pending, pending_bytes)
            written = self._written + lane_written
            bytes_written = self._bytes_written + lane_bytes_written
        return WriterStats(
            queued=queued,
            written=written,
            dropped=dropped,
            lost=lost,
            rejected=rejected,
            pending_events=pending_events,
            pending_bytes=pending_bytes,
            peak_pending_bytes=peak,
            bytes_written=bytes_written,
            flushes=self._flushes,
            write_errors=self._write_errors,
            last_error=self._last_error,
            files=tuple(self._files),
        )

    def _target(self) -> int | None:
        """Sequence number a flush waits for; None when there is nothing to wait for."""
        with self._lock:
            if self._state is _State.CLOSED:
                raise WriterClosedError(f"writer for {self._display!r} is closed")
            if self._state is _State.FORKED:  # a child that never wrote has no file
                return None
            return self._queue.added

    def _raise_pending_report(self) -> None:
        with self._lock:
            error, self._report = self._report, None
        if error is not None:
            raise error

    def start_close(self, timeout: float) -> concurrent.futures.Future[None] | None:
        """The first half of :meth:`close` (see :meth:`start_flush`): the writer is
        closed for adds at once; None when its close was already started (or it never
        wrote).

        Interrupt-safe (see :meth:`add`): the state changes first, and the close is
        marked as owed until the loop has it, so a close interrupted before it reached
        the loop (Ctrl-C) is started by the next ``close()``, or by the exit's.
        """
        with self._lock:
            if self._state is not _State.CLOSED:
                self._close_owed = self._state is _State.OPEN
                self._state = _State.CLOSED  # no add gets past the gate after this
            future = None
            if self._close_owed:
                future = asyncio.run_coroutine_threadsafe(self._close_on_loop(timeout), self._loop)
                self._close_owed = False
            self._space.notify_all()
        if self._task_done is None:  # it never wrote: nothing of it is left to wait for
            _registry.unregister(self)
        return future

    @property
    def drained(self) -> concurrent.futures.Future[None] | None:
        """Done once the drain has ended (the close wrote or gave up everything); None
        when it never started (nothing was ever added)."""
        return self._task_done

    def _wait(
        self, future: concurrent.futures.Future[None], timeout: float, what: str, bound: float
    ) -> None:
        try:
            if self._lock._is_owned():  # type: ignore[attr-defined]
                self._wait_releasing_the_lock(future, timeout)
                future.result(0)
            else:
                future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise self.timeout_error(what, bound) from None
        finally:
            self._forget_report(future)

    def _wait_releasing_the_lock(
        self, future: concurrent.futures.Future[None], timeout: float
    ) -> None:
        """Wait for ``future`` while this thread holds the lock, from a signal handler
        that interrupted its ``add``: the loop needs the lock to take the pending events,
        so the wait releases it entirely (as a Condition's wait does) and takes it back."""
        deadline = time.monotonic() + timeout
        while not future.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return  # result() raises the timeout
            self._space.wait(min(remaining, 0.01))

    async def _await_on_loop(self, coro: Any, timeout: float, what: str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - only called from a coroutine
            running = None
        if running is self._loop:  # already on the writer's loop
            try:
                await asyncio.wait_for(asyncio.shield(coro), timeout)
            except TimeoutError:  # builtin TimeoutError only from 3.11
                raise self.timeout_error(what, timeout) from None
            return
        await self._await_future(asyncio.run_coroutine_threadsafe(coro, self._loop), timeout, what)

    async def _await_future(
        self, future: concurrent.futures.Future[None], timeout: float, what: str
    ) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except TimeoutError:  # builtin TimeoutError only from 3.11
            raise self.timeout_error(what, timeout) from None
        finally:
            self._forget_report(future)

    def _forget_report(self, future: concurrent.futures.Future[None]) -> None:
        # The error a flush/close raised need not be raised again by the next add.
        if future.done() and not future.cancelled():
            error = future.exception()
            if error is not None:
                with self._lock:
                    if self._report is error:
                        self._report = None

    def timeout_error(self, what: str, timeout: float) -> FlushTimeoutError:
        stats = self.stats()
        unwritten = stats.pending_events  # the batch being written included
        # A sink may keep its own last error (the remote sink retries uploads itself).
        error = self._last_error or getattr(self._sink, "last_error", None)
        cause = f"; last storage error: {error!r}" if error else ""
        return FlushTimeoutError(
            f"{what}() of {self._display!r} did not finish within {timeout:g} s: "
            f"{unwritten} events not yet written (still queued, nothing dropped){cause}"
        )

    # -------------------------------------------------------------- loop side
    async def _flush_to(self, target: int) -> None:
        if target <= self._done_seq and not self._dirty and self._out is None:
            return
        future = self._loop.create_future()
        future.add_done_callback(_consume_exception)
        self._waiters.append((target, future))
        self._wakeup.set()
        await future

    async def _close_on_loop(self, timeout: float) -> None:
        self._closing = True
        self._close_deadline = self._loop.time() + timeout
        self._wakeup.set()
        assert self._task_done is not None
        await asyncio.wrap_future(self._task_done)
        if self._close_error is not None:
            raise self._close_error

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_timer = loop.time() + self._flush_secs
        while True:
            if not self._wakeup.is_set():
                delay = next_timer - loop.time()
                if self._request_poll_at:
                    delay = min(delay, self._request_poll_at - time.monotonic())
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), delay)
                    except TimeoutError:  # builtin TimeoutError only from 3.11
                        pass
            self._wakeup.clear()
            timer_due = loop.time() >= next_timer
            with self._lock:
                requested, self._flush_requested = self._flush_requested, False
                if requested:
                    self._request_poll_at = time.monotonic() + _REQUEST_GAP
                elif self._request_poll_at and time.monotonic() >= self._request_poll_at:
                    self._request_poll_at = 0.0  # no request came: callers wake the loop again
            try:
                await self._lane_pause()
                await self._write_pending()
                if self._dirty and (timer_due or requested or self._waiters or self._closing):
                    await self._flush_sink(explicit=bool(self._waiters) or self._closing)
            except Exception as exc:  # noqa: BLE001 - storage errors of any library
                self._backoff = min(max(0.05, self._backoff * 2), _MAX_BACKOFF)
                next_timer = loop.time() + min(self._backoff, self._flush_secs)
                if self._closing and (
                    next_timer >= self._close_deadline or isinstance(exc, RetryCannotHelp)
                ):
                    self._record_error(exc)
                    self._abandon(exc)
                    break
                self._on_error(exc)
            else:
                self._backoff = 0.0
                if timer_due:
                    next_timer = loop.time() + self._flush_secs
                self._settle_waiters()
                if self._closing and not self._queue and self._out is None:
                    break
                self._lane_resume()
        await self._close_sink()
        if self._lane_fd is not None:
            self._loop.remove_reader(self._lane_fd)
        # The drain has ended: no flush may wait on it any more (one that timed out
        # while the sink still held its events would wait forever). The close either
        # wrote everything or gave up with its error.
        self._release_waiters(self._close_error)

    def _lane_start(self) -> bool:
        """Start the native lane on the open local file, if the loop holds nothing of
        its own to write (the lane must never write beside it)."""
        sink = self._sink
        if not self._lane_able or type(sink) is not FileSink or self._out is not None:
            return False
        budget = _NO_BUDGET
        if self._max_file_bytes is not None:
            budget = self._max_file_bytes - self._file_bytes
            if budget <= 0:
                return False
        try:
            fd = self._queue.lane_start(sink.fileno(), budget, self._max_pending)
        except OSError:  # no thread to be had (a process at its limit): the loop writes
            self._lane_able = False
            return False
        if self._lane_fd is None:
            self._lane_fd = fd
            self._loop.add_reader(fd, self._on_lane_note)
        self._lane_on = True
        return True

    async def _lane_write(self) -> bool:
        """Have the lane write what is queued (the head of a backlog) while the loop
        waits: under a trainer that holds the GIL, the loop's own batches need it several
        times each and fall behind for good; the lane needs it never. False when it
        took nothing (the loop writes)."""
        if not self._lane_able or self._queue.unlaneable or not self._lane_start():
            return False
        with self._lock:
            self._peak_pending = max(self._peak_pending, self._held_bytes())
            gave = self._queue.lane_give()
        await self._lane_pause()
        return gave

    def _lane_resume(self) -> None:
        """Leave the lane running on its own (the adds hand it full batches) while nobody
        waits on the loop."""
        if (
            self._waiters
            or self._closing
            or self._blocked  # a blocked add waits for the loop to give room back
            or self._flush_requested
            or self._state is not _State.OPEN
            or not self._lane_start()
        ):
            return
        if self._queue.batch_due() and not self._queue.lane_give():
            return  # a full batch the lane cannot take: the loop's wake-up stays set
        # A wake-up for a full batch that came meanwhile is the lane's now; every other
        # reason to wake the loop is a state looked at above, or comes later.
        self._queue.wake_sent = False
        self._wakeup.clear()

    def _on_lane_note(self) -> None:
        assert self._lane_fd is not None
        try:
            os.read(self._lane_fd, 4096)
        except BlockingIOError:
            pass
        self._lane_note.set()
        self._wakeup.set()

    async def _lane_pause(self) -> None:
        """Stop the lane, wait for the batch it is writing, and take over its counts;
        a batch it failed to write becomes the loop's own (raising its error)."""
        if not self._lane_on:
            return
        self._lane_on = False
        self._lane_note.clear()
        while not self._queue.lane_stop():
            await self._lane_note.wait()
            self._lane_note.clear()
        with self._lock:
            (events, nbytes, seq, _batches, err, rest, rest_events, rest_seq, rest_taken) = (
                self._queue.lane_collect()
            )
            self._written += events
            self._bytes_written += nbytes
            if err:
                self._in_flight_events, self._in_flight_bytes = rest_events, rest_taken
            elif self._blocked:
                self._space.notify_all()
        self._events_since_flush += events
        self._file_bytes += nbytes
        self._dirty = self._dirty or nbytes > 0
        if events:
            self._done_seq = max(self._done_seq, seq)
        if err:
            # Written again, by the sink, from the exact byte where the lane stopped.
            self._out, self._out_off, self._out_events, self._out_seq = [rest], 0, rest_events, rest_seq
            assert self._sink is not None
            raise OSError(err, os.strerror(err), self._sink.name)
        if self._max_file_bytes is not None and self._file_bytes >= self._max_file_bytes:
            await self._flush_sink()
            await self._close_sink()

    async def _write_pending(self) -> None:
        # Write what is pending now, then return to ``_run`` (which flushes and settles
        # waiters). Looping until the queue is empty would starve flush() and the timer
        # flush forever when adds keep arriving faster than a slow storage writes.
        #
        # One batch at a time: the drain takes at most ``batch_bytes`` of items (at
        # least one) from the head of the queue, and their room (and the room of the
        # copies framing makes, see _pending.reserved_for) is given back only when the
        # sink has taken all their bytes (_commit_out). So the events the process holds, queued
        # or being written, and their copies stay within max_pending_bytes however slow
        # the storage is.
        # Taking the whole queue at once freed all its room while the drain still held
        # it, so a slow but moving storage let memory grow to twice the bound and more;
        # freeing a batch's room when it was taken still let it grow by two batches
        # (the items and their framed copy) beyond the bound.
        entry_seq = self._queue.added
        while True:
            if self._out is None and self._done_seq >= entry_seq:
                return  # what is left was added meanwhile: next wake-up or timer
            if self._out is None:
                if await self._lane_write():
                    continue
                with self._lock:
                    self._peak_pending = max(self._peak_pending, self._held_bytes())
                    # One atomic call: the batch, its bytes, the room it keeps, and the
                    # sequence number of its last event (the queue holds the newest
                    # events, contiguous up to the last added).
                    took = self._queue.take(self._batch_bytes, self._max_pending)
                    if took is None:
                        return
                    items, taken, seq = took
                    self._in_flight_events = len(items)
                    self._in_flight_bytes = taken
                rejected = self._rejected
                data, count = await self._encode(items)
                count -= self._rejected - rejected  # stats().written: only what is written
                self._out, self._out_off, self._out_events, self._out_seq = data, 0, count, seq
                # No local may keep a batch alive once written: while the next one is
                # framed, the last one's bytes would still be held (one batch more).
                del data, items
                if not self._out:
                    self._commit_out()
                    continue
            if self._sink is None:
                await self._open_sink()
            await self._write_out()
            if self._max_file_bytes is not None and self._file_bytes >= self._max_file_bytes:
                await self._flush_sink()
                await self._close_sink()

    async def _encode(self, items: Any) -> tuple[list[bytes], int]:
        """Frame a batch (see :mod:`._encoder`); count and report the rejected events."""
        count = len(items)
        data, rejected = await _encoder.encode(items, self._seen_tags)
        for error in rejected:
            # Never write what a reader would reject: count it, tell the caller.
            with self._lock:
                self._rejected += 1
            if isinstance(error, AsyncSummaryError):
                # A deferred build job's own verdict (e.g. the WriteError of projector
                # files that could not be written): raised as it is, with its cause.
                self._report_error(error, None)
            else:
                self._report_error(InvalidEventError(f"event not written: {error}"), error)
        return data, count

    async def _open_sink(self) -> None:
        # An existing name is never an error and never truncated: take the next one.
        for attempt in range(_OPEN_ATTEMPTS):
            sink = self._sink_factory(self._join(self._logdir, _event_file_name(self._suffix)))
            try:
                await sink.open()
                break
            except FileExistsError:
                if attempt == _OPEN_ATTEMPTS - 1:
                    raise
        self._sink = sink
        self._files.append(sink.name)
        self._file_bytes = 0
        header = frame_record(_event.encode_file_version(time.time()))
        # The new file starts with its header; unwritten bytes follow it from their start.
        self._out = [header, *(self._out or ())]
        self._out_off = 0

    async def _write_out(self) -> None:
        assert self._sink is not None and self._out is not None
        parts = _after(self._out, self._out_off)  # what this sink has not taken yet
        while parts:
            n = await self._sink.write_parts(parts)
            parts = _after(parts, n)
            self._out_off += n
            self._file_bytes += n
            self._bytes_written += n
            self._dirty = True
        self._commit_out()

    def _commit_out(self) -> None:
        """The sink took every byte of the batch: count it, give its room back."""
        self._written += self._out_events
        self._events_since_flush += self._out_events
        self._done_seq = max(self._done_seq, self._out_seq)
        self._out = None
        self._out_events = 0
        with self._lock:
            self._peak_pending = max(self._peak_pending, self._held_bytes())
            self._in_flight_events = self._in_flight_bytes = 0
            self._queue.room = self._max_pending
            if self._blocked:
                self._space.notify_all()

    async def _flush_sink(self, explicit: bool = True) -> None:
        if self._sink is None:
            self._dirty = False
            return
        try:
            # False: the sink held data back (see Sink.flush); it stays unflushed.
            held_back = await self._sink.flush(self._fsync, explicit=explicit) is False
        except FileNotFoundError:
            # The file is gone (its folder removed?): what it held since the last flush
            # is lost. Start a new file on the next attempt, and say so.
            with self._lock:
                self._lost += self._events_since_flush
            self._events_since_flush = 0
            self._dirty = False
            await self._close_sink()
            raise
        self._dirty = held_back
        self._flushes += 1
        self._events_since_flush = 0

    async def _close_sink(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                await sink.close()
            except Exception as exc:  # noqa: BLE001
                self._on_error(exc)

    def _record_error(self, exc: BaseException) -> None:
        self._write_errors += 1
        self._last_error = exc

    def _on_error(self, exc: BaseException) -> None:
        self._record_error(exc)
        error = WriteError(f"writing events to {self._display!r} failed: {exc!r}")
        self._report_error(error, exc)
        self._release_waiters(error)

    def _report_error(self, error: AsyncSummaryError, cause: BaseException | None) -> None:
        """Store ``error`` for the caller's next call; ``cause`` (None: keep its own)."""
        if cause is not None:
            error.__cause__ = cause
        with self._lock:
            self._report = error
            if self._blocked:
                self._space.notify_all()

    def _abandon(self, exc: BaseException) -> None:
        """close() failed: count what will never be written."""
        with self._lock:
            lost = self._queue.clear() + self._out_events
            self._queue.room = self._max_pending
            self._in_flight_events = self._in_flight_bytes = 0
            self._lost += lost
            self._report = None
        self._out = None
        self._out_events = 0
        error = WriteError(
            f"closing the writer for {self._display!r} failed; {lost} events could not be "
            f"written and are lost: {exc!r}"
        )
        error.__cause__ = exc
        self._release_waiters(error)
        self._close_error = error

    def _release_waiters(self, error: BaseException | None) -> None:
        """Every waiting flush returns now: with ``error``, or (None) as done."""
        for _, future in self._waiters:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        self._waiters.clear()

    def _settle_waiters(self) -> None:
        if not self._waiters:
            return
        keep = []
        for target, future in self._waiters:
            if future.done():
                continue
            if target <= self._done_seq and not self._dirty and self._out is None:
                future.set_result(None)
            else:
                keep.append((target, future))
        self._waiters = keep


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_names_after_fork)


def _consume_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _after(parts: Sequence[bytes | memoryview], skip: int) -> list[memoryview]:
    """Views of ``parts`` past their first ``skip`` bytes (the ones a sink took)."""
    out: list[memoryview] = []
    for part in parts:
        if skip >= len(part):
            skip -= len(part)
            continue
        view = memoryview(part)
        out.append(view[skip:] if skip else view)
        skip = 0
    return out
