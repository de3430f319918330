"""The writer engine: a bounded pending buffer on the caller's side, a drain task on the loop.

Guarantees (each one is tested in ``tests/test_engine.py`` and ``tests/test_faults.py``):

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
  its cause and raised once on the caller's next ``add``; every ``flush``/``close``
  whose events could not be written raises it too. The unwritten bytes are *kept*
  and written again (same file, from the exact byte where the failure stopped, so no
  record is torn) on the next attempt, with backoff; meanwhile new events queue up
  to the bound. Only ``close()`` gives up: what it could not write is counted in
  ``stats().lost`` and named in its error.
* **Fork.** A forked child never touches the parent's file or queue: its copy of the
  engine starts empty and creates its own file (with the child's pid) on first add.
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
from ._records import frame_record, frame_records
from ._sinks import Sink, SinkFactory

__all__ = ["ITEM_OVERHEAD", "Policy", "WriterEngine", "WriterStats"]

#: Bytes counted per pending event on top of its payload (tuple, framing, envelope).
ITEM_OVERHEAD = 64

#: Pending-item kinds beyond the Event field numbers of :mod:`._event`.
RAW_EVENT = 0  # payload: a whole serialized Event
SCALAR = 100  # payload: (tag, float)
DEFERRED = 101  # payload: concurrent Future -> list[(field, bytes)]

_CHUNK = 1024  # events encoded between two GIL releases
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
        self._seen_tags: set[str] = set()
        self._files: list[str] = []
        self._init_state()
        self._start()

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._pending: collections.deque[tuple[int, Any, int, float, int]] = collections.deque()
        self._pending_bytes = 0
        self._peak_pending = 0
        self._added = 0  # sequence number of the last appended event
        self._queued = self._dropped = self._lost = self._rejected = 0
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
        self._out: bytes | None = None  # framed bytes the sink has not taken yet
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
        with self._lock:
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
                self._queued += 1
                if self._pending_bytes < self._batch_bytes or self._wake_sent:
                    return
                self._wake_sent = True
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
        self._queued += 1
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

    async def aflush(self, timeout: float) -> None:
        target = self._target()
        self._raise_pending_report()
        if target is not None:
            await self._await_on_loop(self._flush_to(target), timeout, "flush")

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
            queued, dropped, lost, rejected = self._queued, self._dropped, self._lost, self._rejected
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
        cause = f"; last storage error: {self._last_error!r}" if self._last_error else ""
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
                    await self._flush_sink()
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
        while True:
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
    ) -> tuple[bytes, int]:
        events: list[bytes] = []
        append = events.append
        encode = _event.encode_event
        check = _event.check_summary
        seen = self._seen_tags
        summary = _event.SUMMARY
        count = 0
        for kind, payload, step, wall_time, _size in items:
            count += 1
            try:
                if kind == summary:
                    append(encode(wall_time, step, summary, check(payload, seen)))
                elif kind == SCALAR:
                    append(encode(wall_time, step, summary, _event.encode_scalar_summary(*payload)))
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
                # Never write what a reader would reject: count it, tell the caller.
                with self._lock:
                    self._rejected += 1
                self._report_error(InvalidEventError(f"event not written: {exc}"), exc)
            if count % _CHUNK == 0:
                time.sleep(0)  # let the training thread take the GIL between chunks
        out: list[bytes] = []
        frame_records(events, out)
        return b"".join(out), count

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
        self._out = header + (self._out or b"")
        self._out_off = 0

    async def _write_out(self) -> None:
        assert self._sink is not None and self._out is not None
        view = memoryview(self._out)
        while self._out_off < len(view):
            n = await self._sink.write(view[self._out_off :])
            self._out_off += n
            self._file_bytes += n
            self._bytes_written += n
            self._dirty = True
        self._commit_out()

    def _commit_out(self) -> None:
        self._written += self._out_events
        self._events_since_flush += self._out_events
        self._done_seq = max(self._done_seq, self._out_seq)
        self._out = None
        self._out_events = 0

    async def _flush_sink(self) -> None:
        if self._sink is None:
            self._dirty = False
            return
        try:
            await self._sink.flush(self._fsync)
        except FileNotFoundError:
            # The file is gone (its folder removed?): what it held since the last flush
            # is lost. Start a new file on the next attempt, and say so.
            with self._lock:
                self._lost += self._events_since_flush
            self._events_since_flush = 0
            self._dirty = False
            await self._close_sink()
            raise
        self._dirty = False
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


def _consume_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
