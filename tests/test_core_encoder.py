"""The drain's batch encoder (``asyncsummary._encoder``).

Guarantees tested here:

* Its output, read back by TensorBoard's own record reader (which checks both CRCs of
  every record), is exactly the events an independent model built with protobuf
  expects: scalars, summaries (plugin metadata kept only on the first value of each
  tag), raw events, other Event fields and deferred (worker-built) summaries, in call
  order; the rejected items (invalid summaries, failed builds, unencodable tags) are
  reported in call order and nothing of them is written.
* The native (C) and the pure-Python implementations give byte-identical output, the
  same errors and the same tags seen, on random batches; payloads of 64 KiB and more
  are never copied by either.
* The native one is what a normal install uses; ``ASYNCSUMMARY_PURE_PYTHON=1`` selects
  the pure-Python one; its CRC-32C (hardware and table) equals google-crc32c's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
from typing import Any

import google_crc32c
import pytest
from google.protobuf.internal.encoder import _VarintBytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2, summary_pb2

from asyncsummary import _encoder, _event
from asyncsummary._encoder import DEFERRED, RAW_EVENT, SCALAR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIG = 70 << 10  # over the 64 KiB where payloads stop being copied

try:
    from asyncsummary import _native
except ImportError:  # the test of the normal install says so; the others use what exists
    _native = None

IMPLEMENTATIONS = {"python": _encoder.encode_python}
if _encoder.encode_native is not None:
    IMPLEMENTATIONS["native"] = _encoder.encode_native


def _encode(
    implementation: str, items: list[Any], seen: set[str]
) -> tuple[list[bytes], list[Exception]]:
    return asyncio.run(IMPLEMENTATIONS[implementation](list(items), seen))


def _read_back(tmp_path: Any, chunks: list[bytes]) -> list[bytes]:
    path = tmp_path / "events.out.tfevents.0.test"
    path.write_bytes(b"".join(chunks))
    return [bytes(record) for record in RawEventFileLoader(str(path)).Load()]


# ------------------------------------------------------------------ the model
def _summary(tag: str, value: float, metadata: bool = False, image: bytes | None = None) -> bytes:
    v = summary_pb2.Summary.Value(tag=tag)
    if image is not None:
        v.image.encoded_image_string = image
    else:
        v.simple_value = value
    if metadata:
        v.metadata.plugin_data.plugin_name = "scalars"
        v.metadata.display_name = tag
    return summary_pb2.Summary(value=[v]).SerializeToString()


def _envelope(wall_time: float, step: int) -> bytes:
    return event_pb2.Event(wall_time=wall_time, step=step).SerializeToString()


def _expected_summary(data: bytes, seen: set[str]) -> bytes:
    """FileWriter's rule: plugin metadata only on the first value of each tag."""
    summary = summary_pb2.Summary.FromString(data)  # raises for invalid bytes
    changed = False
    for value in summary.value:
        if value.HasField("metadata"):
            if value.tag in seen:
                value.ClearField("metadata")
                changed = True
            else:
                seen.add(value.tag)
    return summary.SerializeToString() if changed else data


def _field_event(wall_time: float, step: int, field: int, data: bytes, seen: set[str]) -> bytes:
    if field == _event.SUMMARY:
        data = _expected_summary(data, seen)
    return _envelope(wall_time, step) + bytes(((field << 3) | 2,)) + _VarintBytes(len(data)) + data


def _model(items: list[Any]) -> tuple[list[bytes], int, set[str]]:
    """(the events expected, how many items are rejected, the tags seen with metadata)."""
    seen: set[str] = set()
    events: list[bytes] = []
    rejected = 0
    for kind, payload, step, wall_time, _ in items:
        try:
            if kind == SCALAR:
                tag, value = payload
                tag.encode("utf-8")
                summary = summary_pb2.Summary(
                    value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]
                )
                events.append(
                    _field_event(wall_time, step, _event.SUMMARY, summary.SerializeToString(), seen)
                )
            elif kind == RAW_EVENT:
                events.append(payload)
            elif kind == DEFERRED:
                for field, data in payload.result():  # what was built before a failure stays
                    events.append(_field_event(wall_time, step, field, data, seen))
            else:
                events.append(_field_event(wall_time, step, kind, payload, seen))
        except Exception:  # noqa: BLE001 - the model's own notion of "rejected"
            rejected += 1
    return events, rejected, seen


