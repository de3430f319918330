"""The embedding projector's files, written on a worker in torch's layout and format.

``add_embedding`` writes no event: it writes, under ``<logdir>/<step:05d>/<tag>/``,
``tensors.tsv`` (one row per point), ``metadata.tsv`` (labels, optional header),
``sprite.png`` (the label images on a square grid), and rewrites
``<logdir>/projector_config.pbtxt`` with every embedding of the writer so far.

torch writes them through ``tf.io.gfile``, which imports TensorFlow when it is
installed; these functions write the same bytes through the local file system, or
fsspec for a URL logdir. Values are formatted as torch formats them (``str`` of each
element as a Python number) and the sprite is assembled with torch's own ``make_grid``.
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._storage import is_url
from . import _builders

__all__ = ["ProjectorState", "embedding_info", "write_embedding"]


class ProjectorState:
    """A writer's projector config, and which version of it is on storage.

    Embedding jobs of one writer may finish out of order on two workers; each carries
    the config text of its call and its version number, and only a newer version
    replaces the file, so the file always ends up as of the latest call.
    """

    def __init__(self) -> None:
        from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

        self.config = ProjectorConfig()
        self.version = 0
        self._written = 0
        self._lock = threading.Lock()

    def write_if_newer(self, logdir: str, version: int, text: str, storage_options: dict[str, Any] | None) -> None:
        with self._lock:
            if version <= self._written:
                return
            _write(os.path.join(logdir, "projector_config.pbtxt"), text.encode("utf-8"), storage_options)
            self._written = version


def embedding_info(tag: str, global_step: Any, subdir: str, has_metadata: bool, sprite_dim: Sequence[int] | None) -> Any:
    """The ``EmbeddingInfo`` torch adds to the projector config for one call."""
    from tensorboard.plugins.projector.projector_config_pb2 import EmbeddingInfo

    info = EmbeddingInfo()
    info.tensor_name = f"{tag}:{str(global_step).zfill(5)}"
    info.tensor_path = os.path.join(subdir, "tensors.tsv")
    if has_metadata:
        info.metadata_path = os.path.join(subdir, "metadata.tsv")
    if sprite_dim is not None:
        info.sprite.image_path = os.path.join(subdir, "sprite.png")
        info.sprite.single_image_dim.extend(sprite_dim)
    return info


def write_embedding(
    save_path: str,
    mat: Any,
    metadata: list[Any] | None,
    metadata_header: Sequence[Any] | None,
    label_img: Any,
    state: ProjectorState,
    logdir: str,
    version: int,
    config_text: str,
    storage_options: dict[str, Any] | None,
) -> None:
    """All files of one ``add_embedding`` call (run on a worker)."""
    _makedirs(save_path, storage_options)
    if metadata is not None:
        _write(os.path.join(save_path, "metadata.tsv"), _metadata_tsv(metadata, metadata_header), storage_options)
    if label_img is not None:
        _write(os.path.join(save_path, "sprite.png"), _sprite_png(label_img), storage_options)
    _write(os.path.join(save_path, "tensors.tsv"), _tensors_tsv(mat), storage_options)
    state.write_if_newer(logdir, version, config_text, storage_options)


def _metadata_tsv(metadata: list[Any], header: Sequence[Any] | None) -> bytes:
    if not header:
        lines = [str(label) for label in metadata]
    else:
        lines = ["\t".join(str(cell) for cell in row) for row in [header, *metadata]]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _tensors_tsv(mat: Any) -> bytes:
    rows = _builders.convert_np().make_np(mat).tolist()  # Python numbers, as .item() gives
    return "".join("\t".join(map(str, row)) + "\n" for row in rows).encode("utf-8")


def _sprite_png(label_img: Any) -> bytes:
    from PIL import Image

    images = _builders.convert_np().make_np(label_img)
    columns = math.ceil(images.shape[0] ** 0.5)
    grid = _builders.utils().make_grid(images, ncols=columns).transpose(1, 2, 0)  # HWC
    side = grid.shape[1]
    square = np.zeros((side, side, 3))
    square[: grid.shape[0]] = grid
    buffer = io.BytesIO()
    Image.fromarray(np.uint8((square * 255).clip(0, 255))).save(buffer, format="PNG")
    return buffer.getvalue()


def _makedirs(path: str, storage_options: dict[str, Any] | None) -> None:
    if is_url(path):
        import fsspec

        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        fs.makedirs(root, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def _write(path: str, data: bytes, storage_options: dict[str, Any] | None) -> None:
    if is_url(path):
        import fsspec

        with fsspec.open(path, "wb", **(storage_options or {})) as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
