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
  released (``_buckets.c``: each value's bucket from its exponent and top mantissa bits
  through a table, then one comparison), about 0.15 ms per 65,536 values; or, where the
  extension is not built or ``ASYNCSUMMARY_PURE_PYTHON`` is set, by NumPy array passes
  (the bucket from the value's logarithm in base 1.1, checked and corrected against
  the edges; about 1 ms). If that check ever failed, ``np.histogram`` is used. Other
  ``bins`` go to ``np.histogram`` as in torch.

The rest (min, max, sums, trimming) is NumPy on a worker, which releases the GIL on
inputs this size: the caller keeps the GIL while a worker bins.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _encoder
from . import _builders

__all__ = ["default_bucket_counts", "histogram", "make_histogram", "numpy_bucket_counts"]

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


def default_bucket_counts(values: np.ndarray) -> np.ndarray | None:
    """``np.histogram(values, bins=default_bins())[0]`` for 1-D float64 ``values``, or None.

    Counted in C in one pass (:mod:`._buckets`) where it is built, else by NumPy
    (:func:`numpy_bucket_counts`). None when the NumPy code could not confirm the
    bucket of some value (never seen; the caller then uses ``np.histogram``).
    """
    cells = _cells() if _count is not None else None
    if cells is None:
        return numpy_bucket_counts(values)
    counts = np.zeros(len(_edges()) - 1, dtype=np.int64)
    if _count(np.ascontiguousarray(values, dtype=np.float64), _positive_edges(), cells, counts):
        return numpy_bucket_counts(values)  # never expected: see _cells()
    return counts


_cell_table: np.ndarray | None = None


def _cells() -> np.ndarray | None:
    """The C counter's cell table (see ``_buckets.c``), or None if the edges do not fit it.

    Cell ``c`` holds the non-negative doubles whose bits, shifted right by 48, are ``c``
    (11 exponent bits, 4 mantissa bits); its entry is the index of the last positive
    edge <= its lowest value (-1 if none). Valid only if no cell holds two edges.
    """
    global _cell_table
    if _cell_table is None:
        positive = _positive_edges()
        start = np.arange(1 << 15, dtype=np.uint64) << np.uint64(48)
        last = start + np.uint64((1 << 48) - 1)
        finite = start < np.uint64(0x7FF0 << 48)
        first_edge = np.searchsorted(positive, start[finite].view(np.float64), side="right") - 1
        last_edge = np.searchsorted(positive, last[finite].view(np.float64), side="right") - 1
        if np.any(last_edge - first_edge > 1):
            _cell_table = np.empty(0, dtype=np.int32)  # never with 1.1 apart: NumPy counts
        else:
            table = np.full(1 << 15, len(positive) - 1, dtype=np.int32)  # inf, NaN: not counted
            table[finite] = first_edge
            _cell_table = table
    return _cell_table if len(_cell_table) else None


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


def make_histogram(
    values: np.ndarray, bins: Any, max_bins: int | None = None, default: bool = False
) -> Any:
    """torch's ``make_histogram`` (see the module docstring for what differs)."""
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

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
    return HistogramProto(
        min=values.min(),
        max=values.max(),
        num=len(values),
        sum=values.sum(),
        sum_squares=np.einsum("i,i->", values, values),
        bucket_limit=limits.tolist(),
        bucket=counts.tolist(),
    )


def histogram(
    name: str, values: Any, bins: Any, max_bins: int | None = None, default: bool = False
) -> Any:
    """torch's ``summary.histogram(name, values, bins, max_bins)``: a ``Summary`` proto.

    ``default``: ``bins`` are :func:`._builders.default_bins` (``bins='tensorflow'``).
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    values = _builders.convert_np().make_np(values)
    hist = make_histogram(values.astype(float), bins, max_bins, default)
    return Summary(value=[Summary.Value(tag=name, histo=hist)])
