"""The ``Event`` envelope, written by hand around payloads that are already serialized.

An event file holds ``tensorflow.Event`` messages::

    double wall_time = 1;  int64 step = 2;
    oneof what { string file_version = 3; bytes graph_def = 4; Summary summary = 5;
                 LogMessage log_message = 6; SessionLog session_log = 7;
                 TaggedRunMetadata tagged_run_metadata = 8; bytes meta_graph_def = 9; }

Every ``what`` field is length-delimited, so an event is a few bytes of header followed
by the payload exactly as the caller gave it: the summary bytes that a TF session
returns are never parsed to be written. The encoding equals protobuf's own
(``Event.SerializeToString``): fields in number order, a zero step left out.
"""

from __future__ import annotations

import math
import struct
from typing import Any

__all__ = [
    "FILE_VERSION",
    "encode_event",
    "encode_file_version",
    "encode_scalar_summary",
    "events_valid",
    "float32",
    "scalar_event_head",
    "InvalidSummary",
    "check_summary",
    "step_field",
    "summary_of",
    "with_summary",
    "any_metadata",
    "varint",
    "length_delimited",
]

# Field numbers of Event.what; also the "kind" of a pending item whose payload is the
# serialized field. Kinds >= 100 are payloads that still need building (see _engine).
FILE_VERSION = 3
GRAPH_DEF = 4
SUMMARY = 5
LOG_MESSAGE = 6
SESSION_LOG = 7
TAGGED_RUN_METADATA = 8
META_GRAPH_DEF = 9

FILE_VERSION_STRING = b"brain.Event:2"

_pack_float = struct.Struct("<f").pack
_FIELD_TAG = {n: bytes(((n << 3) | 2,)) for n in range(3, 10)}
_STEP_TAG = b"\x10"
_UINT64 = (1 << 64) - 1

