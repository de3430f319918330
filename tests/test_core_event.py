"""The Event envelope equals protobuf's own serialization."""

from __future__ import annotations

import math

import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2

from asyncsummary import _event


@pytest.mark.parametrize("step", [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63)])
@pytest.mark.parametrize("field", ["summary", "graph_def", "session_log", "meta_graph_def"])
def test_encode_event_equals_protobuf(step, field):
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="t", simple_value=2.5)])
    payloads = {
        "summary": (_event.SUMMARY, summary.SerializeToString()),
        "graph_def": (_event.GRAPH_DEF, b"\x0a\x03abc" * 50),
        "session_log": (_event.SESSION_LOG, event_pb2.SessionLog(status=1).SerializeToString()),
        "meta_graph_def": (_event.META_GRAPH_DEF, b""),
    }
    number, data = payloads[field]
    expected = event_pb2.Event(wall_time=1234.5, step=step)
    if field == "summary":
        expected.summary.CopyFrom(summary)
    elif field == "session_log":
        expected.session_log.status = 1
    else:
        setattr(expected, field, data)
    assert _event.encode_event(1234.5, step, number, data) == expected.SerializeToString()


def test_file_version_event():
    expected = event_pb2.Event(wall_time=7.0, file_version="brain.Event:2")
    assert _event.encode_event(7.0, 0, _event.FILE_VERSION, _event.FILE_VERSION_STRING) == expected.SerializeToString()
    expected.source_metadata.writer = "asyncsummary"
    assert _event.encode_file_version(7.0) == expected.SerializeToString()


@pytest.mark.parametrize("tag", ["loss", "", "a/b/c", "ünïcödé", "x" * 300])
@pytest.mark.parametrize("value", [0.0, -1.5, 3.14159, math.inf, -math.inf, 1e300, -1e300])
def test_scalar_summary_equals_protobuf(tag, value):
    proto = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    assert _event.encode_scalar_summary(tag, value) == proto.SerializeToString()


@pytest.mark.parametrize("tag", ["loss", "", "ünïcödé"])
@pytest.mark.parametrize("step", [0, 5, 300])
def test_scalar_event_pieces_equal_protobuf(tag, step):
    """What the engine's hot loop joins for a scalar is protobuf's Event, byte for byte."""
    expected = event_pb2.Event(wall_time=3.5, step=step)
    expected.summary.value.add(tag=tag, simple_value=0.25)
    pieces = (_event.WALL_TIME.pack(_event.WALL_TIME_TAG, 3.5), _event.step_field(step),
              _event.scalar_event_head(tag), _event.float32(0.25))
    assert b"".join(pieces) == expected.SerializeToString()


def test_scalar_summary_nan():
    parsed = summary_pb2.Summary.FromString(_event.encode_scalar_summary("n", math.nan))
    assert math.isnan(parsed.value[0].simple_value)


def _with_metadata(tag, plugin="scalars", value=1.0):
    v = summary_pb2.Summary.Value(tag=tag, simple_value=value)
    v.metadata.plugin_data.plugin_name = plugin
    return v


def test_metadata_kept_on_first_value_of_each_tag_only():
    seen: set[str] = set()
    first = summary_pb2.Summary(value=[_with_metadata("a"), _with_metadata("b")]).SerializeToString()
    assert _event.check_summary(first, seen) == first
    second = summary_pb2.Summary(value=[_with_metadata("a", value=2.0), _with_metadata("c")])
    out = summary_pb2.Summary.FromString(_event.check_summary(second.SerializeToString(), seen))
    assert not out.value[0].HasField("metadata") and out.value[0].simple_value == 2.0
    assert out.value[1].metadata.plugin_data.plugin_name == "scalars"


def test_invalid_summary_bytes_are_rejected():
    with pytest.raises(_event.InvalidSummary):
        _event.check_summary(b"\x0a\xff\xff\xff", set())
    bad_utf8 = b"\x0a\x04\x0a\x02\xff\xfe"  # Value(tag=<invalid UTF-8>)
    with pytest.raises(_event.InvalidSummary):
        _event.check_summary(bad_utf8, set())
