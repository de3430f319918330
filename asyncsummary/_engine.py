"""The writer engine: a bounded pending buffer on the caller's side, a drain task on the loop.

Guarantees (each one is tested in ``tests/test_core_engine.py`` and ``tests/test_faults_*.py``):

* **Cheap, never-waiting adds.** The caller's side appends one tuple to a deque under a
  lock and adds its size to a counter. No syscall, no parsing, no serialization, no
  wake-up of the loop per event: the loop is woken only when the pending bytes cross
  ``batch_bytes``, by the ``flush_secs`` timer, and by ``flush``/``close``.
* **Bounded memory.** Pending bytes never exceed ``max_pending_bytes`` (each event is
  counted as its payload plus :data:`ITEM_OVERHEAD`). The drain holds at most one more
  batch while it writes. When the bound is reached the policy decides:
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
  to the bound. Only ``close()`` gives up: what it could not write is counted in
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
import collections
import concurrent.futures
import dataclasses
import enum
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _event, _registry
from ._errors import (
    AsyncSummaryError,
    FlushTimeoutError,
    InvalidEventError,
    PendingLimitError,
    WriteError,
    WriterClosedError,
)
from ._loop import get_loop
from ._records import frame_parts, frame_record, frame_records
from ._sinks import Sink, SinkFactory

__all__ = ["ITEM_OVERHEAD", "Policy", "WriterEngine", "WriterStats"]

#: Bytes counted per pending event on top of its payload: what Python really holds for
#: it (the 5-tuple, its float and int objects, the bytes header, the deque slot, the
#: allocator's share), about 170-240 bytes measured (benchmarks/memory.py), rounded up.
#: Counting less let the resident memory of small events grow to 2.3x the bound.
ITEM_OVERHEAD = 256

#: Pending-item kinds beyond the Event field numbers of :mod:`._event`.
RAW_EVENT = 0  # payload: a whole serialized Event
SCALAR = 100  # payload: (tag, float)
DEFERRED = 101  # payload: concurrent Future -> list[(field, bytes)]

# Seconds of encoding between two offers of the GIL to the other threads (time.sleep(0),
# which sleeps ~50-70 us on Linux: timer slack). Bounds a trainer's wait for the GIL to
# about this (instead of the 5 ms switch interval) for ~5 % of the drain's throughput.
_SLICE = 0.001
_CHECK_EVERY = 16  # events encoded between two looks at the clock
_BATCH_CHECK_MAX = 64 << 10  # summaries up to this size are validated a chunk at a time
_CLOSE_GRACE = 1.0  # close() waits this much past its timeout for the loop to give up
_MAX_BACKOFF = 5.0
_file_counter = itertools.count()


class Policy(str, enum.Enum):
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


def _event_file_name(suffix: str, previous: str | None) -> str:
    host = socket.gethostname()
    seconds = int(time.time())
    while True:
        name = f"events.out.tfevents.{seconds:010d}.{host}.{os.getpid()}.{next(_file_counter)}{suffix}"
        # TensorBoard reads a run's files in name order and never goes back, so a
        # rotated file must sort after its predecessor (counters "9" < "10" do not).
        if previous is None or name > previous:
            return name
        seconds += 1


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
    ) -> None:
        self._logdir = logdir
        self._sink_factory = sink_factory
        self._join = join
        self._suffix = filename_suffix
        self._max_pending = max_pending_bytes
        self._policy = policy
        self._flush_secs = flush_secs
        self._fsync = fsync
        self._block_timeout = block_timeout
        self._batch_bytes = min(batch_bytes, max_pending_bytes)
        self._max_file_bytes = max_file_bytes
        self.close_timeout = close_timeout  #: what the exit's close gives this writer
        self._seen_tags: set[str] = set()
        self._files: list[str] = []
        _event.load_protos()  # never on the loop thread (see load_protos)
        self._init_state()
        self._start()

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._pending: collections.deque[tuple[int, Any, int, float, int]] = collections.deque()
        self._pending_bytes = 0
        self._peak_pending = 0
        # Sequence number of the last appended event, which is also the count of events
        # accepted (stats().queued): every accepted event is appended, once.
        self._added = 0
        self._dropped = self._lost = self._rejected = 0
        self._blocked = 0
        self._wake_sent = False
        self._report: AsyncSummaryError | None = None  # raised once on the next add
        self._state = _State.OPEN
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

    @property
    def logdir(self) -> str:
        return self._logdir

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    # ------------------------------------------------------------ caller side
    def add(self, kind: int, payload: Any, step: int, wall_time: float, size: int) -> None:
        """Queue one event. ``size`` is the payload's byte count."""
        size += ITEM_OVERHEAD
        # acquire/release rather than ``with``: half the cost, and this is the caller's
        # whole per-event price.
        lock = self._lock
        lock.acquire()
        try:
            if (
                self._state is not _State.OPEN
                or self._report is not None
                or self._pending_bytes + size > self._max_pending
            ):
                if not self._add_slow(kind, payload, step, wall_time, size):
                    return
            else:
                self._pending.append((kind, payload, step, wall_time, size))
                self._pending_bytes += size
                self._added += 1
                if self._pending_bytes < self._batch_bytes or self._wake_sent:
                    return
                self._wake_sent = True
        finally:
            lock.release()
        self._loop.call_soon_threadsafe(self._wakeup.set)

    def _add_slow(self, kind: int, payload: Any, step: int, wall_time: float, size: int) -> bool:
        """The rare cases of :meth:`add`, with the lock held. Returns "wake the loop"."""
        if self._state is _State.FORKED:
            self._start()
        if self._state is _State.CLOSED:
            raise WriterClosedError(f"writer for {self._logdir!r} is closed")
        if self._report is not None:
            error, self._report = self._report, None
            raise error
        if size > self._max_pending:
            raise ValueError(
                f"event of {size - ITEM_OVERHEAD} bytes does not fit in max_pending_bytes="
                f"{self._max_pending}; raise max_pending_bytes to log it"
            )
        if self._pending_bytes + size > self._max_pending:
            if self._policy is Policy.BLOCK:
                self._wait_for_room(size)
            elif self._policy is Policy.DROP_NEWEST:
                self._dropped += 1
                return False
            elif self._policy is Policy.DROP_OLDEST:
                while self._pending_bytes + size > self._max_pending:
                    self._pending_bytes -= self._pending.popleft()[4]
                    self._dropped += 1
            else:
                raise PendingLimitError(
                    f"{self._pending_bytes} bytes pending, max_pending_bytes={self._max_pending}"
                )
        self._pending.append((kind, payload, step, wall_time, size))
        self._pending_bytes += size
        self._added += 1
        if self._wake_sent or self._pending_bytes < self._batch_bytes:
            return False
        self._wake_sent = True
        return True

    def _wait_for_room(self, size: int) -> None:
        deadline = time.monotonic() + self._block_timeout
        self._blocked += 1
        try:
            while self._pending_bytes + size > self._max_pending:
                if not self._wake_sent:
                    self._wake_sent = True
                    self._loop.call_soon_threadsafe(self._wakeup.set)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PendingLimitError(
                        f"no room in max_pending_bytes={self._max_pending} after waiting "
                        f"{self._block_timeout:g} s for the storage"
                        + (f" (last error: {self._last_error!r})" if self._last_error else "")
                    )
                self._space.wait(remaining)
                if self._state is _State.CLOSED:
                    raise WriterClosedError(f"writer for {self._logdir!r} was closed")
                if self._report is not None:
                    error, self._report = self._report, None
                    raise error
        finally:
            self._blocked -= 1

    def flush(self, timeout: float) -> None:
        """Block until every event added so far is written (see ``AsyncSummaryWriter.flush``)."""
        target = self._target()
        self._raise_pending_report()
        if target is not None:
            future = asyncio.run_coroutine_threadsafe(self._flush_to(target), self._loop)
            self._wait(future, timeout, "flush")
            # An event it waited for may have been rejected meanwhile (InvalidEventError):
            # not written, so this flush must say so, not the next call.
            self._raise_pending_report()

    async def aflush(self, timeout: float) -> None:
        target = self._target()
        self._raise_pending_report()
        if target is not None:
            await self._await_on_loop(self._flush_to(target), timeout, "flush")
            self._raise_pending_report()  # as in flush()

    def close(self, timeout: float) -> None:
        """Write everything, close the file; idempotent, bounded by ``timeout``."""
        future = self._begin_close(timeout)
        if future is not None:
            self._wait(future, timeout + _CLOSE_GRACE, "close")
        self._raise_pending_report()

    async def aclose(self, timeout: float) -> None:
        future = self._begin_close(timeout)
        if future is not None:
            await self._await_future(future, timeout + _CLOSE_GRACE, "close")
        self._raise_pending_report()

    def stats(self) -> WriterStats:
        with self._lock:
            pending_events, pending_bytes = len(self._pending), self._pending_bytes
            queued, dropped, lost, rejected = self._added, self._dropped, self._lost, self._rejected
            peak = self._peak_pending = max(self._peak_pending, pending_bytes)
        return WriterStats(
            queued=queued,
            written=self._written,
            dropped=dropped,
            lost=lost,
            rejected=rejected,
            pending_events=pending_events,
            pending_bytes=pending_bytes,
            peak_pending_bytes=peak,
            bytes_written=self._bytes_written,
            flushes=self._flushes,
            write_errors=self._write_errors,
            last_error=self._last_error,
            files=tuple(self._files),
        )

    def _target(self) -> int | None:
        """Sequence number a flush waits for; None when there is nothing to wait for."""
        with self._lock:
            if self._state is _State.CLOSED:
                raise WriterClosedError(f"writer for {self._logdir!r} is closed")
            if self._state is _State.FORKED:  # a child that never wrote has no file
                return None
            return self._added

    def _raise_pending_report(self) -> None:
        with self._lock:
            error, self._report = self._report, None
        if error is not None:
            raise error

    def _begin_close(self, timeout: float) -> concurrent.futures.Future[None] | None:
        with self._lock:
            if self._state is _State.CLOSED:
                return None
            started = self._state is _State.OPEN
            self._state = _State.CLOSED
            self._space.notify_all()
        _registry.unregister(self)
        if not started:
            return None
        return asyncio.run_coroutine_threadsafe(self._close_on_loop(timeout), self._loop)

    def _wait(self, future: concurrent.futures.Future[None], timeout: float, what: str) -> None:
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise self._timeout_error(what, timeout) from None
        finally:
            self._forget_report(future)

    async def _await_on_loop(self, coro: Any, timeout: float, what: str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - only called from a coroutine
            running = None
        if running is self._loop:  # already on the writer's loop
            try:
                await asyncio.wait_for(asyncio.shield(coro), timeout)
            except TimeoutError:
                raise self._timeout_error(what, timeout) from None
            return
        await self._await_future(asyncio.run_coroutine_threadsafe(coro, self._loop), timeout, what)

    async def _await_future(
        self, future: concurrent.futures.Future[None], timeout: float, what: str
    ) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except TimeoutError:
            raise self._timeout_error(what, timeout) from None
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

    def _timeout_error(self, what: str, timeout: float) -> FlushTimeoutError:
        stats = self.stats()
        unwritten = stats.pending_events + self._out_events
        # A sink may keep its own last error (the remote sink retries uploads itself).
        error = self._last_error or getattr(self._sink, "last_error", None)
        cause = f"; last storage error: {error!r}" if error else ""
        return FlushTimeoutError(
            f"{what}() of {self._logdir!r} did not finish within {timeout:g} s: "
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
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), delay)
                    except TimeoutError:
                        pass
            self._wakeup.clear()
            timer_due = loop.time() >= next_timer
            try:
                await self._write_pending()
                if self._dirty and (timer_due or self._waiters or self._closing):
                    await self._flush_sink(explicit=bool(self._waiters) or self._closing)
            except Exception as exc:  # noqa: BLE001 - storage errors of any library
                self._backoff = min(max(0.05, self._backoff * 2), _MAX_BACKOFF)
                next_timer = loop.time() + min(self._backoff, self._flush_secs)
                if self._closing and next_timer >= self._close_deadline:
                    self._record_error(exc)
                    self._abandon(exc)
                    break
                self._on_error(exc)
            else:
                self._backoff = 0.0
                if timer_due:
                    next_timer = loop.time() + self._flush_secs
                self._settle_waiters()
                if self._closing and not self._pending and self._out is None:
                    break
        await self._close_sink()

    async def _write_pending(self) -> None:
        # Write what is pending now, then return to ``_run`` (which flushes and settles
        # waiters). Looping until the deque is empty would starve flush() and the timer
        # flush forever when adds keep arriving faster than a slow storage writes.
        entry_seq = self._added
        while True:
            if self._out is None and self._done_seq >= entry_seq:
                return  # what is left was added meanwhile: next wake-up or timer
            if self._out is None:
                with self._lock:
                    if not self._pending:
                        self._wake_sent = False
                        return
                    items, self._pending = self._pending, collections.deque()
                    self._peak_pending = max(self._peak_pending, self._pending_bytes)
                    self._pending_bytes = 0
                    self._wake_sent = False
                    seq = self._added
                    if self._blocked:
                        self._space.notify_all()
                data, count = await self._encode(items)
                self._out, self._out_off, self._out_events, self._out_seq = data, 0, count, seq
                if not data:
                    self._commit_out()
                    continue
            if self._sink is None:
                await self._open_sink()
            await self._write_out()
            if self._max_file_bytes is not None and self._file_bytes >= self._max_file_bytes:
                await self._flush_sink()
                await self._close_sink()

    async def _encode(
        self, items: collections.deque[tuple[int, Any, int, float, int]]
    ) -> tuple[list[bytes], int]:
        # The drain's hot loop, inlined because every call in it is paid per event.
        # * Summary bytes (up to _BATCH_CHECK_MAX) get their envelope built here, and are
        #   validated later, many at once (_settle): one C parse for all instead of one
        #   Summary.FromString each; plugin metadata is looked for the same way, among
        #   those holding a 0x4A byte (Value.metadata's tag) only.
        # * A scalar is its tag's cached head plus the packed float.
        # * The step field is encoded once per run of equal steps.
        # * Every other kind is done one by one, after settling the events before it, so
        #   the tags seen with metadata are updated in the order of the calls.
        # The GIL is offered to the caller's thread every _SLICE seconds (checked every
        # _CHECK_EVERY events): what was built so far is settled and framed first.
        out: list[bytes] = []
        encode = _event.encode_event
        check = _event.check_summary
        seen = self._seen_tags
        summary = _event.SUMMARY
        wall = _event.WALL_TIME.pack
        wall_tag = _event.WALL_TIME_TAG
        summary_tag = _event.SUMMARY_TAG
        small = _event.SMALL_VARINTS
        varint = _event.varint
        step_field = _event.step_field
        scalar_heads = _event.scalar_heads
        float32 = _event.float32
        batch_max = _BATCH_CHECK_MAX
        clock = time.perf_counter
        last_step: int | None = None
        step_part = b""
        events: list[bytes | None] = []
        append = events.append
        settled = 0  # events[:settled] are validated, their metadata handled
        maybe_meta: list[int] = []  # unsettled summaries holding a 0x4A byte
        rejected: list[Exception] = []  # in the order of the calls
        count = left = len(items)
        source = iter(items)
        deadline = clock() + _SLICE
        while left:
            n = _CHECK_EVERY if left > _CHECK_EVERY else left
            left -= n
            for kind, payload, step, wall_time, _size in itertools.islice(source, n):
                if step != last_step:
                    last_step = step
                    step_part = step_field(step)
                if kind == summary and len(payload) <= batch_max:
                    if b"J" in payload:
                        maybe_meta.append(len(events))
                    size = len(payload)
                    append(b"".join((wall(wall_tag, wall_time), step_part, summary_tag,
                                     small[size] if size < 0x80 else varint(size), payload)))
                    continue
                if kind == SCALAR:
                    try:
                        tag, value = payload
                        head = scalar_heads.get(tag) or _event.scalar_event_head(tag)
                    except Exception as exc:  # noqa: BLE001 - e.g. a tag that is not UTF-8
                        if settled < len(events):  # report the errors in call order
                            self._settle(events, settled, maybe_meta, rejected)
                            maybe_meta.clear()
                            settled = len(events)
                        rejected.append(exc)
                    else:
                        append(b"".join((wall(wall_tag, wall_time), step_part, head, float32(value))))
                    continue
                if settled < len(events):
                    self._settle(events, settled, maybe_meta, rejected)
                    maybe_meta.clear()
                try:
                    if kind == summary:
                        data = check(payload, seen)
                        # A large one: frame what came before it, then it by parts, so that
                        # its bytes are copied once (into the batch), not into an event first.
                        frame_records([e for e in events if e is not None], out)  # type: ignore[misc]
                        events.clear()
                        frame_parts((wall(wall_tag, wall_time) + step_part + summary_tag + varint(len(data)), data), out)
                    elif kind == RAW_EVENT:
                        append(payload)
                    elif kind == DEFERRED:
                        built = await asyncio.wrap_future(payload)
                        for field, data in built:
                            if field == summary:
                                data = check(data, seen)
                            append(encode(wall_time, step, field, data))
                    else:
                        append(encode(wall_time, step, kind, payload))
                except Exception as exc:  # noqa: BLE001 - bad input found off the caller's thread
                    rejected.append(exc)
                settled = len(events)
            if left and clock() < deadline:
                continue
            if settled < len(events):
                self._settle(events, settled, maybe_meta, rejected)
                maybe_meta.clear()
            frame_records([e for e in events if e is not None] if rejected else events, out)  # type: ignore[arg-type]
            for error in rejected:
                # Never write what a reader would reject: count it, tell the caller.
                with self._lock:
                    self._rejected += 1
                self._report_error(InvalidEventError(f"event not written: {error}"), error)
            events, rejected, settled = [], [], 0
            append = events.append
            if left:
                time.sleep(0)  # let the training thread take the GIL
                deadline = clock() + _SLICE
        return _chunks(out), count

    def _settle(
        self, events: list[bytes | None], start: int, maybe_meta: list[int], rejected: list[Exception]
    ) -> None:
        """Validate ``events[start:]`` (built by :meth:`_encode`) and handle their metadata.

        One parse checks them all; only when it fails, or when some of them carry plugin
        metadata, are they checked one by one (in order, as ``check_summary`` would have
        been called for each): a bad one becomes None and its error goes to ``rejected``,
        repeated metadata is stripped.
        """
        if _event.events_valid(events[start:]):  # type: ignore[arg-type]
            if not maybe_meta or not _event.any_metadata([events[i] for i in maybe_meta]):  # type: ignore[misc]
                return
            todo: Any = maybe_meta
        else:
            todo = range(start, len(events))
        check, seen = _event.check_summary, self._seen_tags
        for i in todo:
            event: bytes = events[i]  # type: ignore[assignment]
            data = _event.summary_of(event)
            try:
                checked = check(data, seen)
            except Exception as exc:  # noqa: BLE001
                events[i] = None
                rejected.append(exc)
                continue
            if checked is not data:
                events[i] = _event.with_summary(event, checked)

    async def _open_sink(self) -> None:
        previous = os.path.basename(self._files[-1]) if self._files else None
        name = self._join(self._logdir, _event_file_name(self._suffix, previous))
        sink = self._sink_factory(name)
        await sink.open()
        self._sink = sink
        self._files.append(sink.name)
        self._file_bytes = 0
        header = frame_record(_event.encode_file_version(time.time()))
        # The new file starts with its header; unwritten bytes follow it from their start.
        self._out = [header, *(self._out or ())]
        self._out_off = 0

    async def _write_out(self) -> None:
        assert self._sink is not None and self._out is not None
        skip = self._out_off  # bytes of the chunks that this sink already took
        for chunk in self._out:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            view = memoryview(chunk)
            while skip < len(view):
                n = await self._sink.write(view[skip:])
                skip += n
                self._out_off += n
                self._file_bytes += n
                self._bytes_written += n
                self._dirty = True
            skip = 0
        self._commit_out()

    def _commit_out(self) -> None:
        self._written += self._out_events
        self._events_since_flush += self._out_events
        self._done_seq = max(self._done_seq, self._out_seq)
        self._out = None
        self._out_events = 0

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
        error = WriteError(f"writing events to {self._logdir!r} failed: {exc!r}")
        self._report_error(error, exc)
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()

    def _report_error(self, error: AsyncSummaryError, cause: BaseException) -> None:
        error.__cause__ = cause
        with self._lock:
            self._report = error
            if self._blocked:
                self._space.notify_all()

    def _abandon(self, exc: BaseException) -> None:
        """close() failed: count what will never be written."""
        with self._lock:
            lost = len(self._pending) + self._out_events
            self._pending.clear()
            self._pending_bytes = 0
            self._lost += lost
            self._report = None
        self._out = None
        self._out_events = 0
        error = WriteError(
            f"closing the writer for {self._logdir!r} failed; {lost} events could not be "
            f"written and are lost: {exc!r}"
        )
        error.__cause__ = exc
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(error)
        self._waiters.clear()
        self._close_error = error

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


_BIG_CHUNK = 1 << 16


def _chunks(parts: list[bytes]) -> list[bytes]:
    """The framed parts of a batch as few buffers, without copying large payloads.

    Small parts are joined into one buffer (one write for thousands of events); a part
    of 64 KiB or more (an image, say) stays the bytes object it is, since copying it
    costs more than a write of its own (fresh pages fault one by one).
    """
    if not parts:
        return []
    if max(map(len, parts)) < _BIG_CHUNK:
        return [b"".join(parts)]
    chunks: list[bytes] = []
    run: list[bytes] = []
    for part in parts:
        if len(part) >= _BIG_CHUNK:
            if run:
                chunks.append(b"".join(run))
                run = []
            chunks.append(part)
        else:
            run.append(part)
    if run:
        chunks.append(b"".join(run))
    return chunks


def _consume_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
