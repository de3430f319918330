"""Caller's side checks: torch's errors, raised at the call, without touching the data.

torch's ``SummaryWriter`` finds bad input while it builds the summary on the caller's
thread: a wrong ``dataformats``, a shape the format does not fit, an empty histogram,
audio that is not one-dimensional. Here the build runs later on a worker, so these
checks run first, at the call, and raise the same exception types (with torch's
messages where torch writes its own).

They read shapes and dtypes only, never values, so they cost no copy and never wait
for a GPU. Where torch's rule is deep inside its code (channel counts in
``make_grid``, the image modes Pillow accepts, NumPy's rules for ``bins``), the check
runs torch's very code on a *stand-in*: a tiny zero array of the same rank, dtype and
channel count, for which that code raises what it would raise on the real input.
Errors that depend on the values themselves (a NaN under automatic ``bins``) are found
on the worker and come back as an :class:`~asyncsummary.InvalidEventError` on a later
call, with the original error as its cause.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import _builders

__all__ = [
    "check_array_like",
    "check_audio",
    "check_embedding",
    "check_histogram",
    "check_image",
    "check_image_boxes",
    "check_mesh",
    "check_pr_curve",
    "check_pr_curve_raw",
    "check_scalar_shape",
    "check_tensor",
    "check_video",
    "numpy_dtype",
    "shape_of",
]

_numpy_dtypes: dict[torch.dtype, np.dtype[Any]] = {}


def check_array_like(value: Any) -> None:
    """What ``make_np`` accepts: a tensor, an ndarray or a NumPy scalar."""
    if isinstance(value, (torch.Tensor, np.ndarray)) or np.isscalar(value):
        return
    raise NotImplementedError(f"Got {type(value)}, but numpy array or torch tensor are expected.")


def shape_of(value: Any) -> tuple[int, ...]:
    """The shape ``make_np(value)`` would have (a scalar becomes ``(1,)``)."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, np.ndarray):
        return value.shape
    return (1,)


def numpy_dtype(value: Any) -> np.dtype[Any]:
    """The dtype of ``make_np(value)``, found without converting the data.

    bfloat16 becomes float16, as in ``make_np``; a dtype NumPy lacks raises the
    ``TypeError`` that ``.numpy()`` raises.
    """
    if isinstance(value, np.ndarray):
        return value.dtype
    if isinstance(value, torch.Tensor):
        dtype = _numpy_dtypes.get(value.dtype)
        if dtype is None:
            probe = torch.empty(0, dtype=value.dtype)
            dtype = _builders.convert_np().make_np(probe).dtype
            _numpy_dtypes[value.dtype] = dtype
        return dtype
    return np.array([value]).dtype


def _stand_in(value: Any, shape: Sequence[int]) -> np.ndarray:
    return np.zeros(tuple(shape), numpy_dtype(value))


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def check_scalar_shape(value: Any) -> None:
    """``scalar()``: one element once squeezed."""
    check_array_like(value)
    shape = shape_of(value)
    squeezed = [n for n in shape if n != 1]
    if squeezed:
        raise AssertionError(
            f"Tensor should contain one element (0 dimensions). Was given size: "
            f"{_numel(shape)} and {len(squeezed)} dimensions."
        )


def check_tensor(tag: str, tensor: Any) -> None:
    """``tensor_proto()``: a torch tensor of a supported dtype under 2 GB."""
    if tensor.numel() * tensor.itemsize >= (1 << 31):
        raise ValueError("tensor is bigger than protocol buffer's hard limit of 2GB in size")
    if tensor.dtype not in _builders.summary()._TENSOR_TYPE_MAP:
        raise ValueError(f"{tag} has unsupported tensor dtype {tensor.dtype}")


def check_histogram(values: Any, bins: Any, max_bins: Any, bins_are_default: bool) -> None:
    """``histogram()``: non-empty numbers; ``bins``/``max_bins`` as NumPy accepts them."""
    check_array_like(values)
    if _numel(shape_of(values)) == 0:
        raise ValueError("The input has no element.")
    stand_in = _stand_in(values, (1,)).astype(float)  # a str dtype fails here, as in torch
    if not bins_are_default or max_bins is not None:
        _builders.summary().make_histogram(stand_in, bins, max_bins)


def check_image(image: Any, dataformats: str) -> None:
    """``image()``: the format fits the shape; the result is an image Pillow can hold."""
    check_array_like(image)
    shape = shape_of(image)
    convert_to_hwc = _builders.utils().convert_to_HWC
    if len(set(dataformats)) != len(dataformats) or len(shape) != len(dataformats):
        # torch's own check raises torch's own message; a broadcast view costs nothing.
        convert_to_hwc(np.broadcast_to(np.zeros((), numpy_dtype(image)), shape), dataformats)
    channel = dataformats.upper().find("C")
    stand_in = _stand_in(image, [n if i == channel else 1 for i, n in enumerate(shape)])
    hwc = convert_to_hwc(stand_in, dataformats)
    scale = 1 if hwc.dtype == np.uint8 else 255
    from PIL import Image

    Image.fromarray((hwc.astype(np.float32) * scale).clip(0, 255).astype(np.uint8))


