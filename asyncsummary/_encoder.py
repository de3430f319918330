"""The drain's batch encoder: pending items in, framed event-file bytes out.

One job: turn a batch of pending items ``(kind, payload, step, wall_time, size)`` (or
the C queue's slots of them), in call order, into the TFRecord-framed bytes of their
``Event`` messages (see :mod:`._event` and :mod:`._records` for the formats), plus the
errors of the items that were rejected, in call order. The engine writes the bytes and
reports the errors.

Kinds (the first element of an item):

* :data:`RAW_EVENT`: the payload is a whole serialized ``Event``, written as it is;
* an ``Event`` field number of :mod:`._event` (``SUMMARY``, ``GRAPH_DEF``, ...): the
  payload is that field's serialized bytes, wrapped in an Event with the item's wall
  time and step. Summaries are validated and have repeated plugin metadata stripped
  (:func:`._event.check_summary`: metadata stays on the first value of each tag);
* :data:`SCALAR`: the payload is ``(tag, float)``;
* :data:`DEFERRED`: the payload is a ``concurrent.futures.Future`` of a list of
  ``(field, bytes)``, built on a worker; awaited here, on the loop.

Two implementations with byte-identical output (tested on random batches):

* ``native``: the compiled ``asyncsummary._native`` (a small C extension, built by
  ``pip install``) reads a run of plain slots of a ``Batch`` (what the C queue of
  :mod:`._pending` hands the drain) with the GIL held, then builds the
  envelopes, frames them, CRCs them and joins them with the GIL *released*, so a
  Python-bound trainer keeps running while the drain encodes. Python still validates
  summaries (one protobuf parse in C per group, as before) and handles the rare items
  (futures, payloads of 64 KiB and more, odd types) one by one.
* ``python``: the same in pure Python, offering the GIL every millisecond.

The native one is used when the extension imports and ``ASYNCSUMMARY_PURE_PYTHON``
is not set to a non-empty value other than ``0`` (read once, at import);
:data:`IMPLEMENTATION` says which one is active. A missing extension is logged once, at
import, as a one-line warning (logger ``asyncsummary``), unless the variable asks for
pure Python anyway.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import operator
import os
import time
from collections.abc import Callable, Iterator, MutableSequence, Sequence
from typing import Any

from . import _event
from ._records import frame_parts, frame_records

__all__ = [
    "DEFERRED",
    "IMPLEMENTATION",
    "RAW_EVENT",
    "SCALAR",
    "Item",
    "encode",
    "encode_native",
    "encode_python",
]

#: Pending-item kinds beyond the Event field numbers of :mod:`._event`.
RAW_EVENT = 0  # payload: a whole serialized Event
SCALAR = 100  # payload: (tag, float)
DEFERRED = 101  # payload: concurrent Future -> list[(field, bytes)]

#: One pending item: ``(kind, payload, step, wall_time, accounted size)``.
Item = tuple[int, Any, int, float, int]

# Seconds of encoding between two offers of the GIL to the other threads (time.sleep(0),
# which sleeps ~50-70 us on Linux: timer slack). Bounds a trainer's wait for the GIL to
# about this (instead of the 5 ms switch interval) for ~5 % of the drain's throughput.
_SLICE = 0.001
_CHECK_EVERY = 16  # events encoded between two looks at the clock
_BATCH_CHECK_MAX = 64 << 10  # summaries up to this size are validated a chunk at a time
_BIG_CHUNK = 1 << 16  # parts this large are written as they are, never copied


# ------------------------------------------------------------------ pure Python
def _frame_python(
    source: Iterator[Item],
    left: int,
    seen: set[str],
    out: list[bytes],
    rejected: list[Exception],
) -> None:
    """Frame the next ``left`` items of ``source`` (none of them DEFERRED) into ``out``.

    The hot loop, inlined because every call in it is paid per event:

    * Summary bytes (up to _BATCH_CHECK_MAX) get their envelope built here, and are
      validated later, many at once (:func:`_settle`): one C parse for all instead of
      one ``Summary.FromString`` each; plugin metadata is looked for the same way,
      among those holding a 0x4A byte (``Value.metadata``'s tag) only.
    * A scalar is its tag's cached head plus the packed float.
    * The step field is encoded once per run of equal steps.
    * Every other kind is done one by one, after settling the events before it, so the
      tags seen with metadata are updated in the order of the calls.

    The GIL is offered to the other threads every _SLICE seconds (checked every
    _CHECK_EVERY events): what was built so far is settled and framed first.
    """
    encode = _event.encode_event
    check = _event.check_summary
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
    failed = len(rejected)  # rejected[:failed] were found before this slice
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
                append(
                    b"".join(
                        (
                            wall(wall_tag, wall_time),
                            step_part,
                            summary_tag,
                            small[size] if size < 0x80 else varint(size),
                            payload,
                        )
                    )
                )
                continue
            if kind == SCALAR:
                try:
                    tag, value = payload
                    head = scalar_heads.get(tag) or _event.scalar_event_head(tag)
                except Exception as exc:  # noqa: BLE001 - e.g. a tag that is not UTF-8
                    if settled < len(events):  # report the errors in call order
                        _settle(events, settled, maybe_meta, rejected, seen)
                        maybe_meta.clear()
                        settled = len(events)
                    rejected.append(exc)
                else:
                    append(b"".join((wall(wall_tag, wall_time), step_part, head, float32(value))))
                continue
            if settled < len(events):
                _settle(events, settled, maybe_meta, rejected, seen)
                maybe_meta.clear()
            try:
                if kind == summary:
                    data = check(payload, seen)
                    # A large one: frame what came before it, then it by parts, so that
                    # its bytes are copied once (into the batch), not into an event first.
                    frame_records([e for e in events if e is not None], out)  # type: ignore[misc]
                    events.clear()
                    head = wall(wall_tag, wall_time) + step_part + summary_tag + varint(len(data))
                    frame_parts((head, data), out)
                elif kind == RAW_EVENT:
                    append(payload)
                else:
                    append(encode(wall_time, step, kind, payload))
            except Exception as exc:  # noqa: BLE001 - bad input found off the caller's thread
                rejected.append(exc)
            settled = len(events)
        if left and clock() < deadline:
            continue
        if settled < len(events):
            _settle(events, settled, maybe_meta, rejected, seen)
            maybe_meta.clear()
        done = [e for e in events if e is not None] if len(rejected) > failed else events
        frame_records(done, out)  # type: ignore[arg-type]
        events, settled, failed = [], 0, len(rejected)
        append = events.append
        if left:
            time.sleep(0)  # let the training thread take the GIL
            deadline = clock() + _SLICE


def _settle(
    events: list[bytes | None],
    start: int,
    maybe_meta: list[int],
    rejected: list[Exception],
    seen: set[str],
) -> None:
    """Validate ``events[start:]`` (built by :func:`_frame_python`) and handle their metadata.

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
    check = _event.check_summary
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


async def _frame_deferred(
    item: Item, seen: set[str], out: list[bytes], rejected: list[Exception]
) -> None:
    """Await a DEFERRED item's summaries (built on a worker) and frame them."""
    _, future, step, wall_time, _ = item
    events: list[bytes] = []
    try:
        built = await asyncio.wrap_future(future)
        for field, data in built:
            if field == _event.SUMMARY:
                data = _event.check_summary(data, seen)
            events.append(_event.encode_event(wall_time, step, field, data))
    except Exception as exc:  # noqa: BLE001 - a builder's error, or a bad summary
        rejected.append(exc)
    frame_records(events, out)  # what was built before an error is kept, as it was


async def encode_python(
    items: MutableSequence[Item], seen_tags: set[str]
) -> tuple[list[bytes], list[Exception]]:
    """The framed bytes of ``items`` as chunks, and the errors of the rejected ones.

    ``items`` is emptied (the encoder frees them); ``seen_tags`` (the tags already
    written with plugin metadata) is updated.
    """
    out: list[bytes] = []
    rejected: list[Exception] = []
    source = iter(items)
    done = 0
    for index in _deferred_positions(items):
        _frame_python(source, index - done, seen_tags, out, rejected)
        await _frame_deferred(next(source), seen_tags, out, rejected)
        done = index + 1
    _frame_python(source, len(items) - done, seen_tags, out, rejected)
    items.clear()  # as encode_native does
    return _chunks(out), rejected


def _deferred_positions(items: Sequence[Item]) -> list[int]:
    """Indices of the DEFERRED items (looked for at C speed: most batches have none)."""
    kinds = list(map(_kind_of, items))
    if DEFERRED not in kinds:
        return []
    return [i for i, kind in enumerate(kinds) if kind == DEFERRED]


_kind_of = operator.itemgetter(0)


def _chunks(parts: list[bytes], join: Callable[[list[bytes]], bytes] = b"".join) -> list[bytes]:
    """The framed parts of a batch as few buffers, without copying large payloads.

    Small parts are joined into one buffer (one write for thousands of events); a part
    of 64 KiB or more (an image, say) stays the bytes object it is, since copying it
    costs more than a write of its own (fresh pages fault one by one).
    """
    if not parts:
        return []
    if len(parts) == 1:
        return parts
    if max(map(len, parts)) < _BIG_CHUNK:
        return [join(parts)]
    chunks: list[bytes] = []
    run: list[bytes] = []
    for part in parts:
        if len(part) >= _BIG_CHUNK:
            if run:
                chunks.append(join(run))
                run = []
            chunks.append(part)
        else:
            run.append(part)
    if run:
        chunks.append(join(run))
    return chunks


# ------------------------------------------------------------------ native
# A run is what one _native.frame_run call frames: its slots read with the GIL held
# (a few ns each: the queue packed everything when the event was added), framed without
# it. Each release costs the drain up to a switch interval (5 ms) to get the GIL back
# from a Python-bound trainer, and the trainer a hand-off when it does: so a batch of
# small events is one run (a batch_bytes batch holds at most ~4 k events), not many.
_RUN_ITEMS = 1 << 14
_RUN_BYTES = 1 << 20
_PROBE_ITEMS = 256  # summaries validated by one protobuf parse
_FREE_EVERY = 512  # objects deallocated between two offers of the GIL


def _run_is_final(batch: Any, probes: list[bytes], meta: list[int], seen: set[str]) -> bool:
    """Whether a run framed in C is what Python would have framed.

    Yes unless a summary of it is invalid or has plugin metadata to strip; then
    nothing of the run is kept (``seen`` included) and Python frames it instead.
    """
    for k, probe in enumerate(probes):
        if k:
            time.sleep(0)  # let the training thread take the GIL
        if not _event.events_valid([probe]):
            return False
    if meta:
        before = set(seen)
        check = _event.check_summary
        for index in meta:
            payload = batch.item(index)[1]
            try:
                checked = check(payload, seen)
            except Exception:  # noqa: BLE001 - never expected after validation
                checked = None
            if checked is not payload:
                seen.clear()
                seen.update(before)
                return False
    return True


async def _frame_one(
    item: Item, seen: set[str], out: list[bytes], rejected: list[Exception]
) -> None:
    """An item that ``frame_run`` leaves to Python: a future, a large payload, odd types."""
    kind, payload, step, wall_time, _ = item
    if kind == DEFERRED:
        await _frame_deferred(item, seen, out, rejected)
        return
    if type(payload) is bytes and type(step) is int and type(wall_time) is float:
        head = None
        if kind == RAW_EVENT:
            head, data = b"", payload
        elif 3 <= kind <= 9 and type(kind) is int:
            try:
                data = _event.check_summary(payload, seen) if kind == _event.SUMMARY else payload
            except Exception as exc:  # noqa: BLE001 - bad input found off the caller's thread
                rejected.append(exc)
                return
            head = b"".join(
                (
                    _event.WALL_TIME.pack(_event.WALL_TIME_TAG, wall_time),
                    _event.step_field(step),
                    bytes(((kind << 3) | 2,)),
                    _event.varint(len(data)),
                )
            )
        if head is not None:
            # Framed by parts, the CRC run without the GIL: the payload is never copied.
            prefix, suffix = _native.frame_large(head, data)
            out.extend((prefix, data, suffix))
            return
    _frame_python(iter((item,)), 1, seen, out, rejected)


async def encode_native(items: Any, seen_tags: set[str]) -> tuple[list[bytes], list[Exception]]:
    """:func:`encode_python`'s output, framed in C (see the module docstring).

    ``items``: a ``_native.Batch`` (what ``_native.PendingQueue.take`` gives the drain)
    or a sequence of items, which is emptied.
    """
    if isinstance(items, _native.Batch):
        batch = items
    else:
        batch = _native.batch_of(items)
        items.clear()
    out: list[bytes] = []
    rejected: list[Exception] = []
    frame_run = _native.frame_run
    index, stop = 0, len(batch)
    while index < stop:
        chunk, end, probes, meta = frame_run(batch, index, _RUN_ITEMS, _RUN_BYTES, _PROBE_ITEMS)
        if end > index:
            if (not probes and not meta) or _run_is_final(batch, probes, meta, seen_tags):
                out.append(chunk)
            else:
                run = map(batch.item, range(index, end))
                _frame_python(run, end - index, seen_tags, out, rejected)
            index = end
        else:
            await _frame_one(batch.item(index), seen_tags, out, rejected)
            index += 1
    batch.release(_FREE_EVERY)
    return _chunks(out, _native.join), rejected


def _pure_python_forced() -> bool:
    return os.environ.get("ASYNCSUMMARY_PURE_PYTHON", "") not in ("", "0")


_native: Any
try:
    from . import _native  # type: ignore[no-redef]
except ImportError as _missing:  # built without a C compiler: the pure-Python encoder it is
    _native = None
    encode_native = None  # type: ignore[assignment]  # noqa: F811
    if not _pure_python_forced():
        # One line on stderr (logging's last-resort handler when none is configured):
        # the library works, only its background side is slower.
        logging.getLogger("asyncsummary").warning(
            "asyncsummary: compiled encoder not available (%s); using the pure-Python one "
            "(reinstall with a C compiler, or set ASYNCSUMMARY_PURE_PYTHON=1 to silence this)",
            _missing,
        )

#: Which implementation :func:`encode` is: ``"native"`` or ``"python"``.
IMPLEMENTATION = "native" if _native is not None and not _pure_python_forced() else "python"
#: ``encode(items, seen_tags) -> (chunks, rejected errors)``: the active implementation.
encode = encode_native if IMPLEMENTATION == "native" else encode_python
