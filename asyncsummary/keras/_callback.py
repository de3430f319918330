"""``keras.callbacks.TensorBoard`` rebuilt on asyncsummary's writer.

Why Keras's own callback makes each batch wait (measured: 2.0x the batch with no
callback on local disk, 7.5x on storage whose writes take 5 ms): with ``update_freq``
set it pops and pushes TensorFlow's default summary writer in every
``on_train_batch_begin``, which flushes that writer on the training thread; each
logged value runs ~0.5 ms of eager TF ops; and since it overrides
``on_train_batch_end`` without being ``async_safe``, Keras also runs every other
callback inline, converting the logs to Python floats on the training thread.

This callback keeps the same runs (``train/``, ``validation/``), tags, steps and
summary kinds (TF2 tensor summaries, built by :mod:`._summaries` without TensorFlow),
and:

* is ``async_safe`` (unless ``write_steps_per_second``, whose batch timing needs the
  training thread): on the backends Keras deems thread safe (torch, JAX; not
  TensorFlow, where it calls every callback inline) Keras then hands
  ``on_train_batch_end`` to its callback thread pool, which also converts the logs;
  the training thread only submits the call, as it does with no callback at all. Calls of one epoch may run side by side there, so
  each carries the step counted on the training thread in ``on_train_batch_begin``
  and their events are put back in step order before they reach the writer;
* never flushes per batch; epoch-end weights are copied to host arrays on the
  training thread (a snapshot; training then changes them) and binned, turned into
  images and encoded on asyncsummary's build pool;
* closes its writers at ``on_train_end``, as Keras's does (``fit`` returns once the
  events are written, within ``close_timeout``), and at exit.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from .. import _event
from .._loop import build_pool
from .._storage import is_url, makedirs, write_file
from .._writer import AsyncSummaryWriter
from . import _summaries

__all__ = ["TensorBoard"]

_logger = logging.getLogger(__name__)

#: Host copies of one weight (tag, array), taken on the training thread.
_Snapshot = list[tuple[str, np.ndarray]]
#: A batch's event: (summary bytes, empty if nothing is logged; wall time).
_Event = tuple[bytes, float]


class TensorBoard(keras.callbacks.Callback):
    """Drop-in for ``keras.callbacks.TensorBoard``: same arguments, same event files.

    Args:
        log_dir: Where the ``train`` and ``validation`` runs go (a path, or any URL
            asyncsummary's writer takes: ``s3://``, ``gs://``, ...).
        histogram_freq: Every this many epochs, a histogram of each weight (0: never).
        write_graph: Write the model's Keras config (TensorBoard's graph tab), as
            Keras does: TensorBoard's conceptual graph of a Functional or Sequential
            model. (Keras writes no op graph with Keras 3 either.)
        write_images: With ``histogram_freq``, each weight as an image too.
        write_steps_per_second: Log steps per second, per batch and per epoch. The
            callback is then not ``async_safe`` (the batch's end time is taken on the
            training thread).
        update_freq: ``"epoch"``, ``"batch"`` (1), or log every this many batches.
        profile_batch: Only 0: profiling is not supported here; run the profiling
            session with ``keras.callbacks.TensorBoard`` (a ``ValueError`` otherwise).
        embeddings_freq: Every this many epochs, save the weights for the projector.
        embeddings_metadata: A metadata file for every embedding layer, or a dict of
            layer name to file.
        writer_options: Passed to each :class:`asyncsummary.AsyncSummaryWriter`
            (``flush_secs``, ``close_timeout``, ``max_pending_bytes``,
            ``storage_options``, ...).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] = "logs",
        histogram_freq: int = 0,
        write_graph: bool = True,
        write_images: bool = False,
        write_steps_per_second: bool = False,
        update_freq: int | str = "epoch",
        profile_batch: int | str | tuple[int, int] = 0,
        embeddings_freq: int = 0,
        embeddings_metadata: str | Mapping[str, str] | None = None,
        *,
        writer_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.log_dir = os.fspath(log_dir) if isinstance(log_dir, os.PathLike) else str(log_dir)
        self.histogram_freq = _non_negative_int("histogram_freq", histogram_freq)
        self.write_graph = bool(write_graph)
        self.write_images = bool(write_images)
        self.write_steps_per_second = bool(write_steps_per_second)
        self.update_freq = _update_freq(update_freq)
        self._every = 0 if self.update_freq == "epoch" else int(self.update_freq)  # 0: epochs only
        _refuse_profiling(profile_batch)
        self.embeddings_freq = _non_negative_int("embeddings_freq", embeddings_freq)
        if embeddings_metadata is not None and not isinstance(embeddings_metadata, (str, Mapping)):
            raise TypeError(
                f"embeddings_metadata must be a str or a dict, got {embeddings_metadata!r}"
            )
        self.embeddings_metadata = embeddings_metadata
        if writer_options is not None and not isinstance(writer_options, Mapping):
            raise TypeError(f"writer_options must be a dict, got {writer_options!r}")
        self._writer_options = dict(writer_options or {})
        # Keras reads this when fit() builds its CallbackList (see the module docstring).
        self.async_safe = not self.write_steps_per_second
        self._writers: dict[str, AsyncSummaryWriter] = {}
        self._writers_lock = threading.Lock()
        self._train_writer: AsyncSummaryWriter | None = None
        self._global_train_batch = 0
        self._batch_start_time = 0.0
        self._epoch_start_time = 0.0
        self._previous_epoch_iterations = 0.0
        # batch index -> its global step, set on the training thread at the batch's begin.
        self._batch_steps: dict[int, int] = {}
        # Batch ends run on Keras's thread pool, maybe out of order: their events wait
        # here until every earlier step's are written.
        self._order_lock = threading.Lock()
        self._ready: dict[int, _Event] = {}
        self._batch_tags: dict[str, str] = {}  # log name -> "batch_<name>"
        self._next_step = 1

    # ------------------------------------------------------------------ writers
    def _run_dir(self, run: str) -> str:
        return self._join(self.log_dir, run)

    def _writer(self, run: str) -> AsyncSummaryWriter:
        """The run's writer, made on first use (no empty event files, as Keras)."""
        with self._writers_lock:  # the training thread and Keras's callback threads
            writer = self._writers.get(run)
            if writer is None:
                writer = AsyncSummaryWriter(self._run_dir(run), **self._writer_options)
                self._writers[run] = writer
            elif writer.closed:  # a later fit() or evaluate(): a new file, as Keras makes
                writer.reopen()
            if run == "train":  # the batches' shortcut, until the writers close
                self._train_writer = writer
            return writer

    def _close_writers(self) -> None:
        self._train_writer = None
        errors = []
        for writer in self._writers.values():
            try:
                writer.close()
            except Exception as exc:  # noqa: BLE001 - close the others, then raise
                errors.append(exc)
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ set-up
    def set_model(self, model: Any) -> None:
        """Keras calls it for every ``fit``/``evaluate``: writes the model's config, as Keras."""
        self._model = model
        if self.write_graph and type(model).__name__ in ("Functional", "Sequential"):
            self._write_model_config(model)
        if self.embeddings_freq:
            self._configure_embeddings(model)

    def _write_model_config(self, model: Any) -> None:
        try:
            model_json = model.to_json()
        except Exception as exc:  # noqa: BLE001 - as Keras: a warning, never a failed fit
            import warnings

            warnings.warn(f"Model failed to serialize as JSON. Ignoring... {exc}", stacklevel=2)
            return
        self._writer("train").add_summary(_summaries.model_summary(model_json), 0)

    def _configure_embeddings(self, model: Any) -> None:
        """Write ``projector_config.pbtxt`` (in the background) naming each embedding."""
        from google.protobuf import text_format
        from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

        metadata = self.embeddings_metadata
        remaining = dict(metadata) if isinstance(metadata, Mapping) else None
        config = ProjectorConfig()
        for layer in model.layers:
            if isinstance(layer, keras.layers.Embedding):
                embedding = config.embeddings.add()
                embedding.tensor_name = "layer_with_weights-0/embeddings/.ATTRIBUTES/VARIABLE_VALUE"
                if isinstance(metadata, str):
                    embedding.metadata_path = metadata
                elif remaining is not None and layer.name in remaining:
                    embedding.metadata_path = remaining.pop(layer.name)
        if remaining:
            raise ValueError(
                "Unrecognized `Embedding` layer names passed to `keras.callbacks.TensorBoard` "
                f"`embeddings_metadata` argument: {remaining.keys()}"
            )
        data = text_format.MessageToString(config).encode()
        path = self._join(self.log_dir, "projector_config.pbtxt")
        options = self._storage_options()
        self._in_background(lambda: _write_beside(path, data, options))

    # ------------------------------------------------------------------ train
    def on_train_begin(self, logs: Any = None) -> None:
        self._global_train_batch = 0
        self._previous_epoch_iterations = 0.0
        with self._order_lock:
            self._ready.clear()
            self._next_step = 1
        self._batch_steps.clear()

    def on_train_end(self, logs: Any = None) -> None:
        self._write_ready()
        self._close_writers()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._global_train_batch += 1
        self._batch_steps[batch] = self._global_train_batch
        if self.write_steps_per_second:
            self._batch_start_time = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        """Runs on Keras's callback threads (``async_safe``), maybe two at once.

        One event per batch, holding every value (Keras writes an event per value; a
        reader sees the same tags, steps and values), built from cached per-tag heads.
        """
        step = self._batch_steps.pop(batch, None)
        if step is None:  # called without its begin (not by fit): Keras's counter, as is
            step = self._global_train_batch
        summary = b""
        try:
            if self._every and step % self._every == 0:
                parts = []
                if self.write_steps_per_second:
                    elapsed = max(time.perf_counter() - self._batch_start_time, 1e-9)
                    parts.append(_summaries.scalar_summary("batch_steps_per_second", 1.0 / elapsed))
                if isinstance(logs, dict):  # `logs` isn't necessarily a dict (Keras's words)
                    tags = self._batch_tags
                    for name, value in logs.items():
                        tag = tags.get(name)
                        if tag is None:
                            tag = tags[name] = f"batch_{name}"
                        parts.append(_summaries.scalar_summary(tag, value))
                summary = b"".join(parts)
        finally:
            self._in_step_order(step, (summary, time.time()))

    def _in_step_order(self, step: int, event: _Event) -> None:
        """Write ``step``'s event after every earlier step's (see ``_ready``)."""
        with self._order_lock:
            if step == self._next_step:  # the usual case: in order
                self._add(step, event)
                self._next_step += 1
                ready = self._ready
                while ready and self._next_step in ready:
                    self._add(self._next_step, ready.pop(self._next_step))
                    self._next_step += 1
            elif step < self._next_step:  # a call outside fit's begin/end pairs
                self._add(step, event)
            else:
                self._ready[step] = event

    def _write_ready(self) -> None:
        """At the end of training: whatever still waits for a step that never ended."""
        with self._order_lock:
            for step in sorted(self._ready):
                self._add(step, self._ready.pop(step))

    def _add(self, step: int, event: _Event) -> None:
        summary, wall_time = event
        if summary:
            writer = self._train_writer or self._writer("train")
            writer.add_summary(summary, step, wall_time)

    # ------------------------------------------------------------------ test
    def on_test_end(self, logs: Any = None) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if not optimizer or not hasattr(optimizer, "iterations") or not logs:
            return
        step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        writer = self._writer("validation")
        for name, value in logs.items():
            writer.add_summary(
                _summaries.scalar_summary(f"evaluation_{name}_vs_iterations", value), step
            )

    # ------------------------------------------------------------------ epochs
    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if self.write_steps_per_second:
            self._previous_epoch_iterations = float(
                keras.ops.convert_to_numpy(self.model.optimizer.iterations)
            )
            self._epoch_start_time = time.time()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        """Epoch metrics, then weights (snapshot here, built on a worker), as Keras."""
        self._log_epoch_metrics(epoch, logs)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(epoch)
        if self.embeddings_freq and epoch % self.embeddings_freq == 0:
            self._log_embeddings(epoch)

    def _log_epoch_metrics(self, epoch: int, logs: Any) -> None:
        if not logs:
            return
        train_logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val_logs = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        train_logs.update(self._learning_rates())
        if self.write_steps_per_second:
            iterations = float(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            elapsed = time.time() - self._epoch_start_time
            train_logs["steps_per_second"] = (
                iterations - self._previous_epoch_iterations
            ) / elapsed
        for run, run_logs in (("train", train_logs), ("validation", val_logs)):
            if run_logs:
                writer = self._writer(run)
                for name, value in run_logs.items():
                    writer.add_summary(_summaries.scalar_summary(f"epoch_{name}", value), epoch)

    def _learning_rates(self) -> dict[str, float]:
        """Keras's ``_collect_learning_rate``: one per optimizer, read on this thread."""
        optimizer = self.model.optimizer
        if hasattr(optimizer, "inner_optimizer"):  # a LossScaleOptimizer
            optimizer = optimizer.inner_optimizer
        if hasattr(optimizer, "optimizers"):
            return {
                f"learning_rate_{opt.name}": float(keras.ops.convert_to_numpy(opt.learning_rate))
                for opt in optimizer.optimizers
            }
        if isinstance(optimizer, keras.optimizers.Optimizer):
            return {"learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate))}
        return {}

    def _log_weights(self, epoch: int) -> None:
        snapshot: _Snapshot = []
        size = 0
        for layer in self.model.layers:
            for weight in layer.weights:
                # A copy: a CPU backend's array may share the variable's memory.
                array = np.array(keras.ops.convert_to_numpy(weight), copy=True)
                snapshot.append((weight.path.replace(":", "_"), array))
                size += array.nbytes
        if not snapshot:
            return
        channels_last = keras.backend.image_data_format() == "channels_last"
        build = _weight_summaries(snapshot, self.write_images, channels_last)
        future = build_pool().submit(build)
        self._writer("train")._add_deferred(future, epoch, time.time(), size)

    def _log_embeddings(self, epoch: int) -> None:
        """Keras saves the weights into ``train/``; here into a local temporary file on
        this thread (a snapshot), moved to the log dir in the background."""
        name = f"keras_embedding.ckpt-{epoch}.weights.h5"
        folder = tempfile.mkdtemp(prefix="asyncsummary-keras-")
        local = os.path.join(folder, name)
        self.model.save_weights(local)
        target = self._join(self._run_dir("train"), name)
        options = self._storage_options()
        self._in_background(lambda: _move_file(local, target, options))

    # ------------------------------------------------------------------ helpers
    def _join(self, folder: str, name: str) -> str:
        """``name`` in ``folder`` (a URL or a path; a relative path fixed now, against
        a later ``chdir``)."""
        if is_url(folder):
            return folder.rstrip("/") + "/" + name
        return os.path.join(os.path.abspath(folder), name)

    def _storage_options(self) -> dict[str, Any] | None:
        options = self._writer_options.get("storage_options")
        return dict(options) if options else None

    def _in_background(self, work: Callable[[], None]) -> None:
        future = build_pool().submit(work)
        future.add_done_callback(_report_failure)


def _weight_summaries(
    snapshot: _Snapshot, write_images: bool, channels_last: bool
) -> Callable[[], list[tuple[int, bytes]]]:
    def build() -> list[tuple[int, bytes]]:
        out = []
        for name, array in snapshot:
            out.append((_event.SUMMARY, _summaries.histogram_summary(f"{name}/histogram", array)))
            if write_images:
                image = _summaries.weight_image(array, channels_last)
                if image is not None:
                    out.append((_event.SUMMARY, _summaries.image_summary(f"{name}/image", image)))
        return out

    return build


def _write_beside(path: str, data: bytes, storage_options: dict[str, Any] | None) -> None:
    """Write a side file, making its folder first (the writers make theirs lazily)."""
    folder = path.rsplit("/", 1)[0] if is_url(path) else os.path.dirname(path)
    makedirs(folder, storage_options)
    write_file(path, data, storage_options)


def _move_file(local: str, target: str, storage_options: dict[str, Any] | None) -> None:
    try:
        with open(local, "rb") as f:
            data = f.read()
        _write_beside(target, data, storage_options)
    finally:
        os.unlink(local)
        os.rmdir(os.path.dirname(local))


def _report_failure(future: Any) -> None:
    exc = future.exception()
    if exc is not None:
        _logger.error("a projector file could not be written: %s", exc)


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _update_freq(value: Any) -> int | str:
    if value == "batch":
        return 1
    if value == "epoch":
        return "epoch"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f'update_freq must be "batch", "epoch" or a positive int, got {value!r}')
    return int(value)


def _refuse_profiling(profile_batch: Any) -> None:
    if isinstance(profile_batch, str):
        parts = [p.strip() for p in profile_batch.split(",")]
        profiling = any(p not in ("", "0") for p in parts)
    elif isinstance(profile_batch, (tuple, list)):
        profiling = any(profile_batch)
    else:
        profiling = bool(profile_batch)
    if profiling:
        raise ValueError(
            f"profile_batch={profile_batch!r}: asyncsummary's TensorBoard does not profile. "
            "Run the profiling session with keras.callbacks.TensorBoard(profile_batch=...)."
        )