def check_image_boxes(image: Any, boxes: Any, dataformats: str) -> None:
    """``image_boxes()``: the image as for ``image()``; boxes indexable as ``[i, 0..3]``."""
    check_image(image, dataformats)
    check_array_like(boxes)
    shape = shape_of(boxes)
    if shape and shape[0] > 0:
        if len(shape) < 2:
            raise IndexError(
                f"too many indices for array: array is {len(shape)}-dimensional, but 2 were indexed"
            )
        if shape[1] < 4:
            raise IndexError(f"index {shape[1]} is out of bounds for axis 1 with size {shape[1]}")


def check_video(video: Any) -> None:
    """``_prepare_video()``: five dimensions (N, T, C, H, W)."""
    check_array_like(video)
    _n, _t, _c, _h, _w = shape_of(video)  # raises torch's ValueError (unpacking)


def check_audio(sound: Any) -> None:
    """``audio()``: non-empty, one dimension once squeezed."""
    check_array_like(sound)
    shape = shape_of(sound)
    stand_in = _stand_in(sound, (1,))
    abs(stand_in).max()  # a dtype without abs() fails here, as in torch
    if _numel(shape) == 0:
        raise ValueError("zero-size array to reduction operation maximum which has no identity")
    if len([n for n in shape if n != 1]) != 1:
        raise AssertionError("input tensor should be 1 dimensional.")


def check_pr_curve(labels: Any, predictions: Any, num_thresholds: Any, weights: Any) -> None:
    """``pr_curve()``: labels (times weights) shaped like predictions; a valid bin count."""
    check_array_like(labels)
    check_array_like(predictions)
    weight_shape = () if weights is None else np.shape(weights)
    label_shape, prediction_shape = shape_of(labels), shape_of(predictions)
    try:
        weighted = np.broadcast_shapes(label_shape, weight_shape)
    except ValueError:
        raise ValueError(
            f"operands could not be broadcast together with shapes {label_shape} {weight_shape}"
        ) from None
    if tuple(weighted) != tuple(prediction_shape):
        raise ValueError("weights should have the same shape as a.")
    count = min(num_thresholds, 127)
    np.histogram(np.zeros(1), bins=count, range=(0, count - 1))


def check_pr_curve_raw(arrays: Sequence[Any]) -> None:
    """``pr_curve_raw()``: ``np.stack`` of the six counts needs one shape."""
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1:
        raise ValueError("all input arrays must have the same shape")


def check_mesh(tensors: Sequence[Any], config_dict: Any) -> None:
    """``mesh()``: the config is JSON; every given tensor is ``B x N x 3`` (rank 3)."""
    if config_dict is not None:
        json.dumps(config_dict, sort_keys=True)
    for tensor in tensors:
        if tensor is not None:
            shape = torch.Size(tensor.shape if isinstance(tensor, torch.Tensor) else np.shape(tensor))
            if len(shape) != 3:  # tensorboard's mesh metadata refuses it, with this message
                raise ValueError(f"Tensor shape should be of shape BxNx3, but got {shape}.")


def check_embedding(mat: Any, metadata: Any, label_img: Any, metadata_header: Any) -> None:
    """``add_embedding()``: torch's assertions, all before any file is written."""
    check_array_like(mat)
    shape = shape_of(mat)
    if metadata is not None:
        if shape[0] != len(metadata):
            raise AssertionError("#labels should equal with #data points")
        if metadata_header and len(metadata_header) != len(metadata[0]):
            raise AssertionError("len of header must be equal to the number of columns in metadata")
    if label_img is not None:
        if shape[0] != label_img.shape[0]:
            raise AssertionError("#images should equal with #data points")
        count = label_img.size(0)  # torch needs a tensor here (TypeError for an ndarray)
        _check_sprite(label_img, count)
    if len(shape) != 2:
        raise AssertionError("mat should be 2D, where mat.size(0) is the number of data points")


def _check_sprite(label_img: Any, count: int) -> None:
    """``make_sprite()``: a 4-D image batch of 1 or 3 channels that fits its square."""
    shape = shape_of(label_img)
    columns = math.ceil(count**0.5)
    stand_in = _stand_in(label_img, [1, shape[1], 1, 1] if len(shape) == 4 else [1] * len(shape))
    _builders.utils().make_grid(stand_in, ncols=columns)  # rank and channels, as in torch
    height, width = shape[2], shape[3]
    ncols = min(count, columns)
    nrows = math.ceil(count / ncols) if ncols else 0
    if nrows * height > ncols * width:
        raise ValueError(
            f"could not broadcast input array from shape ({nrows * height},{ncols * width},3) "
            f"into shape ({ncols * width},{ncols * width},3)"
        )
