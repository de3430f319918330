"""``add_histogram``'s builder: torch's ``histogram()`` summary, cheaper and on one thread.

It writes the ``HistogramProto`` that torch's ``summary.histogram`` writes (same
buckets, same trimming to the support, same ``max_bins`` subsampling, same errors), but
differs in how two numbers are computed, because it runs on the background side of a
trainer:

* ``sum_squares``: torch's ``values.dot(values)`` is a BLAS call; on a large input it
  wakes NumPy's OpenBLAS thread pool, whose threads then spin and take CPU from the
  trainer's own compute threads for many steps after. Here it is
  ``np.einsum("i,i->", v, v)``: NumPy's own single-threaded loop (the same sum, rounded
  in another order: it can differ from BLAS's in the last bits, as BLAS's own result
  does between thread counts).
* The counts of the default ``bins='tensorflow'`` buckets (edges +-1e-12 * 1.1**k),
  exactly ``np.histogram``'s (which sorts the input): in C, one pass with the GIL
  released (``_buckets.c``: each value's bucket from its sign, exponent and top
  mantissa bits through a table, then one comparison), about 0.1 ms per 65,536 values;
  or, where the extension is not built or ``ASYNCSUMMARY_PURE_PYTHON`` is set, by NumPy
  array passes (the bucket from the value's logarithm in base 1.1, checked and
  corrected against the edges; about 1 ms). If that check ever failed, ``np.histogram``
  is used. Other ``bins`` go to ``np.histogram`` as in torch.

The rest (min, max, sums, trimming) is NumPy on a worker, which releases the GIL on
inputs this size: the caller keeps the GIL while a worker bins. The ``Summary`` is
serialized by hand (:func:`summary_bytes`, protobuf's bytes exactly): building the proto
cost more than the binning. About 0.19 ms in all for 65,536 values.
"""

from __future__ import annotations

import math
import struct
from typing import Any, NamedTuple

import numpy as np

from .. import _encoder, _event
from . import _builders

__all__ = [
    "Fields",
    "default_bucket_counts",
    "histogram",
    "histogram_fields",
    "make_histogram",
    "numpy_bucket_counts",
    "prepare",
    "summary_bytes",
]

try:
    from . import _buckets  # type: ignore[attr-defined]
except ImportError:  # built without a C compiler
    _buckets = None
# The C counter goes with the C encoder: ASYNCSUMMARY_PURE_PYTHON=1 selects NumPy's.
_count: Any = (
    _buckets.count if _buckets is not None and _encoder.IMPLEMENTATION == "native" else None
)

_default_edges: np.ndarray | None = None


def _edges() -> np.ndarray:
    global _default_edges
    if _default_edges is None:
        _default_edges = np.asarray(_builders.default_bins(), dtype=np.float64)
    return _default_edges


