"""``AsyncSummaryWriter``: ``tf.compat.v1.summary.FileWriter``'s API on a background loop.

Every ``add_*`` method does only what must happen on the caller's thread (check its
arguments, snapshot the payload as bytes) and queues the event; framing, validation,
metadata stripping and I/O run on the shared background loop (see ``_engine``).
TensorFlow is never imported here: protos are recognised by their ``SerializeToString``.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from types import TracebackType
from typing import Any

from . import _event
from ._engine import (
    DEFERRED,
    ITEM_OVERHEAD,
    RAW_EVENT,
    Policy,
    WriterEngine,
    WriterStats,
    longest_event_file_name,
)
from ._plugin_assets import write_plugin_assets
from ._sinks import FileSink, SinkFactory
from ._storage import resolve_logdir

__all__ = ["AsyncSummaryWriter"]

_NAME_MAX = 255  # bytes in a file name, on every common file system and object store
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _step(global_step: Any) -> int:
    """TF's ``int(global_step)``, with a clear error instead of a silent int64 wrap."""
    if global_step is None:
        return 0
    if type(global_step) is not int:
        if isinstance(global_step, (str, bytes, bytearray)):
            raise TypeError(f"global_step must be a number, not {type(global_step).__name__}")
        try:
            global_step = int(global_step)
        except (TypeError, ValueError, OverflowError) as exc:  # int(inf): OverflowError
            error = TypeError if isinstance(exc, TypeError) else ValueError
            raise error(f"global_step must be an integer, got {global_step!r}") from None
    if not _INT64_MIN <= global_step <= _INT64_MAX:
        raise ValueError(f"global_step {global_step} does not fit in int64")
    return global_step


def _is_message(message: Any, name: str) -> bool:
    """Whether ``message`` is TF's, TensorBoard's or tensorboardX's copy of the proto ``name``.

    Any other message's bytes could be unreadable in its place (a reader would then
    reject the whole file), so the ``add_*`` methods refuse it with a TypeError.
    """
    full_name = getattr(getattr(message, "DESCRIPTOR", None), "full_name", "")
    return full_name in (f"tensorflow.{name}", f"tensorboard.{name}", f"tensorboardX.{name}")


def _wall_time(walltime: Any) -> float:
    if walltime is None:
        return time.time()
    if isinstance(walltime, (str, bytes, bytearray)):
        raise TypeError(f"walltime must be a number, not {type(walltime).__name__}")
    try:
        value = float(walltime)
    except OverflowError:
        raise ValueError(f"walltime {walltime!r} is out of range") from None
    if not math.isfinite(value):
        raise ValueError(f"walltime must be finite, got {walltime!r}")
    return value


def _unencodable(name: str) -> bool:
    try:
        os.fsencode(name)
    except UnicodeEncodeError:
        return True
    return False


def _check_graph_def(data: bytes) -> None:
    """Bytes given as a graph must parse as a GraphDef: TensorBoard's graph loader
    rejects anything else, and once written it cannot be taken back."""
    from tensorboard.compat.proto import graph_pb2

    try:
        graph_pb2.GraphDef.FromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ValueError(f"graph bytes are not a serialized GraphDef: {exc}") from None


#: The longest timeout accepted (about 31 years): a larger one overflows the loop's and
#: the threads' timers later, on the background side, where it would lose events.
MAX_SECONDS = 1e9


def _timeout(timeout: Any, default: float) -> float:
    """A flush/close timeout: None (the writer's default) or a finite number >= 0."""
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if not (math.isfinite(timeout) and 0 <= timeout <= MAX_SECONDS):
        raise ValueError(f"timeout must be between 0 and {MAX_SECONDS:g} s, got {timeout!r}")
    return float(timeout)


def close_leaving_with(close: Any, exc: BaseException | None) -> None:
    """``close()`` on leaving a ``with``: its error is raised, unless the body raised."""
    if exc is None:
        close()
        return
    try:
        close()
    except Exception as error:  # noqa: BLE001 - never hide the body's own exception
        _note_close_error(exc, error)


