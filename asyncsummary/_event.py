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
    "InvalidSummary",
    "check_summary",
    "varint",
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

_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack
_FIELD_TAG = {n: bytes(((n << 3) | 2,)) for n in range(3, 10)}
_WALL_TIME_TAG = b"\x09"
_STEP_TAG = b"\x10"
_SMALL_VARINTS = tuple(bytes((i,)) for i in range(0x80))
_UINT64 = (1 << 64) - 1


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int64 values take ten bytes, as in protobuf."""
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    value &= _UINT64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_event(wall_time: float, step: int, field: int, data: bytes) -> bytes:
    """Serialize ``Event(wall_time, step, <field>=data)`` without building a message."""
    n = len(data)
    length = _SMALL_VARINTS[n] if n < 0x80 else varint(n)
    if step:
        return b"".join(
            (_WALL_TIME_TAG, _pack_double(wall_time), _STEP_TAG, varint(step),
             _FIELD_TAG[field], length, data)
        )
    return b"".join((_WALL_TIME_TAG, _pack_double(wall_time), _FIELD_TAG[field], length, data))


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
    tag_bytes = tag.encode("utf-8")
    try:
        packed = _pack_float(value)
    except OverflowError:  # beyond float32: protobuf stores an infinity too
        packed = _pack_float(math.copysign(math.inf, value))
    if tag_bytes:
        inner = b"".join((b"\x0a", varint(len(tag_bytes)), tag_bytes, b"\x15", packed))
    else:  # proto3 leaves an empty string out
        inner = b"\x15" + packed
    return b"".join((b"\x0a", varint(len(inner)), inner))


_summary_class: Any = None


def _summary_type() -> Any:
    global _summary_class
    if _summary_class is None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        _summary_class = Summary
    return _summary_class


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