# ------------------------------------------------------------------ batches
def _done(result: Any) -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
    return future


TAGS = st.sampled_from(["loss", "acc", "lr/é", "", "x" * 200]) | st.text(max_size=12)
# float32 values (and infinities): the model's protobuf float then holds them exactly.
VALUES = st.floats(width=32, allow_nan=False)
STEPS = st.sampled_from([0, 1, -1, 127, 128, 2**31, 2**63 - 1, -(2**63)]) | st.integers(
    -(2**63), 2**63 - 1
)
WALL_TIMES = st.sampled_from([0.0, 1.5e9, -1.0]) | st.floats(allow_nan=False)
INVALID_SUMMARIES = st.sampled_from(
    [
        b"\x0a\x05ab",  # truncated
        b"\x0a\x03\x0a\x01\xff",  # a tag that is not UTF-8
        b"\x0f",  # a bad wire type
        b"\x0a\x02\x12\x00" + b"J",  # trailing junk holding Value.metadata's tag byte
    ]
)
BIG_IMAGE = _summary("big", 0.0, image=os.urandom(BIG))
BIG_IMAGE_META = _summary("big", 0.0, metadata=True, image=os.urandom(BIG))
BIG_RAW = event_pb2.Event(wall_time=3.0, step=9, graph_def=os.urandom(BIG)).SerializeToString()
BIG_GRAPH = os.urandom(BIG)


@st.composite
def summaries(draw: Any) -> bytes:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(INVALID_SUMMARIES)
    if choice == 1:
        return draw(st.sampled_from([BIG_IMAGE, BIG_IMAGE_META]))
    if choice == 2:
        return draw(st.binary(max_size=40))  # valid or not: whatever protobuf says
    metadata = draw(st.booleans())
    if draw(st.booleans()):
        return _summary(draw(TAGS), 0.0, metadata, image=draw(st.binary(max_size=300)))
    return _summary(draw(TAGS), draw(VALUES), metadata)


@st.composite
def items(draw: Any, deferred: bool = True) -> tuple[int, Any, int, float, int]:
    step, wall_time = draw(STEPS), draw(WALL_TIMES)
    choice = draw(st.integers(0, 9 if deferred else 8))
    if choice <= 2:
        tag = draw(TAGS | st.just("bad\ud800"))  # a lone surrogate cannot be written
        return (SCALAR, (tag, draw(VALUES)), step, wall_time, 8)
    if choice <= 5:
        return (_event.SUMMARY, draw(summaries()), step, wall_time, 8)
    if choice == 6:
        event = event_pb2.Event(
            wall_time=draw(WALL_TIMES), step=draw(STEPS), graph_def=draw(st.binary(max_size=50))
        )
        return (RAW_EVENT, draw(st.sampled_from([event.SerializeToString(), BIG_RAW])), 0, 0.0, 8)
    if choice == 7:
        data = draw(st.binary(max_size=80) | st.just(BIG_GRAPH))
        return (
            draw(st.sampled_from([_event.GRAPH_DEF, _event.META_GRAPH_DEF])),
            data,
            step,
            wall_time,
            8,
        )
    if choice == 8:  # several scalars of one step, as a trainer logs them
        return (SCALAR, (draw(st.sampled_from(["loss", "acc"])), draw(VALUES)), 7, 1.5e9, 8)
    built = draw(st.lists(st.tuples(st.just(_event.SUMMARY), summaries()), max_size=3))
    return (
        DEFERRED,
        _done(draw(st.sampled_from([built, built, RuntimeError("builder failed")]))),
        step,
        wall_time,
        8,
    )


SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------- tests
@pytest.mark.parametrize("implementation", sorted(IMPLEMENTATIONS))
@SETTINGS
@given(batch=st.lists(items(), max_size=30))
def test_output_read_back_is_the_models_events(tmp_path_factory, implementation, batch):
    seen: set[str] = set()
    chunks, rejected = _encode(implementation, batch, seen)
    expected, n_rejected, expected_seen = _model(batch)
    records = _read_back(tmp_path_factory.mktemp("enc"), chunks)
    # Compared as messages: protobuf leaves out a zero wall_time, the encoder does not.
    assert [event_pb2.Event.FromString(r) for r in records] == [
        event_pb2.Event.FromString(e) for e in expected
    ]
    assert len(rejected) == n_rejected
    assert seen == expected_seen


def _signature(errors: list[Exception]) -> list[tuple[type, str]]:
    return [(type(e), str(e)) for e in errors]