def _note_close_error(exc: BaseException, error: BaseException) -> None:
    """The body of a ``with`` raised and closing failed too: the body's exception goes
    on (a FlushTimeoutError must not replace a training crash), carrying the close's
    error in its notes (Python >= 3.11) and as a warning that names both."""
    message = f"asyncsummary: closing the writer after {type(exc).__name__} also failed: {error!r}"
    if hasattr(exc, "add_note"):
        exc.add_note(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


class AsyncSummaryWriter:
    """Writes TensorBoard event files without making the caller wait for storage.

    A drop-in for ``tf.compat.v1.summary.FileWriter`` (same positional arguments and
    methods) that needs no TensorFlow. ``add_*`` calls return after queueing the event
    in memory; a shared background thread running an asyncio loop frames and writes
    the events in batches.

    Args:
        logdir: Folder of the event files (made if missing), or a URL that fsspec knows.
        graph: A ``tf.Graph`` (or ``GraphDef``) written first, as FileWriter does.
        max_queue: Accepted for compatibility; the bound is ``max_pending_bytes``.
        flush_secs: Pending events are written at least this often (seconds), so a
            killed process loses at most this much.
        graph_def: Deprecated twin of ``graph``, as in TF.
        filename_suffix: Appended to every event file name.
        session: Not supported (TF2's summary-op writer); must be None.
        max_pending_bytes: Bound of the events held in memory: those waiting and the
            batch being written (with room for its framed copies), each counted as its
            payload plus 256 bytes (so at least 256).
        policy: What an add does at the bound: ``"block"`` (default), ``"drop_oldest"``,
            ``"drop_newest"`` or ``"raise"``.
        fsync: fsync the file on every flush (slower, survives power loss).
        block_timeout: Longest time a ``"block"`` add waits for room, then raises.
        flush_timeout: Default timeout of ``flush()``/``aflush()``.
        flush_waits: True (default): ``flush()`` returns once the events are written.
            False: ``flush()`` only asks the background loop to write and flush them
            and returns at once, for frameworks that call ``flush()`` after every
            logged step (Lightning, Hugging Face, accelerate); requests in a burst
            are coalesced, written within about 0.1 s (or once the storage is free
            again). What it trades: a
            returned ``flush()`` no longer means "on disk", so a crash right after it
            loses what the loop had not written yet (``close()``, exit and the
            ``flush_secs`` timer still bound that loss, as without any flush), and a
            write error is raised by the next call (add, flush or close) instead of by
            the flush that covered it. ``close()`` always waits.
        close_timeout: Default timeout of ``close()``/``aclose()`` and of exit.
        max_file_bytes: Start a new event file (named to sort later) past this size.
        batch_bytes: Pending bytes that wake the background loop before the timer does,
            and the most it writes at once (at least one event); at most a quarter of
            ``max_pending_bytes`` is used. The native lane (local files) is handed the
            pending events once they reach it, a backlog whole up to half the bound.
            Events still being built (the torch-style writer's histograms, images, ...)
            count toward the bound by their snapshots but not toward a batch: the timer
            writes them, or a batch of other events, or a quarter of the bound pending.
        sink_factory: Makes the sink of each event file (tests and benchmarks wrap it).
        storage_options: Passed to fsspec for a remote ``logdir`` URL.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        graph: Any = None,
        max_queue: int = 10,
        flush_secs: float = 2.0,
        graph_def: Any = None,
        filename_suffix: str | None = None,
        session: Any = None,
        *,
        max_pending_bytes: int = 64 << 20,
        policy: Policy | str = Policy.BLOCK,
        fsync: bool = False,
        block_timeout: float = 60.0,
        flush_timeout: float = 60.0,
        flush_waits: bool = True,
        close_timeout: float = 30.0,
        max_file_bytes: int | None = None,
        batch_bytes: int = 512 << 10,
        sink_factory: SinkFactory | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if session is not None:
            raise TypeError("session writers (TF2 summary ops) are not supported; pass session=None")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise ValueError(f"max_queue must be a non-negative int, got {max_queue!r}")
        for name, value in (
            ("flush_secs", flush_secs),
            ("block_timeout", block_timeout),
            ("flush_timeout", flush_timeout),
            ("close_timeout", close_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
                raise ValueError(f"{name} must be positive and at most {MAX_SECONDS:g} s, got {value!r}")
        for name, size in (("max_pending_bytes", max_pending_bytes), ("batch_bytes", batch_bytes)):
            if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                raise ValueError(f"{name} must be a positive int, got {size!r}")
        if max_pending_bytes < ITEM_OVERHEAD:  # not even an empty event would ever fit
            raise ValueError(
                f"max_pending_bytes must be at least {ITEM_OVERHEAD} (each event counts as its "
                f"payload plus {ITEM_OVERHEAD} bytes), got {max_pending_bytes}"
            )
        if max_file_bytes is not None and (
            isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int) or max_file_bytes <= 0
        ):
            raise ValueError(f"max_file_bytes must be a positive int or None, got {max_file_bytes!r}")
        if filename_suffix is not None and not isinstance(filename_suffix, str):
            raise TypeError("filename_suffix must be a str")
        if filename_suffix and ("/" in filename_suffix or os.sep in filename_suffix):
            raise ValueError(f"filename_suffix must not contain a path separator: {filename_suffix!r}")
        if filename_suffix and ("\x00" in filename_suffix or _unencodable(filename_suffix)):
            raise ValueError(f"filename_suffix is not a valid file name part: {filename_suffix!r}")
        if filename_suffix and longest_event_file_name(filename_suffix) > _NAME_MAX:
            raise ValueError(
                f"filename_suffix is too long: event file names would exceed {_NAME_MAX} bytes"
            )
        if sink_factory is not None and not callable(sink_factory):
            raise TypeError(f"sink_factory must be callable, got {sink_factory!r}")
        try:
            policy = Policy(policy)
        except ValueError:
            choices = ", ".join(repr(p.value) for p in Policy)
            raise ValueError(f"policy must be one of {choices}, got {policy!r}") from None
        location = resolve_logdir(logdir, storage_options)
        if _unencodable(location.logdir):  # else every write would fail, on the loop
            raise ValueError(f"logdir is not a valid path: {location.display!r}")
        self._storage_options = storage_options
        if not isinstance(flush_waits, bool):
            raise TypeError(f"flush_waits must be a bool, got {flush_waits!r}")
        self._flush_timeout = float(flush_timeout)
        self._flush_waits = flush_waits
        self._close_timeout = float(close_timeout)
        self._seen_run_metadata_tags: set[str] = set()
        self._engine_options: dict[str, Any] = dict(
            sink_factory=sink_factory or location.sink_factory or FileSink,
            join=location.join,
            filename_suffix=filename_suffix or "",
            max_pending_bytes=max_pending_bytes,
            policy=policy,
            flush_secs=float(flush_secs),
            fsync=bool(fsync),
            block_timeout=float(block_timeout),
            batch_bytes=batch_bytes,
            max_file_bytes=max_file_bytes,
            close_timeout=float(close_timeout),
            display_logdir=location.display,
        )
        self._logdir = location.logdir
        self._engine = WriterEngine(self._logdir, **self._engine_options)
        if graph is not None or graph_def is not None:
            self.add_graph(graph, graph_def=graph_def)
            self._add_meta_graph_of(graph, graph_def)

    # --------------------------------------------------------------- FileWriter API
    def get_logdir(self) -> str:
        """The directory (or URL) this writer writes to."""
        return self._logdir

    def add_summary(self, summary: Any, global_step: Any = None, walltime: Any = None) -> None:
        """Queue a ``Summary`` (serialized bytes, as a session returns them, or a proto).

        Bytes are not parsed here: they are validated, and plugin metadata is kept only
        on the first value of each tag, on the background side. ``walltime`` (seconds
        since the epoch; default now) is torch's ``FileWriter.add_summary`` argument.
        """
        if type(summary) is bytes:
            data = summary
        elif isinstance(summary, (bytes, bytearray, memoryview)):
            data = bytes(summary)
        elif _is_message(summary, "Summary"):
            data = summary.SerializeToString()
        else:
            raise TypeError(f"summary must be bytes or a Summary proto, not {type(summary).__name__}")
        step = global_step if type(global_step) is int and _INT64_MIN <= global_step <= _INT64_MAX else _step(global_step)
        wall_time = time.time() if walltime is None else _wall_time(walltime)
        self._engine.add(_event.SUMMARY, data, step, wall_time, len(data))

    def add_scalar(self, tag: str, value: Any, global_step: Any = None, walltime: Any = None) -> None:
        """Queue one scalar (``simple_value``, float32 like TF's scalar summaries)."""
        if type(tag) is not str:
            raise TypeError(f"tag must be a str, not {type(tag).__name__}")
        if type(value) is not float:
            if isinstance(value, (str, bytes, bytearray)) or value is None:
                raise TypeError(f"value must be a real number, not {type(value).__name__}")
            try:
                value = float(value)
            except OverflowError:
                raise ValueError(f"value {value!r} is out of range of a float") from None
        if not tag.isascii():
            tag.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
        # The common arguments (an in-range int step, no walltime) skip the helpers' calls.
        step = global_step if type(global_step) is int and _INT64_MIN <= global_step <= _INT64_MAX else _step(global_step)
        wall_time = time.time() if walltime is None else _wall_time(walltime)
        self._engine.add_scalar(tag, value, step, wall_time, len(tag) * 4 + 8)

    def add_event(self, event: Any, step: Any = None, walltime: Any = None) -> None:
        """Queue a whole ``Event`` proto, as it is (TF's ``add_event(event)``).

        ``step`` and ``walltime`` are torch's ``FileWriter.add_event`` arguments: given,
        they replace the event's own fields (in a copy; the caller's proto is untouched).
        """
        if not _is_message(event, "Event"):  # its bytes are written as they are
            raise TypeError(f"event must be an Event proto, not {type(event).__name__}")
        if step is not None or walltime is not None:
            event = type(event).FromString(event.SerializeToString())
            if step is not None:
                event.step = _step(step)
            if walltime is not None:
                event.wall_time = _wall_time(walltime)
        data = event.SerializeToString()
        self._engine.add(RAW_EVENT, data, 0, 0.0, len(data))

    def add_session_log(self, session_log: Any, global_step: Any = None) -> None:
        """Queue a ``SessionLog`` (START, STOP, CHECKPOINT)."""
        if not _is_message(session_log, "SessionLog"):
            raise TypeError(f"session_log must be a SessionLog proto, not {type(session_log).__name__}")
        data = session_log.SerializeToString()
        self._engine.add(_event.SESSION_LOG, data, _step(global_step), time.time(), len(data))

    def add_graph(self, graph: Any, global_step: Any = None, graph_def: Any = None) -> None:
        """Queue a graph: a ``tf.Graph``, a ``GraphDef`` proto, or serialized GraphDef bytes."""
        if graph is not None and graph_def is not None:
            raise ValueError("Please pass only graph, or graph_def (deprecated), but not both.")
        graph = graph if graph is not None else graph_def
        if hasattr(graph, "as_graph_def"):
            data = graph.as_graph_def(add_shapes=True).SerializeToString()
            write_plugin_assets(graph, self._logdir, self._storage_options)
        elif isinstance(graph, (bytes, bytearray, memoryview)):
            data = bytes(graph)
            _check_graph_def(data)
        elif _is_message(graph, "GraphDef"):
            data = graph.SerializeToString()
        else:
            raise TypeError("The passed graph must be an instance of `Graph` or the deprecated `GraphDef`")
        self._engine.add(_event.GRAPH_DEF, data, _step(global_step), time.time(), len(data))

    def add_meta_graph(self, meta_graph_def: Any, global_step: Any = None) -> None:
        """Queue a ``MetaGraphDef``."""
        if not _is_message(meta_graph_def, "MetaGraphDef"):
            raise TypeError(
                f"meta_graph_def must be type MetaGraphDef, saw type: {type(meta_graph_def)}"
            )
        data = meta_graph_def.SerializeToString()
        self._engine.add(_event.META_GRAPH_DEF, data, _step(global_step), time.time(), len(data))

    def add_run_metadata(self, run_metadata: Any, tag: str, global_step: Any = None) -> None:
        """Queue the ``RunMetadata`` of one ``session.run`` under ``tag`` (once per tag)."""
        if not isinstance(tag, str):
            raise TypeError(f"tag must be a str, not {type(tag).__name__}")
        if tag in self._seen_run_metadata_tags:
            raise ValueError("The provided tag was already used for this event type")
        if not _is_message(run_metadata, "RunMetadata"):
            raise TypeError(f"run_metadata must be a RunMetadata proto, not {type(run_metadata).__name__}")
        metadata = run_metadata.SerializeToString()
        tag_bytes = tag.encode("utf-8")
        data = b"".join(
            (b"\x0a", _event.varint(len(tag_bytes)), tag_bytes,
             b"\x12", _event.varint(len(metadata)), metadata)
        )
        self._engine.add(_event.TAGGED_RUN_METADATA, data, _step(global_step), time.time(), len(data))
        self._seen_run_metadata_tags.add(tag)

    def flush(self, timeout: float | None = None) -> None:
        """Return once every event added before the call is written to the OS.

        (fsynced with ``fsync=True``; uploaded, for a remote logdir.) Raises
        :class:`WriteError` if they could not be written, or :class:`FlushTimeoutError`
        after ``timeout`` (default ``flush_timeout``); the events stay queued either way.

        With ``flush_waits=False`` it only asks for the write and returns at once; it
        still raises an error stored since the last call (see the class docstring).
        """
        timeout = _timeout(timeout, self._flush_timeout)
        if self._flush_waits:
            self._engine.flush(timeout)
        else:
            self._engine.request_flush()

    def close(self, timeout: float | None = None) -> None:
        """Flush and close. Idempotent; returns within ``timeout`` (default ``close_timeout``)."""
        self._engine.close(_timeout(timeout, self._close_timeout))

    def reopen(self) -> None:
        """After ``close()``: accept events again, into a new event file. Else nothing."""
        if self._engine.closed:
            self._engine = WriterEngine(self._logdir, **self._engine_options)

    # --------------------------------------------------------------------- async API
    async def aflush(self, timeout: float | None = None) -> None:
        """``flush()`` for coroutines: the calling loop keeps running while it waits.

        With ``flush_waits=False`` it asks for the write and returns, as ``flush()``.
        """
        timeout = _timeout(timeout, self._flush_timeout)
        if self._flush_waits:
            await self._engine.aflush(timeout)
        else:
            self._engine.request_flush()

    async def aclose(self, timeout: float | None = None) -> None:
        """``close()`` for coroutines."""
        await self._engine.aclose(_timeout(timeout, self._close_timeout))

    # ----------------------------------------------------------------------- extras
    @property
    def flush_waits(self) -> bool:
        """Whether ``flush()`` waits for the write (the ``flush_waits`` option)."""
        return self._flush_waits

    @property
    def closed(self) -> bool:
        """True after ``close()`` (until ``reopen()``)."""
        return self._engine.closed

    def stats(self) -> WriterStats:
        """Counters: queued, written, dropped, lost, pending, bytes, flushes, errors, files."""
        return self._engine.stats()

    def _add_deferred(self, future: Any, global_step: Any, walltime: Any, size_hint: int) -> None:
        """Queue an event whose payloads a worker is still building (torch facade).

        ``future`` is a ``concurrent.futures.Future`` resolving to a list of
        ``(event field, serialized bytes)``; the event keeps its place in the order.
        """
        self._engine.add(DEFERRED, future, _step(global_step), _wall_time(walltime), size_hint)

    def _add_meta_graph_of(self, graph: Any, graph_def: Any) -> None:
        from tensorflow.python.framework import meta_graph  # only when given a TF graph

        maybe_graph_def = graph.as_graph_def(add_shapes=True) if hasattr(graph, "as_graph_def") else graph
        self.add_meta_graph(meta_graph.create_meta_graph_def(graph_def=graph_def or maybe_graph_def))

    def __enter__(self) -> AsyncSummaryWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        close_leaving_with(self.close, exc)

    async def __aenter__(self) -> AsyncSummaryWriter:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            await self.aclose()
            return
        try:
            await self.aclose()
        except Exception as error:  # noqa: BLE001 - never hide the body's own exception
            _note_close_error(exc, error)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<AsyncSummaryWriter {self._engine_options['display_logdir']!r} {state}>"