def _positive_edges() -> np.ndarray:
    """p[0] .. p[L-1] of the edges -p[L-1] .. -p[0], 0, p[0] .. p[L-1] (a view)."""
    edges = _edges()
    return edges[len(edges) // 2 + 1 :]


def prepare() -> None:
    """Make the default buckets' edges and cell table now (about 7 ms, once per process):
    the writer's constructor calls it, so that the first histogram's build does not
    make them on a worker while the trainer runs."""
    _edges()
    if _count is not None:
        _table()


def default_bucket_counts(values: np.ndarray) -> np.ndarray | None:
    """``np.histogram(values, bins=default_bins())[0]`` for 1-D float64 ``values``, or None.

    Counted in C in one pass (:mod:`._buckets`) where it is built, else by NumPy
    (:func:`numpy_bucket_counts`). None when the NumPy code could not confirm the
    bucket of some value (never seen; the caller then uses ``np.histogram``).
    """
    table = _table() if _count is not None else None
    if table is None:
        return numpy_bucket_counts(values)
    counts = np.zeros(len(_edges()), dtype=np.int64)  # a slot per bucket, and one for none
    if _count(np.ascontiguousarray(values, dtype=np.float64), table, counts):
        return numpy_bucket_counts(values)  # never expected: _table() checks its buckets
    return counts[:-1]


#: One cell of the C counter's table (``cell_t`` in ``_buckets.c``): magnitudes (``|v|``'s
#: bits) from ``step`` on fall in bucket ``high``, the others in ``low``.
_TABLE_DTYPE = np.dtype([("step", "<u8"), ("low", "<i4"), ("high", "<i4")])
_NO_STEP = np.uint64(2**64 - 1)  # above every magnitude: the whole cell in ``low``
_cell_table: np.ndarray | None = None


def _table() -> np.ndarray | None:
    """The C counter's cell table (see ``_buckets.c``), or None if the edges do not fit it.

    Cell ``c`` holds the doubles whose top 16 bits are ``c`` (sign, exponent, 4 mantissa
    bits). Within a cell, for its one sign, the bucket (:func:`_bucket_of_bits`, NumPy's
    rule; the slot past the last bucket for values in none) is monotonic in the
    magnitude's bits, but for the slot of none which only ever follows. So where the
    buckets at a cell's two ends differ, the cell has one step if some magnitude ``s``
    has the first end's bucket just below it and the second end's from it; the step is
    looked for where it can be (a positive edge opens its bucket: ``s`` its bits; a
    negative edge closes the bucket below: ``s`` one past them, as past the last edge;
    -0.0 against the next magnitude) and checked so. A cell holding two edges (never
    with edges 1.1 apart against cells of at most 1 + 1/16) would fail the check, and
    NumPy would count instead.
    """
    global _cell_table
    if _cell_table is None:
        cells = np.arange(1 << 16, dtype=np.uint64)
        sign = (cells >> np.uint64(15)) << np.uint64(63)
        low = (cells & np.uint64(0x7FFF)) << np.uint64(48)  # the cell's magnitudes: low..high
        high = low + np.uint64((1 << 48) - 1)
        edges = _edges()
        bucket_low, bucket_high = _bucket_of_bits(low | sign, edges), _bucket_of_bits(high | sign, edges)
        step = np.full(len(cells), _NO_STEP, dtype=np.uint64)
        edge_bits = _positive_edges().view(np.uint64)
        edge = edge_bits[np.minimum(np.searchsorted(edge_bits, low), len(edge_bits) - 1)]
        one = np.uint64(1)
        todo = np.flatnonzero(bucket_low != bucket_high)  # the cells with a step
        for candidates in (edge, edge + one, low + one):
            candidate, lowest, sign_bit = candidates[todo], low[todo], sign[todo]
            inside = (candidate > lowest) & (candidate <= high[todo])
            at = np.where(inside, candidate, lowest + one)
            fits = (
                inside
                & (_bucket_of_bits((at - one) | sign_bit, edges) == bucket_low[todo])
                & (_bucket_of_bits(at | sign_bit, edges) == bucket_high[todo])
            )
            step[todo[fits]] = candidate[fits]
            todo = todo[~fits]
        table = np.empty(len(cells), dtype=_TABLE_DTYPE)
        if len(todo) == 0:
            table["step"], table["low"], table["high"] = step, bucket_low, bucket_high
        else:
            table = table[:0]  # never with 1.1 apart: NumPy counts
        _cell_table = table
    return _cell_table if len(_cell_table) else None


def _bucket_of_bits(bits: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram``'s bucket of each double given by its bits; ``len(edges) - 1``: none."""
    values = bits.view(np.float64)
    buckets = len(edges) - 1
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = buckets - 1  # the last bucket is closed
    inside = (values >= edges[0]) & (values <= edges[-1])  # NaN: not inside
    return np.where(inside, index, buckets)


def numpy_bucket_counts(values: np.ndarray) -> np.ndarray | None:
    """:func:`default_bucket_counts` with NumPy array passes (the C counter's fallback).

    Works through the values in
    chunks of :data:`_CHUNK`: the temporaries stay in the CPU's cache and are reused
    from one chunk to the next (whole-input temporaries were fresh memory mappings
    each time once torch is imported: their page faults doubled the time).
    """
    edges = _edges()
    buckets = len(edges) - 1
    counts = np.zeros(buckets, dtype=np.intp)
    for begin in range(0, len(values), _CHUNK):
        index = _bucket_of_each(values[begin : begin + _CHUNK], edges)
        if index is None:
            return None
        counts += np.bincount(index, minlength=buckets)
    return counts


_CHUNK = 16384  # float64 values: 128 KiB per temporary


def _bucket_of_each(values: np.ndarray, edges: np.ndarray) -> np.ndarray | None:
    """The bucket of each value that has one (see :func:`numpy_bucket_counts`)."""
    buckets = len(edges) - 1
    zero = buckets // 2  # edges[zero] == 0: the bucket [0, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf, log(nan) = nan
        k = np.log(np.abs(values))
    k -= math.log(1e-12)
    k *= 1 / math.log(1.1)
    np.floor(k, out=k)
    np.fmax(k, -1, out=k)  # NaN and |v| < 1e-12 -> -1
    np.fmin(k, buckets, out=k)
    k_int = k.astype(np.intp)
    # v >= 0 in [e_k, e_k+1) -> bucket zero + 1 + k; v < 0 in [-e_k+1, -e_k) -> zero - 2 - k
    index = (zero + 1 + k_int) - (values < 0) * (2 * k_int + 3)
    np.clip(index, 0, buckets - 1, out=index)
    # The logarithm's rounding may put a value one bucket off: the edges decide.
    index -= values < edges[index]
    index += (values >= edges[index + 1]) & (index < buckets - 1)
    np.clip(index, 0, buckets - 1, out=index)
    inside = (values >= edges[0]) & (values <= edges[-1])  # np.histogram drops the rest (and NaN)
    right_open = (values < edges[index + 1]) | (index == buckets - 1)  # the last bucket is closed
    if not np.all(((edges[index] <= values) & right_open) | ~inside):
        return None
    return index[inside]


class Fields(NamedTuple):
    """A ``HistogramProto``'s fields, as torch's ``make_histogram`` fills them."""

    min: float
    max: float
    num: int
    sum: float
    sum_squares: float
    bucket_limit: np.ndarray  # float64, the buckets' right edges
    bucket: np.ndarray  # the counts, integers


def histogram_fields(
    values: np.ndarray, bins: Any, max_bins: int | None = None, default: bool = False
) -> Fields:
    """What torch's ``make_histogram`` puts in its proto (see the module docstring)."""
    if values.size == 0:
        raise ValueError("The input has no element.")
    values = values.reshape(-1)
    counts = default_bucket_counts(values) if default else None
    if counts is None:
        counts, limits = np.histogram(values, bins=bins)
    else:
        limits = _edges()
    num_bins = len(counts)
    if max_bins is not None and num_bins > max_bins:
        subsampling = num_bins // max_bins
        remainder = num_bins % subsampling
        if remainder != 0:
            counts = np.pad(
                counts, pad_width=[[0, subsampling - remainder]], mode="constant", constant_values=0
            )
        counts = counts.reshape(-1, subsampling).sum(axis=-1)
        new_limits = np.empty((counts.size + 1,), limits.dtype)
        new_limits[:-1] = limits[:-1:subsampling]
        new_limits[-1] = limits[-1]
        limits = new_limits
    # The support: from the bucket left of the first non-empty one (TensorBoard shows
    # right edges only) to the last non-empty one.
    cum_counts = np.cumsum(np.greater(counts, 0))
    start, end = np.searchsorted(cum_counts, [0, cum_counts[-1] - 1], side="right")
    start, end = int(start), int(end) + 1
    counts = counts[start - 1 : end] if start > 0 else np.concatenate([[0], counts[:end]])
    limits = limits[start : end + 1]
    if counts.size == 0 or limits.size == 0:
        raise ValueError("The histogram is empty, please file a bug report.")
    return Fields(
        values.min(),
        values.max(),
        len(values),
        values.sum(),
        np.einsum("i,i->", values, values),
        limits,
        counts,
    )


def make_histogram(
    values: np.ndarray, bins: Any, max_bins: int | None = None, default: bool = False
) -> Any:
    """torch's ``make_histogram``: the ``HistogramProto`` of :func:`histogram_fields`."""
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

    fields = histogram_fields(values, bins, max_bins, default)
    return HistogramProto(
        min=fields.min,
        max=fields.max,
        num=fields.num,
        sum=fields.sum,
        sum_squares=fields.sum_squares,
        bucket_limit=fields.bucket_limit.tolist(),
        bucket=fields.bucket.tolist(),
    )


def histogram(
    name: str, values: Any, bins: Any, max_bins: int | None = None, default: bool = False
) -> bytes:
    """torch's ``summary.histogram(name, values, bins, max_bins)``, serialized.

    ``default``: ``bins`` are :func:`._builders.default_bins` (``bins='tensorflow'``).
    The bytes are :func:`summary_bytes`'s: protobuf's own, without a proto object.
    """
    values = _builders.convert_np().make_np(values)
    return summary_bytes(name, histogram_fields(values.astype(float), bins, max_bins, default))


_DOUBLE = struct.Struct("<d").pack
_ZERO = bytes(8)


def summary_bytes(tag: str, fields: Fields) -> bytes:
    """``Summary(value=[Summary.Value(tag=tag, histo=HistogramProto(...))])``'s bytes.

    Written by hand because building the proto costs more than the whole binning: a
    Python float per bucket edge and count (about 0.12 ms for 550 buckets), where the
    packed fields here are the arrays' own bytes. The encoding is protobuf's: fields in
    number order; a double left out when its bits are zero (``-0.0`` is written);
    ``bucket_limit`` (6) and ``bucket`` (7) packed; an empty tag left out.
    """
    histo = b"".join(
        [
            *(_double_field(number, value) for number, value in enumerate(fields[:5], start=1)),
            _packed_doubles(6, fields.bucket_limit),
            _packed_doubles(7, fields.bucket),
        ]
    )
    name = tag.encode("utf-8")  # a lone surrogate raises here, as in protobuf
    field = _event.length_delimited
    value = (field(1, name) if name else b"") + field(5, histo)  # Summary.Value: tag, histo
    return field(1, value)  # Summary.value


def _double_field(number: int, value: float) -> bytes:
    data = _DOUBLE(value)
    return b"" if data == _ZERO else bytes((number << 3 | 1,)) + data


def _packed_doubles(number: int, array: np.ndarray) -> bytes:
    if not len(array):
        return b""
    return _event.length_delimited(number, np.ascontiguousarray(array, dtype="<f8").tobytes())
