"""TF2 summaries as ``tf.summary`` writes them, built from NumPy arrays without TensorFlow.

Keras's ``TensorBoard`` callback logs through TensorFlow 2's summary ops, whose values
are tensors tagged with a plugin (``scalars``, ``histograms``, ``images``,
``graph_keras_model``), not TF1's ``simple_value``/``histo``/``image`` fields. These
builders make the same ``Summary`` bytes, so TensorBoard (and its loaders) show our
runs exactly as Keras's:

* a scalar: ``float32`` tensor of shape ``[]`` (its 4 bytes in ``tensor_content``);
* a histogram: ``float64`` tensor ``[30, 3]`` of (left edge, right edge, count), binned
  as ``tf.summary.histogram`` bins (:func:`histogram_buckets`);
* an image: string tensor ``[width, height, png...]``, at most 3 images, floats turned
  into bytes as ``tf.image.convert_image_dtype(saturate=True)`` does;
* the Keras model: its JSON in a string tensor ``[1]``.

Scalars are built on the caller's side for every batch, so their bytes are a cached
per-tag head plus the packed float; the rest run on a worker (:mod:`._callback`).
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

from .. import _event

__all__ = [
    "BUCKET_COUNT",
    "MAX_IMAGES",
    "histogram_buckets",
    "histogram_summary",
    "image_summary",
    "model_summary",
    "scalar_summary",
    "weight_image",
]

#: ``tf.summary.histogram``'s default bucket count.
BUCKET_COUNT = 30
#: ``tf.summary.image``'s default ``max_outputs``.
MAX_IMAGES = 3

_DT_FLOAT = 1


def _metadata() -> tuple[bytes, Any, Any, Any]:
    """Each plugin's ``SummaryMetadata``, as ``tf.summary``'s ops make it: TensorBoard's
    own ``create_summary_metadata()`` (no display name, no description), and Keras's
    ``graph_keras_model`` (content ``b"1"``). The scalars' is serialized: its bytes go
    into the cached heads of :func:`scalar_summary`."""
    from tensorboard.compat.proto.summary_pb2 import SummaryMetadata
    from tensorboard.plugins.histogram import metadata as histograms
    from tensorboard.plugins.image import metadata as images
    from tensorboard.plugins.scalar import metadata as scalars

    keras_model = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name="graph_keras_model", content=b"1")
    )
    return (
        scalars.create_summary_metadata(display_name=None, description=None).SerializeToString(),
        histograms.create_summary_metadata(display_name=None, description=None),
        images.create_summary_metadata(display_name=None, description=None),
        keras_model,
    )


_SCALARS, _HISTOGRAMS, _IMAGES, _KERAS_MODEL = _metadata()


def _summary(tag: str, metadata: Any, dtype: str, shape: tuple[int, ...], **tensor: Any) -> bytes:
    """``Summary(value=[Value(tag, metadata, tensor)])`` serialized (built off the caller)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.compat.proto.types_pb2 import DataType

    proto = TensorProto(
        dtype=DataType.Value(dtype),
        tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=size) for size in shape]),
        **tensor,
    )
    value = Summary.Value(tag=tag, metadata=metadata, tensor=proto)
    return Summary(value=[value]).SerializeToString()  # type: ignore[no-any-return]


_SCALAR_TENSOR_HEAD = b"\x08" + _event.varint(_DT_FLOAT) + b"\x12\x00\x22\x04"
_SCALAR_CACHE_LIMIT = 4096
_scalar_heads: dict[str, bytes] = {}


def scalar_summary(tag: str, value: float) -> bytes:
    """``tf.summary.scalar(tag, value)``'s summary bytes (``value`` as float32).

    Per batch, on the caller's side: a cached head per tag (tag, metadata, then the
    tensor last, so its 4 value bytes end the summary) plus the packed float.
    """
    head = _scalar_heads.get(tag)
    if head is None:
        value_bytes = (
            _event.length_delimited(1, tag.encode("utf-8"))
            + _event.length_delimited(9, _SCALARS)
            + b"\x42"
            + _event.varint(len(_SCALAR_TENSOR_HEAD) + 4)
            + _SCALAR_TENSOR_HEAD
        )
        head = b"\x0a" + _event.varint(len(value_bytes) + 4) + value_bytes
        if len(_scalar_heads) < _SCALAR_CACHE_LIMIT:
            _scalar_heads[tag] = head
    try:
        return head + _event.float32(value)  # beyond float32's range: an infinity
    except struct.error:
        raise TypeError(
            f"{tag}: a scalar must be a real number, not {type(value).__name__}"
        ) from None