# Pieces of the Event envelope, public for the engine's inlined hot loop.
#: ``wall_time`` with its tag byte in one call: ``WALL_TIME.pack(WALL_TIME_TAG, t)``.
WALL_TIME = struct.Struct("<Bd")
WALL_TIME_TAG = 0x09
#: Tag byte of ``Event.summary`` (field 5, length-delimited).
SUMMARY_TAG = b"\x2a"
#: ``SMALL_VARINTS[n]`` is the varint of ``n`` for ``0 <= n < 0x80``.
SMALL_VARINTS = tuple(bytes((i,)) for i in range(0x80))
_SMALL_VARINTS = SMALL_VARINTS
_pack_wall_time = WALL_TIME.pack


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int64 values take ten bytes, as in protobuf."""
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    # Steps and lengths mostly fit in two or three bytes: no loop for those.
    if 0 < value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if 0 < value < 0x200000:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    value &= _UINT64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2): tag, length, ``data``."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def encode_event(wall_time: float, step: int, field: int, data: bytes) -> bytes:
    """Serialize ``Event(wall_time, step, <field>=data)`` without building a message."""
    n = len(data)
    length = _SMALL_VARINTS[n] if n < 0x80 else varint(n)
    if step:
        return b"".join(
            (_pack_wall_time(WALL_TIME_TAG, wall_time), _STEP_TAG, varint(step),
             _FIELD_TAG[field], length, data)
        )
    return b"".join((_pack_wall_time(WALL_TIME_TAG, wall_time), _FIELD_TAG[field], length, data))


def step_field(step: int) -> bytes:
    """The encoded ``step`` field (tag and varint); empty for 0, which protobuf omits."""
    return _STEP_TAG + varint(step) if step else b""


def _summary_bounds(event: bytes) -> tuple[int, int, int]:
    """(end of the summary tag, start, end of the summary bytes) in an encoded Event."""
    pos = WALL_TIME.size
    if event[pos] == _STEP_TAG[0]:
        pos += 1
        while event[pos] & 0x80:
            pos += 1
        pos += 1
    pos += 1  # the summary field's tag
    tag_end = pos
    length = shift = 0
    while True:
        byte = event[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return tag_end, pos, pos + length


def summary_of(event: bytes) -> bytes:
    """The summary bytes inside an Event built as :func:`encode_event` builds a summary's.

    Lets the engine re-check, one at a time, summaries it only kept as whole events.
    """
    _, start, end = _summary_bounds(event)
    return event[start:end]


def with_summary(event: bytes, summary: bytes) -> bytes:
    """``event`` (as :func:`summary_of` takes it) with its summary bytes replaced."""
    tag_end, _, _ = _summary_bounds(event)
    return b"".join((event[:tag_end], varint(len(summary)), summary))


def encode_file_version(wall_time: float) -> bytes:
    """The first event of every file: file_version, and which writer made the file.

    ``source_metadata`` (field 10) names the writer, as TF's and TensorBoard's writers
    do for theirs.
    """
    writer = b"asyncsummary"
    source = b"\x0a" + varint(len(writer)) + writer
    return encode_event(wall_time, 0, FILE_VERSION, FILE_VERSION_STRING) + b"\x52" + varint(len(source)) + source


def encode_scalar_summary(tag: str, value: float) -> bytes:
    """``Summary(value=[Value(tag=tag, simple_value=value)])`` serialized."""
    return _scalar_summary_head(tag) + float32(value)


def float32(value: float) -> bytes:
    """``value`` as a little-endian float32; beyond its range, an infinity (as protobuf)."""
    try:
        return _pack_float(value)
    except OverflowError:
        return _pack_float(math.copysign(math.inf, value))


def _scalar_summary_head(tag: str) -> bytes:
    """A scalar ``Summary`` of ``tag`` up to its 4-byte float (proto3 omits an empty tag)."""
    tag_bytes = tag.encode("utf-8")
    value_head = b"\x0a" + varint(len(tag_bytes)) + tag_bytes + b"\x15" if tag_bytes else b"\x15"
    return b"\x0a" + varint(len(value_head) + 4) + value_head


_SCALAR_HEAD_CACHE_LIMIT = 4096
#: tag -> :func:`scalar_event_head` of it; read directly by the engine's hot loop.
scalar_heads: dict[str, bytes] = {}


def scalar_event_head(tag: str) -> bytes:
    """The bytes of a scalar's ``Event.summary`` field up to its 4-byte float.

    ``summary`` tag and length, then ``Summary(value=[Value(tag, simple_value=...)])``
    up to the value: the same for every value of one tag, so it is cached, and a
    scalar event is this plus :func:`float32` after the wall time and step.
    """
    head = scalar_heads.get(tag)
    if head is None:
        summary_head = _scalar_summary_head(tag)
        head = SUMMARY_TAG + varint(len(summary_head) + 4) + summary_head
        if len(scalar_heads) < _SCALAR_HEAD_CACHE_LIMIT:
            scalar_heads[tag] = head
    return head


_summary_class: Any = None


def _summary_type() -> Any:
    global _summary_class
    if _summary_class is None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        _summary_class = Summary
    return _summary_class


_event_class: Any = None
_GROUP_BYTES = 64 << 10


def _joined_groups(events: list[bytes]) -> list[bytes]:
    """``events`` joined into buffers of about :data:`_GROUP_BYTES` each.

    One parse per group, not per event; yet no huge buffer either: malloc maps large
    blocks fresh from the OS, and faulting their pages in (and those of the parser's
    arena) costs more than the parse, while blocks this small are reused.
    """
    if sum(map(len, events)) <= _GROUP_BYTES:
        return [b"".join(events)]
    groups, group, size = [], [], 0
    for event in events:
        group.append(event)
        size += len(event)
        if size >= _GROUP_BYTES:
            groups.append(b"".join(group))
            group, size = [], 0
    if group:
        groups.append(b"".join(group))
    return groups


def events_valid(events: list[bytes]) -> bool:
    """True when every serialized ``Event`` in ``events`` parses; one C call for many.

    Concatenated Events parse as one Event whose message fields merge, and each
    embedded ``summary`` is parsed within its own length, just as
    ``Summary.FromString`` parses it alone (wire format, UTF-8 of tags). So True
    validates every summary at once; on False, check them one by one
    (:func:`check_summary`) to find the bad ones.
    """
    global _event_class
    if _event_class is None:
        from tensorboard.compat.proto.event_pb2 import Event

        _event_class = Event
    parse = _event_class.FromString
    try:
        for group in _joined_groups(events):
            parse(group)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
        return False
    return True


def load_protos() -> None:
    """Import the protobuf classes used here now, on the caller's thread.

    The background loop thread must never import: a ``fork`` while it holds an
    import lock leaves the child a half-initialized module (``ImportError``) or a
    module lock that no thread of the child will ever release (a hang).
    """
    _summary_type()
    events_valid([])
    _metadata_probe()


_probe_class: Any = None


def _metadata_probe() -> Any:
    """An Event-shaped message that keeps only ``summary.value.metadata``, all merged.

    Its ``summary`` and ``value`` fields are *singular* messages, so parsing many
    Events, each with many values, merges every value into one: after one parse,
    ``summary.value.HasField("metadata")`` says whether any value had metadata.
    Everything else is an unknown field, skipped. Built in a private descriptor pool.
    """
    global _probe_class
    if _probe_class is None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        field = descriptor_pb2.FieldDescriptorProto
        file = descriptor_pb2.FileDescriptorProto(
            name="asyncsummary_metadata_probe.proto", package="asyncsummary_probe", syntax="proto2"
        )
        for name, number, kind, type_name in (
            ("Value", 9, field.TYPE_BYTES, None),  # metadata = 9
            ("Summary", 1, field.TYPE_MESSAGE, ".asyncsummary_probe.Value"),  # value = 1
            ("Event", 5, field.TYPE_MESSAGE, ".asyncsummary_probe.Summary"),  # summary = 5
        ):
            message = file.message_type.add(name=name)
            f = message.field.add(name="f", number=number, type=kind, label=field.LABEL_OPTIONAL)
            if type_name:
                f.type_name = type_name
        pool = descriptor_pool.DescriptorPool()
        pool.Add(file)
        _probe_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("asyncsummary_probe.Event"))
    return _probe_class


def any_metadata(events: list[bytes]) -> bool:
    """Whether any summary value in these valid serialized Events has plugin metadata.

    One C parse per 64 KiB (see :func:`_metadata_probe`); True when unsure.
    """
    parse = _metadata_probe().FromString
    try:
        for group in _joined_groups(events):
            probe = parse(group)
            if probe.f.HasField("f") and probe.f.f.HasField("f"):
                return True
    except Exception:  # noqa: BLE001 - never expected for valid Events: be safe
        return True
    return False


class InvalidSummary(ValueError):
    """The bytes given as a summary do not parse as a ``Summary`` message."""


def check_summary(data: bytes, seen_tags: set[str]) -> bytes:
    """Validate serialized ``Summary`` bytes and drop repeated plugin metadata.

    Runs on the background side, never on the caller's thread. The bytes are parsed
    in C (upb) so that nothing a reader would reject (bad wire format, invalid UTF-8
    in a tag) reaches the file: such bytes raise :class:`InvalidSummary`.

    ``FileWriter`` keeps plugin metadata only on the first value of each tag, since
    TensorBoard reads it from there and it can be large. A summary without the byte
    0x4A (the tag of ``Value.metadata``) has no metadata and is returned as it is;
    the others have their later metadata cleared. Unlike TF, a tag counts as "seen"
    once it has been written *with* metadata (TF also counts a first value without).
    """
    try:
        summary = _summary_type().FromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise InvalidSummary(f"not a serialized Summary ({len(data)} bytes): {exc}") from exc
    if b"J" not in data:
        return data
    changed = False
    for value in summary.value:
        if not value.HasField("metadata"):
            continue
        if value.tag in seen_tags:
            value.ClearField("metadata")
            changed = True
        else:
            seen_tags.add(value.tag)
    return summary.SerializeToString() if changed else data  # type: ignore[no-any-return]