def _kept_whole(batch: list[Any]) -> list[bytes]:
    """The payloads both implementations write without copying: big summaries, raw events."""
    return [
        p
        for kind, p, *_ in batch
        if kind in (_event.SUMMARY, RAW_EVENT) and len(p) >= 1 << 16 and p is not BIG_IMAGE_META
    ]


@SETTINGS
@given(
    batch=st.lists(items(), max_size=30),
    seen=st.sets(st.sampled_from(["loss", "acc", "big", "x" * 200])),
)
def test_native_and_python_agree_byte_for_byte(batch, seen):
    python_seen, native_seen = set(seen), set(seen)
    python, python_errors = _encode("python", batch, python_seen)
    native, native_errors = _encode("native", batch, native_seen)
    joined = b"".join(native)
    assert joined == b"".join(python)
    assert _signature(native_errors) == _signature(python_errors)
    assert native_seen == python_seen
    # A big payload that is written as it is (not invalid) is never copied, by either.
    for part in _kept_whole(batch):
        if part in joined:
            assert any(c is part for c in native) and any(c is part for c in python)


def test_errors_come_in_call_order_and_nothing_of_them_is_written(tmp_path):
    batch = [
        (SCALAR, ("a", 1.0), 1, 1.0, 8),
        (_event.SUMMARY, b"\x0a\x05ab", 2, 1.0, 8),
        (SCALAR, ("bad\ud800", 2.0), 3, 1.0, 8),
        (DEFERRED, _done(ValueError("no image")), 4, 1.0, 8),
        (_event.SUMMARY, _summary("b", 3.0), 5, 1.0, 8),
        (_event.SUMMARY, b"\x0a\x03\x0a\x01\xff", 6, 1.0, 8),
    ]
    for implementation in IMPLEMENTATIONS:
        chunks, errors = _encode(implementation, batch, set())
        assert [type(e) for e in errors] == [
            _event.InvalidSummary,
            UnicodeEncodeError,
            ValueError,
            _event.InvalidSummary,
        ]
        steps = [event_pb2.Event.FromString(r).step for r in _read_back(tmp_path, chunks)]
        assert steps == [1, 5], implementation


def test_metadata_is_kept_on_the_first_value_of_each_tag_only(tmp_path):
    # Many batches' worth of events: the native one frames them in several runs.
    batch = []
    for step in range(3000):
        batch.append(
            (_event.SUMMARY, _summary(f"t{step % 7}", float(step), metadata=True), step, 1.0, 8)
        )
        batch.append((SCALAR, ("s", float(step)), step, 1.0, 8))
    for implementation in IMPLEMENTATIONS:
        seen: set[str] = set()
        chunks, errors = _encode(implementation, batch, seen)
        assert not errors
        records = [event_pb2.Event.FromString(r) for r in _read_back(tmp_path, chunks)]
        with_metadata = [
            e.step for e in records if any(v.HasField("metadata") for v in e.summary.value)
        ]
        assert with_metadata == list(range(7)), implementation
        assert seen == {f"t{i}" for i in range(7)}


def test_long_batches_agree_across_run_boundaries():
    # Enough for many native runs (and GIL offers), with an invalid summary and
    # metadata in the middle of runs, and steps of every size.
    batch = []
    for i in range(40_000):
        step = (i * 2654435761) % (2**64) - 2**63
        if i % 997 == 0:
            batch.append((_event.SUMMARY, b"\x0a\x05ab", step, float(i), 8))
        elif i % 1499 == 0:
            batch.append((_event.SUMMARY, _summary("m", 1.0, metadata=True), step, float(i), 8))
        elif i % 3:
            batch.append((SCALAR, (f"tag{i % 50}", i / 7), step, float(i), 8))
        else:
            batch.append((_event.SUMMARY, _summary(f"s{i % 5}", i / 3), step, float(i), 8))
    results = {name: _encode(name, batch, set()) for name in IMPLEMENTATIONS}
    reference, reference_errors = results["python"]
    assert len(reference_errors) == len(range(0, 40_000, 997))
    for chunks, errors in results.values():
        assert b"".join(chunks) == b"".join(reference)
        assert _signature(errors) == _signature(reference_errors)