def model_summary(model_json: str) -> bytes:
    """Keras's ``keras_model_summary("keras", model)``: the model's JSON, for the graph plugin."""
    return _summary(
        "keras", _KERAS_MODEL, "DT_STRING", (1,), string_val=[model_json.encode("utf-8")]
    )


def histogram_buckets(values: np.ndarray, bucket_count: int = BUCKET_COUNT) -> np.ndarray:
    """``tf.summary.histogram``'s ``[bucket_count, 3]`` float64 buckets, in NumPy.

    The same arithmetic as TensorBoard's TF op (``summary_v2._buckets``): float64
    values; width ``(max - min) / count``; bucket ``floor((v - min) / width)``,
    the last one closed; edges ``min + i * width`` with the last edge ``max`` itself;
    one value repeated: every edge that value and every count in the last bucket.
    Counts come from ``np.bincount`` (one thread: no BLAS, no thread pool to wake).
    """
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    if data.size == 0:
        return np.zeros((bucket_count, 3), dtype=np.float64)
    low = data.min()
    high = data.max()
    width_all = high - low
    if width_all == 0:
        counts = np.zeros(bucket_count, dtype=np.float64)
        counts[-1] = data.size
        edges = np.full(bucket_count, high, dtype=np.float64)
        return np.stack([edges, edges, counts], axis=1)
    width = width_all / bucket_count
    # NaN or infinite values (a diverged model) give NaN edges and land in the last
    # bucket: a histogram that shows it, never an error or a warning.
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.floor((data - low) / width)
        edges = low + np.arange(bucket_count + 1, dtype=np.float64) * width
    scaled = np.nan_to_num(scaled, nan=bucket_count - 1, posinf=bucket_count - 1, neginf=0)
    indices = np.minimum(scaled.astype(np.int64), bucket_count - 1)
    counts = np.bincount(indices, minlength=bucket_count).astype(np.float64)
    edges[-1] = high
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def histogram_summary(tag: str, values: np.ndarray) -> bytes:
    """``tf.summary.histogram(tag, values)``'s summary bytes."""
    buckets = histogram_buckets(values)
    content = buckets.astype("<f8").tobytes()
    return _summary(tag, _HISTOGRAMS, "DT_DOUBLE", buckets.shape, tensor_content=content)


def weight_image(weight: np.ndarray, channels_last: bool) -> np.ndarray | None:
    """A weight as Keras's callback shows it: ``[n, h, w, 1]``, or None (no image).

    Keras's ``_log_weight_as_image``: squeeze; a vector is one 1-pixel-wide column;
    a matrix is put wide side across; a 3-D kernel is one image per channel (channels
    first); anything else, or a last axis not of 1, 3 or 4, has no image.
    """
    image = np.squeeze(weight)
    shape = image.shape
    if len(shape) == 1:
        image = image.reshape(1, shape[0], 1, 1)
    elif len(shape) == 2:
        if shape[0] > shape[1]:
            image = image.T
        image = image.reshape(1, image.shape[0], image.shape[1], 1)
    elif len(shape) == 3:
        if channels_last:
            image = np.transpose(image, (2, 0, 1))
        image = image.reshape(image.shape[0], image.shape[1], image.shape[2], 1)
    if image.ndim == 4 and image.shape[-1] in (1, 3, 4):
        return image
    return None


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """``tf.image.convert_image_dtype(images, tf.uint8, saturate=True)``."""
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        # float32 product, clipped, truncated toward zero: TF's scale-then-saturate_cast.
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.nan_to_num(images.astype(np.float32) * np.float32(255.5), nan=0.0)
        return np.clip(scaled, 0, 255).astype(np.uint8)
    raise TypeError(f"images must be floating point or uint8, not {images.dtype}")


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    pixels = image[:, :, 0] if image.shape[-1] == 1 else image  # L, RGB or RGBA
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_summary(tag: str, images: np.ndarray) -> bytes:
    """``tf.summary.image(tag, images)`` (``[n, h, w, c]``, first :data:`MAX_IMAGES`)."""
    pixels = _to_uint8(np.asarray(images)[:MAX_IMAGES])
    height, width = pixels.shape[1], pixels.shape[2]
    pngs = tuple(_png(image) for image in pixels)
    strings = [str(width).encode(), str(height).encode(), *pngs]
    return _summary(tag, _IMAGES, "DT_STRING", (len(strings),), string_val=strings)
