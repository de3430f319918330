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
* The counts of the default ``bins='tensorflow'`` buckets (edges +-1e-12 * 1.1**k): the
  bucket of each value is found arithmetically (its logarithm in base 1.1), then
  checked and corrected against the edges themselves, so the counts are exactly
  ``np.histogram``'s (which sorts the input: about 3x slower). If the check ever
  failed, ``np.histogram`` is used. Other ``bins`` go to ``np.histogram`` as in torch.

Both are NumPy array operations that release the GIL on inputs this size: the caller
keeps the GIL while a worker bins.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _builders

__all__ = ["histogram", "make_histogram"]

_default_edges: np.ndarray | None = None


def _edges() -> np.ndarray:
    global _default_edges
    if _default_edges is None:
        _default_edges = np.asarray(_builders.default_bins(), dtype=np.float64)
    return _default_edges


def default_bucket_counts(values: np.ndarray) -> np.ndarray | None:
    """``np.histogram(values, bins=default_bins())[0]`` for 1-D float64 ``values``, or None.

    None when the arithmetic bucket of some value could not be confirmed by the edges
    (never seen; the caller then uses ``np.histogram``). Works through the values in
    chunks of :data:`_CHUNK`: the temporaries stay in the CPU's cache and are reused
    from one chunk to the next (whole-input temporaries were fresh memory mappings
    each time once torch is imported: their page faults doubled the time).
    """
    edges = _edges()
    buckets = len(edges) - 1
    counts = np.zeros(buckets, dtype=np.intp)
    for begin in range(0, len(values), _CHUNK):
        index = _buckets(values[begin : begin + _CHUNK], edges)
        if index is None:
            return None
        counts += np.bincount(index, minlength=buckets)
    return counts


_CHUNK = 16384  # float64 values: 128 KiB per temporary


def _buckets(values: np.ndarray, edges: np.ndarray) -> np.ndarray | None:
    """The bucket of each value that has one (see :func:`default_bucket_counts`)."""
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