def test_the_batch_is_taken_out_of_its_deque():
    # The encoder frees the items as it goes (never all at once, holding the GIL).
    import collections

    for implementation in IMPLEMENTATIONS:
        pending = collections.deque([(SCALAR, ("a", 1.0), 1, 1.0, 8)] * 10)
        chunks, _ = asyncio.run(IMPLEMENTATIONS[implementation](pending, set()))
        assert not pending and len(chunks) == 1


# ------------------------------------------------------------ selection, C parts
def _child(code: str, env_value: str | None, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python -c code *argv`` with ASYNCSUMMARY_PURE_PYTHON=env_value (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "ASYNCSUMMARY_PURE_PYTHON"}
    if env_value is not None:
        env["ASYNCSUMMARY_PURE_PYTHON"] = env_value
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def _implementation_in_a_child(env_value: str | None) -> str:
    code = "from asyncsummary import _encoder; print(_encoder.IMPLEMENTATION)"
    return _child(code, env_value).stdout.strip()


def test_a_normal_install_uses_the_native_encoder():
    assert _native is not None, "asyncsummary._native was not built: is a C compiler installed?"
    assert _implementation_in_a_child(None) == "native"
    assert _implementation_in_a_child("0") == "native"


_WITHOUT_THE_EXTENSION = """
import sys

class NoNative:  # an install built without a C compiler: asyncsummary._native is missing
    def find_spec(self, name, path=None, target=None):
        if name == "asyncsummary._native":
            raise ImportError("No module named 'asyncsummary._native'")

sys.meta_path.insert(0, NoNative())
from asyncsummary import AsyncSummaryWriter, _encoder

with AsyncSummaryWriter(sys.argv[1]) as writer:
    writer.add_scalar("loss", 0.5, 3)
print(_encoder.IMPLEMENTATION)
"""


@pytest.mark.parametrize("forced", [False, True], ids=["warned", "forced"])
def test_a_missing_extension_falls_back_with_one_line_of_warning(tmp_path, forced):
    out = _child(_WITHOUT_THE_EXTENSION, "1" if forced else None, str(tmp_path))
    assert out.stdout.strip() == "python"  # not an error: the writer works
    warning = [line for line in out.stderr.splitlines() if "asyncsummary" in line]
    if forced:  # asked for: nothing to warn about
        assert warning == [], out.stderr
    else:
        assert len(warning) == 1, out.stderr
        assert "compiled encoder not available" in warning[0]
        assert "ASYNCSUMMARY_PURE_PYTHON=1" in warning[0]
    [path] = tmp_path.glob("events.out.tfevents.*")
    events = [event_pb2.Event.FromString(r) for r in RawEventFileLoader(str(path)).Load()]
    assert [(e.step, e.summary.value[0].tag) for e in events[1:]] == [(3, "loss")]


def test_the_environment_variable_selects_pure_python():
    assert _implementation_in_a_child("1") == "python"
    expected = (
        "python" if os.environ.get("ASYNCSUMMARY_PURE_PYTHON", "") not in ("", "0") else "native"
    )
    assert _encoder.IMPLEMENTATION == expected


# The SSE4.2 path (_native.c) runs three streams over chunks of 3 blocks of 16384,
# 256 or 64 bytes, one stream under 192 bytes and for the tail: sizes on each side of
# each chunk boundary (plus up to 7 bytes, which it may spend aligning to 8 bytes).
_CRC_BOUNDARIES = sorted(
    {0, 1, 7, 8, 9, 63, 64, 65, 1000, 1 << 20, (1 << 20) + 3}
    | {k * 3 * block + d for block in (64, 256, 16384) for k in (1, 2) for d in (-1, 0, 1, 7, 8)}
)


@pytest.mark.parametrize("size", _CRC_BOUNDARIES)
def test_native_crc32c_equals_google_crc32c(size):
    assert _native is not None
    data = os.urandom(size + 8)
    for offset in range(8):  # every alignment, as memoryview slices
        piece = memoryview(data)[offset : offset + size]
        expected = google_crc32c.value(bytes(piece))
        assert _native.crc32c(piece) == expected, offset
        assert _native.crc32c(piece, True) == expected, offset  # the table fallback


def test_native_crc32c_every_small_length():
    assert _native is not None
    data = os.urandom(3 * 256 + 3 * 64 + 80)  # one chunk of each small block, and a tail
    for size in range(len(data) + 1):
        for offset in (0, 3):
            piece = data[offset : offset + size]
            assert _native.crc32c(memoryview(data)[offset : offset + size]) == (
                google_crc32c.value(piece)
            ), (size, offset)
