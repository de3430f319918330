"""``add_histogram``'s builder writes what torch's ``histogram()`` writes, without BLAS.

The builder (``asyncsummary.torch._histogram``) bins the default ``bins='tensorflow'``
buckets arithmetically and computes ``sum_squares`` with NumPy's own loop instead of a
BLAS ``dot`` (which wakes OpenBLAS's thread pool). Compared here with torch's own
``make_histogram`` field by field: buckets, edges, min, max, num and sum exactly,
``sum_squares`` to the rounding of a different summation order; the same errors.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from asyncsummary.torch import _builders, _histogram

pytestmark = pytest.mark.torch

DEFAULT = _builders.default_bins()
EDGES = np.asarray(DEFAULT)


def _torch_make_histogram(values, bins, max_bins=None):
    from torch.utils.tensorboard.summary import make_histogram

    return make_histogram(values, bins, max_bins)


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    wide = rng.standard_normal(20_000) * 10.0 ** rng.uniform(-16, 23, 20_000)
    on_edges = np.concatenate([EDGES, np.nextafter(EDGES, np.inf), np.nextafter(EDGES, -np.inf)])
    specials = np.array(
        [np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 1e-12, -1e-12, 1e20, -1e20, 2e20]
    )
    return {
        "normal": rng.standard_normal(100_000),
        "float32 weights": (rng.standard_normal(65_536) * 0.05).astype(np.float32).astype(float),
        "wide": wide,
        "on and beside every edge": rng.permutation(on_edges),
        "specials and normal": np.concatenate([specials, rng.standard_normal(100)]),
        "all equal": np.full(1000, 3.5),
        "integers": rng.integers(-50, 50, 5000).astype(float),
        "one value": np.array([0.25]),
    }


def _fields(histo) -> tuple:
    return (
        histo.min,
        histo.max,
        histo.num,
        histo.sum,
        list(histo.bucket_limit),
        list(histo.bucket),
    )


@pytest.mark.parametrize("name", list(_inputs()))
@pytest.mark.parametrize("max_bins", [None, 40])
def test_default_buckets_equal_torchs(name, max_bins):
    values = _inputs()[name]
    expected = _torch_make_histogram(values, DEFAULT, max_bins)
    reference = np.histogram(values, bins=EDGES)[0].tolist()
    for count in (_histogram.default_bucket_counts, _histogram.numpy_bucket_counts):  # C, NumPy
        counts = count(values)
        assert counts is not None and counts.tolist() == reference, count.__name__
    got = _histogram.make_histogram(values, DEFAULT, max_bins, default=True)
    np.testing.assert_equal(_fields(got), _fields(expected))  # NaN equals NaN here
    assert got.sum_squares == pytest.approx(expected.sum_squares, rel=1e-12, nan_ok=True)


def test_the_c_counter_is_used_where_built():
    # A normal install builds it (setup.py); ASYNCSUMMARY_PURE_PYTHON=1 selects NumPy's.
    from asyncsummary import _encoder

    assert _histogram._buckets is not None, "asyncsummary.torch._buckets was not built"
    assert (_histogram._count is not None) == (_encoder.IMPLEMENTATION == "native")
    assert _histogram._table() is not None  # no cell of the table holds two edges


def test_without_the_c_counter_numpy_counts(monkeypatch):
    # An install without a C compiler, or ASYNCSUMMARY_PURE_PYTHON=1: the same histograms.
    values = _inputs()["normal"]
    expected = _fields(_torch_make_histogram(values, DEFAULT))
    monkeypatch.setattr(_histogram, "_count", None)
    np.testing.assert_equal(
        _fields(_histogram.make_histogram(values, DEFAULT, None, default=True)), expected
    )


def test_the_c_counter_on_random_bits():
    # Any float64 at all (every exponent, NaN payloads, subnormals), and strided input.
    bits = np.random.default_rng(11).integers(0, 2**64, 200_000, dtype=np.uint64, endpoint=False)
    values = bits.view(np.float64)
    for data in (values, values[::3], values[:7]):
        expected = np.histogram(data[np.isfinite(data)], bins=EDGES)[0].tolist()
        assert _histogram.default_bucket_counts(data).tolist() == expected
        assert _histogram.numpy_bucket_counts(np.ascontiguousarray(data)).tolist() == expected
        # The C counter itself, so that a fallback to NumPy could not hide a wrong table;
        # its last slot holds the values in no bucket (NaN, beyond +-1e20).
        if _histogram._count is not None:
            counts = np.zeros(len(EDGES), dtype=np.int64)
            assert _histogram._count(np.ascontiguousarray(data), _histogram._table(), counts) == 0
            assert counts[:-1].tolist() == expected
            assert counts[-1] == len(data) - sum(expected)


@pytest.mark.parametrize(
    "bins", ["auto", "fd", 7, np.linspace(-2, 2, 9)], ids=["auto", "fd", "7", "edges"]
)
def test_other_bins_equal_torchs(bins):
    values = np.random.default_rng(3).standard_normal(10_000)
    expected = _torch_make_histogram(values, bins)
    got = _histogram.make_histogram(values, bins)
    np.testing.assert_equal(_fields(got), _fields(expected))
    assert got.sum_squares == pytest.approx(expected.sum_squares, rel=1e-12)


def test_same_errors_as_torch():
    for values, bins in [(np.array([]), DEFAULT), (np.array([np.nan, 1.0]), "auto")]:
        with pytest.raises(ValueError) as theirs:
            _torch_make_histogram(values, bins)
        with pytest.raises(ValueError) as ours:
            _histogram.make_histogram(values, bins, default=bins is DEFAULT)
        assert str(ours.value) == str(theirs.value)


def test_summary_equals_torchs_histogram():
    import torch
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard.summary import histogram

    values = torch.randn(3000, generator=torch.Generator().manual_seed(1))
    expected = histogram("w", values, DEFAULT)
    got = Summary.FromString(_histogram.histogram("w", values, DEFAULT, None, default=True))
    assert got.value[0].tag == "w" and _fields(got.value[0].histo) == _fields(
        expected.value[0].histo
    )


@pytest.mark.parametrize("tag", ["w", "", "layer/weight \u00e9\u6f22"])
@pytest.mark.parametrize("name", list(_inputs()))
@pytest.mark.parametrize("max_bins", [None, 40])
def test_summary_bytes_are_protobufs(name, max_bins, tag):
    # The builder writes the Summary by hand (a proto costs a Python float per bucket):
    # byte for byte what protobuf serializes from the same fields, -0.0 and NaN included.
    from tensorboard.compat.proto.summary_pb2 import Summary

    values = _inputs()[name]
    expected = Summary(
        value=[Summary.Value(tag=tag, histo=_histogram.make_histogram(values, DEFAULT, max_bins, True))]
    ).SerializeToString()
    assert _histogram.histogram(tag, values, DEFAULT, max_bins, default=True) == expected


def test_summary_bytes_of_zero_fields():
    # Fields whose bits are zero are left out, as protobuf does; -0.0 is not zero.
    from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

    for mn, mx, total in [(0.0, 0.0, 0.0), (-0.0, 0.0, -0.0), (0.0, 1.0, 1.0)]:
        fields = _histogram.Fields(
            mn, mx, 1, total, 0.0, np.array([1e-12, 1.1e-12]), np.array([0, 1])
        )
        expected = Summary(
            value=[
                Summary.Value(
                    tag="z",
                    histo=HistogramProto(
                        min=mn, max=mx, num=1, sum=total, sum_squares=0.0,
                        bucket_limit=[1e-12, 1.1e-12], bucket=[0, 1],
                    ),
                )
            ]
        ).SerializeToString()
        assert _histogram.summary_bytes("z", fields) == expected


def test_a_tag_protobuf_refuses_is_refused():
    with pytest.raises(UnicodeEncodeError):
        _histogram.histogram("\ud800", np.ones(3), DEFAULT, None, default=True)


def test_no_blas_thread_runs():
    # torch's histogram builder (values.dot) wakes OpenBLAS's threads, which then spin on
    # the trainer's cores; ours, and the image and audio builders, run on the worker's
    # thread alone. Measured as the CPU time
    # of the process's other threads (OpenBLAS's), in clock ticks.
    code = """
import os, time
import numpy as np
from asyncsummary.torch import _builders, _histogram

def others():
    ticks = 0
    for task in os.listdir("/proc/self/task"):
        if int(task) != os.getpid():
            with open(f"/proc/self/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks

values = np.random.default_rng(0).standard_normal(1_000_000)
bins = _builders.default_bins()
image = np.random.default_rng(1).random((3, 512, 512), dtype=np.float32)
sound = np.random.default_rng(2).random(100_000, dtype=np.float32) - 0.5
summary = _builders.summary()
start = others()
for _ in range(20):
    _histogram.histogram("w", values, bins, None, default=True)
for _ in range(3):  # the other heavy builders (torch's own): image and audio
    summary.image("i", image, 1, "CHW")
    summary.audio("a", sound, 44100)
time.sleep(0.2)
ours = others() - start
start = others()
for _ in range(20):
    values.dot(values)  # what torch's builder does
time.sleep(0.2)
print(len(os.listdir("/proc/self/task")), ours, others() - start)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    threads, ours, dot = map(int, out.stdout.split())
    assert threads > 1 and dot >= 5, f"the control: BLAS threads run for a dot here ({out.stdout})"
    assert ours <= 1, out.stdout
