"""``SummaryWriter``: ``torch.utils.tensorboard.SummaryWriter``'s API, built off the caller.

What happens on the caller's thread, per call:

1. **Checks** that read shapes and dtypes only (:mod:`._checks`): bad input raises
   torch's exception type at the call, as torch's writer would.
2. **A snapshot** of every array input (:mod:`._snapshot`): a copy of CPU data, or a
   device-to-host copy started on the current CUDA stream. A tensor changed in place
   right after the call is logged as it was at the call.
3. **One enqueue** on the run's :class:`~asyncsummary.AsyncSummaryWriter`, of a future
   that a worker (:mod:`._workers`) resolves by running torch's own builder
   (:mod:`._builders`): binning, colour conversion, PNG/WAV encoding, protos.

A Python number given to ``add_scalar`` skips steps 2 and 3: it is queued as it is,
the cheapest path there is. A CUDA scalar is never read with ``.item()`` on the caller.

Each run (folder) has one ``AsyncSummaryWriter``, as torch has one ``FileWriter``:
the writer's own, one per ``add_scalars`` series (``<logdir>/<main_tag>_<tag>``) and
one per ``add_hparams`` call (``<logdir>/<run_name>``). Per run, events are written in
the order of the calls, however long each build takes.

One-time calls are built at the call, as in torch, since they are small and their
errors are best raised there: ``add_graph`` (torch's tracer), ``add_onnx_graph``,
``add_hparams``, ``add_custom_scalars*``, and matplotlib's rasterisation of a figure
in ``add_figure`` (the figure is the user's object; only the pixels travel on).
"""

from __future__ import annotations

import concurrent.futures
import copy
import os
import socket
import time
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import numpy as np
import torch

from .._loop import run_coroutine
from .._redact import redact_url
from .._storage import is_url
from .._writer import AsyncSummaryWriter, close_leaving_with
from . import _builders, _checks, _histogram, _projector, _snapshot, _workers
from ._builders import Job

__all__ = ["DEFAULT_FLUSH_SECS", "SummaryWriter"]

#: Pending events are written at least this often. torch keeps TensorFlow's 120 s, so a
#: killed job loses up to two minutes of logs and TensorBoard lags as much. Here a flush
#: is one write on the background loop (never on the caller), so the default is the
#: core writer's: at most a couple of seconds lost, and a live view.
DEFAULT_FLUSH_SECS = 2.0

_SIZE_OVERHEAD = 256  # bytes counted per deferred event on top of its snapshots


def _sized(*snapshots: Any) -> int:
    return _SIZE_OVERHEAD + sum(s.nbytes for s in snapshots if isinstance(s, _snapshot.Snapshot))


def _copy_rows(rows: Any) -> Any:
    """A snapshot of labels: a new list, with list rows copied one level deep."""
    if isinstance(rows, (torch.Tensor, np.ndarray)):
        return _snapshot.take(rows)
    return [list(row) if isinstance(row, list) else row for row in rows]


def _take_sequence(value: Any) -> Any:
    """Snapshot an array-like argument that may also be a plain list."""
    if isinstance(value, (list, tuple)):
        return np.array(value)
    return _snapshot.take(value)


def _scalar_of_snapshot(tag: str, value: Any, new_style: bool, double_precision: bool) -> Any:
    return _builders.summary().scalar(tag, value, None, new_style, double_precision)


def _pr_curve(tag: str, labels: Any, predictions: Any, num_thresholds: int, weights: Any) -> Any:
    make_np = _builders.convert_np().make_np
    return _builders.summary().pr_curve(tag, make_np(labels), make_np(predictions), num_thresholds, weights)


def _host_scalar(value: Any) -> float:
    """``float`` of a host value, converted exactly as torch's ``scalar()`` converts it."""
    _checks.check_array_like(value)
    array = _builders.convert_np().make_np(value).squeeze()
    if array.ndim != 0:
        raise AssertionError(
            f"Tensor should contain one element (0 dimensions). Was given size: "
            f"{array.size} and {array.ndim} dimensions."
        )
    return float(array)


class SummaryWriter:
    """Writes TensorBoard event files like ``torch.utils.tensorboard.SummaryWriter``.

    Same constructor, methods, arguments and defaults as torch's writer (torch 2.13),
    and the same data in TensorBoard, but each call only checks its arguments, takes a
    snapshot of its inputs and queues them: summaries are built on a small pool of
    worker threads and written by asyncsummary's background loop.

    Args:
        log_dir: Folder of the run; default ``runs/<date>_<host><comment>``. A URL
            that fsspec knows writes to remote storage (pass ``storage_options``).
        comment: Suffix of the default ``log_dir``; ignored when ``log_dir`` is given.
        purge_step: On restart after a crash at a later step: events of this step
            and after, from the earlier attempt, are hidden by TensorBoard.
        max_queue: Accepted for compatibility; the bound is ``max_pending_bytes``.
        flush_secs: Pending events are written at least this often (default 2 s,
            torch: 120 s; see :data:`DEFAULT_FLUSH_SECS`).
        filename_suffix: Appended to the event file names.
        flush_waits: True (default): ``flush()`` returns once everything is written.
            False: ``flush()`` asks for the writes and returns at once, for frameworks
            that flush after every logged step; errors come back on the next call,
            and ``close()``, exit and ``flush_secs`` bound what a crash loses (see
            :class:`~asyncsummary.AsyncSummaryWriter`). ``close()`` always waits.
        **writer_options: Keyword options of :class:`~asyncsummary.AsyncSummaryWriter`
            (``max_pending_bytes``, ``policy``, ``fsync``, ``close_timeout``,
            ``storage_options``, ...), used for every run this writer opens.

    Errors found on the background side are raised on the next call of this writer
    (an ``add_*``, ``flush()`` or ``close()``) as :class:`~asyncsummary.AsyncSummaryError`
    chained to their cause: a build that failed on values no check could see at the
    call (NaN under ``bins='auto'``) as :class:`~asyncsummary.InvalidEventError`, a
    storage failure as :class:`~asyncsummary.WriteError` (``flush()`` and ``close()``
    raise that one themselves too).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: float = DEFAULT_FLUSH_SECS,
        filename_suffix: str = "",
        *,
        flush_waits: bool = True,
        **writer_options: Any,
    ) -> None:
        _builders.load()
        _histogram.prepare()
        if not isinstance(flush_waits, bool):
            raise TypeError(f"flush_waits must be a bool, got {flush_waits!r}")
        if not log_dir:
            current_time = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", current_time + "_" + socket.gethostname() + comment)
        self.log_dir = log_dir
        self.purge_step = purge_step
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.filename_suffix = filename_suffix
        self.flush_waits = flush_waits
        self._writer_options = writer_options
        self._storage_options: dict[str, Any] | None = writer_options.get("storage_options")
        self._closing: list[concurrent.futures.Future[None]] = []
        self._projector: _projector.ProjectorState | None = None
        self._embedding_dirs: set[str] = set()
        self.file_writer: AsyncSummaryWriter | None = None
        self.all_writers: dict[str, AsyncSummaryWriter] | None = None
        self._get_file_writer()
        self.default_bins = _builders.default_bins()

    # ------------------------------------------------------------------ runs
    def _new_writer(self, logdir: str, filename_suffix: str) -> AsyncSummaryWriter:
        return AsyncSummaryWriter(
            logdir,
            max_queue=self.max_queue,
            flush_secs=self.flush_secs,
            filename_suffix=filename_suffix,
            flush_waits=self.flush_waits,
            **self._writer_options,
        )

    def _get_file_writer(self) -> AsyncSummaryWriter:
        """The run's writer; made again after ``close()``, as torch does."""
        if self.all_writers is None or self.file_writer is None:
            writer = self._new_writer(os.fspath(self.log_dir), self.filename_suffix)
            self.file_writer = writer
            self.all_writers = {writer.get_logdir(): writer}
            if self.purge_step is not None:
                from tensorboard.compat.proto.event_pb2 import Event, SessionLog

                step = int(self.purge_step)
                now = time.time()
                writer.add_event(Event(wall_time=now, step=step, file_version="brain.Event:2"))
                writer.add_event(
                    Event(wall_time=now, step=step, session_log=SessionLog(status=SessionLog.START))
                )
                self.purge_step = None
        return self.file_writer

    def get_logdir(self) -> str | os.PathLike[str]:
        """The directory where event files are written."""
        return self.log_dir

    # ------------------------------------------------------------ enqueueing
    @staticmethod
    def _defer(writer: AsyncSummaryWriter, job: Job, global_step: Any, walltime: Any, size: int) -> None:
        """Queue the event ``job`` builds, in call order, then start building it."""
        future: concurrent.futures.Future[list[tuple[int, bytes]]] = concurrent.futures.Future()
        try:
            writer._add_deferred(future, global_step, walltime, size)
        except BaseException:
            _workers.discard(job)  # hand back staging buffers, off this thread
            raise
        _workers.start(job, future)

    def _scalar(
        self,
        writer: AsyncSummaryWriter,
        tag: str,
        value: Any,
        global_step: Any,
        walltime: Any,
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None:
        kind = type(value)
        if kind is float or kind is int:
            if not new_style:
                writer.add_scalar(tag, value, global_step, walltime)  # no snapshot, no build
                return
            number: Any = float(value)
        elif _snapshot.is_deferred_device(value):
            _checks.check_scalar_shape(value)
            snap = _snapshot.take(value)  # never .item(): the copy is read on a worker
            job = Job(_scalar_of_snapshot, tag, snap, new_style, double_precision)
            self._defer(writer, job, global_step, walltime, _sized(snap))
            return
        else:
            number = _host_scalar(value)
        if not new_style:
            writer.add_scalar(tag, number, global_step, walltime)
            return
        job = Job(_scalar_of_snapshot, tag, number, new_style, double_precision)
        self._defer(writer, job, global_step, walltime, _sized())

    # ------------------------------------------------------------- scalars
    def add_scalar(
        self,
        tag: str,
        scalar_value: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        new_style: bool = False,
        double_precision: bool = False,
    ) -> None:
        """Add one scalar: a Python number, a NumPy scalar, or a one-element tensor.

        A CUDA tensor is copied to the host asynchronously and read on a worker.
        ``new_style=True`` writes a ``tensor`` value with the scalars plugin's metadata
        (float32, or float64 with ``double_precision``) instead of ``simple_value``.
        """
        writer = self.file_writer or self._get_file_writer()
        kind = type(scalar_value)
        if (kind is float or kind is int) and not new_style:  # the common call: one frame less
            writer.add_scalar(tag, scalar_value, global_step, walltime)
            return
        self._scalar(writer, tag, scalar_value, global_step, walltime, new_style, double_precision)

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: dict[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Add several scalars to one chart: each series is a run ``<logdir>/<main_tag>_<tag>``."""
        walltime = time.time() if walltime is None else walltime
        fw_logdir = self._get_file_writer().get_logdir()
        assert self.all_writers is not None
        for tag, scalar_value in tag_scalar_dict.items():
            fw_tag = fw_logdir + "/" + main_tag.replace("/", "_") + "_" + tag
            writer = self.all_writers.get(fw_tag)
            if writer is None:
                writer = self.all_writers[fw_tag] = self._new_writer(fw_tag, self.filename_suffix)
            self._scalar(writer, main_tag, scalar_value, global_step, walltime)

    def add_tensor(self, tag: str, tensor: torch.Tensor, global_step: int | None = None, walltime: float | None = None) -> None:
        """Add a whole tensor (the ``tensor`` plugin), with its dtype and shape."""
        _checks.check_tensor(tag, tensor)
        snap = _snapshot.take(tensor)
        job = Job(_builders.summary().tensor_proto, tag, snap)
        self._defer(self._get_file_writer(), job, global_step, walltime, _sized(snap))

    # ---------------------------------------------------------- histograms
    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: Any = "tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        """Add a histogram of ``values``; binned on a worker, as torch's ``histogram()`` bins.

        ``bins``: ``'tensorflow'`` (TensorFlow's exponential buckets), a NumPy rule
        (``'auto'``, ``'fd'``, ...), a bin count, or bin edges.
        """
        is_default = isinstance(bins, str) and bins == "tensorflow"
        if is_default:
            bins = self.default_bins
        _checks.check_histogram(values, bins, max_bins, is_default)
        if not is_default and not isinstance(bins, (str, int)):
            bins = _take_sequence(bins)
        snap = _snapshot.take(values)
        job = Job(_histogram.histogram, tag, snap, bins, max_bins, is_default)
        self._defer(self._get_file_writer(), job, global_step, walltime, _sized(snap, bins))

    def add_histogram_raw(
        self,
        tag: str,
        min: Any,  # noqa: A002 - torch's argument names
        max: Any,  # noqa: A002
        num: Any,
        sum: Any,  # noqa: A002
        sum_squares: Any,
        bucket_limits: Any,
        bucket_counts: Any,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Add a histogram already binned: ``bucket_limits`` are the right edges."""
        if len(bucket_limits) != len(bucket_counts):
            raise ValueError("len(bucket_limits) != len(bucket_counts), see the document.")
        numbers = {"min": min, "max": max, "num": num, "sum": sum, "sum_squares": sum_squares}
        from tensorboard.compat.proto.summary_pb2 import HistogramProto

        # The proto's own type checks, at the call, on the plain numbers.
        HistogramProto(**{k: v for k, v in numbers.items() if not isinstance(v, torch.Tensor)})
        args = [_snapshot.take(v) if isinstance(v, torch.Tensor) else v for v in numbers.values()]
        limits, counts = _take_sequence(bucket_limits), _take_sequence(bucket_counts)
        job = Job(_builders.summary().histogram_raw, tag, *args, limits, counts)
        self._defer(self._get_file_writer(), job, global_step, walltime, _sized(limits, counts, *args))

    # -------------------------------------------------------------- images
    def _image(self, tag: str, snap: _snapshot.Snapshot, global_step: Any, walltime: Any, dataformats: str) -> None:
        job = Job(_builders.summary().image, tag, snap, 1, dataformats)
        self._defer(self._get_file_writer(), job, global_step, walltime, _sized(snap))

    def add_image(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "CHW",
    ) -> None:
        """Add an image: float in [0, 1] or uint8 in [0, 255]; ``CHW``, ``HWC``, ``HW``, ..."""
        _checks.check_image(img_tensor, dataformats)
        self._image(tag, _snapshot.take(img_tensor), global_step, walltime, dataformats)

    def add_images(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str = "NCHW",
    ) -> None:
        """Add a batch of images, shown as one grid (``NCHW``, ``NHWC``, ...)."""
        _checks.check_image(img_tensor, dataformats)
        self._image(tag, _snapshot.take(img_tensor), global_step, walltime, dataformats)

    def add_image_with_boxes(
        self,
        tag: str,
        img_tensor: Any,
        box_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        rescale: float = 1,
        dataformats: str = "CHW",
        labels: Sequence[str] | str | None = None,
    ) -> None:
        """Add an image with boxes ``[x1, y1, x2, y2]`` drawn on it (and their labels)."""
        if labels is not None:
            if isinstance(labels, str):
                labels = [labels]
            if len(labels) != box_tensor.shape[0]:
                labels = None
        _checks.check_image_boxes(img_tensor, box_tensor, dataformats)
        image, boxes = _snapshot.take(img_tensor), _snapshot.take(box_tensor)
        job = Job(
            _builders.summary().image_boxes, tag, image, boxes, rescale, dataformats,
            None if labels is None else list(labels),
        )
        self._defer(self._get_file_writer(), job, global_step, walltime, _sized(image, boxes))

    def add_figure(
        self,
        tag: str,
        figure: Any,
        global_step: int | None = None,
        close: bool = True,
        walltime: float | None = None,
    ) -> None:
        """Add a matplotlib figure (or a list of them, as a grid).

        The figure is rasterised at the call (it is the caller's object, and matplotlib
        is not thread-safe); the pixels are encoded on a worker.
        """
        pixels = _builders.utils().figure_to_image(figure, close)
        dataformats = "NCHW" if isinstance(figure, list) else "CHW"
        _checks.check_image(pixels, dataformats)
        self._image(tag, _snapshot.HostValue(pixels, pixels.nbytes), global_step, walltime, dataformats)

    def add_video(
        self,
        tag: str,
        vid_tensor: Any,
        global_step: int | None = None,
        fps: float = 4,
        walltime: float | None = None,
    ) -> None:
        """Add a video ``(N, T, C, H, W)`` as an animated GIF (needs ``moviepy``, as torch)."""
        _checks.check_video(vid_tensor)
        snap = _snapshot.take(vid_tensor)
        job = Job(_builders.summary().video, tag, snap, fps)
        self._defer(self._get_file_writer(), job, global_step, walltime, _sized(snap))

    # ------------------------------------------------------- audio and text
    def add_audio(
        self,
        tag: str,
        snd_tensor: Any,
        global_step: int | None = None,
        sample_rate: int = 44100,
        walltime: float | None = None,
    ) -> None:
        """Add mono audio in [-1, 1] (shape ``(1, L)`` or ``(L,)``), encoded as WAV on a worker."""
        _checks.check_audio(snd_tensor)
        snap = _snapshot.take(snd_tensor)
        job = Job(_builders.summary().audio, tag, snap, sample_rate)
        self._defer(self._get_file_writer(), job, global_step, walltime, _sized(snap))

    def add_text(self, tag: str, text_string: str, global_step: int | None = None, walltime: float | None = None) -> None:
        """Add a text (Markdown) string."""
        tag + "/text_summary"  # noqa: B018 - torch's TypeError for a tag that is not a str
        encoded = text_string.encode("utf_8")  # torch's AttributeError / UnicodeEncodeError
        job = Job(_builders.summary().text, tag, text_string)
        self._defer(self._get_file_writer(), job, global_step, walltime, _SIZE_OVERHEAD + len(encoded))

    # ------------------------------------------------------------- graphs
    def add_graph(
        self,
        model: torch.nn.Module,
        input_to_model: Any = None,
        verbose: bool = False,
        use_strict_trace: bool = True,
    ) -> None:
        """Add the model's graph, traced at the call by torch's own graph builder."""
        graph_def, step_stats = _builders.load_module("_pytorch_graph").graph(
            model, input_to_model, verbose, use_strict_trace
        )
        from tensorboard.compat.proto.event_pb2 import Event, TaggedRunMetadata

        writer = self._get_file_writer()
        now = time.time()
        writer.add_event(Event(wall_time=now, graph_def=graph_def.SerializeToString()))
        metadata = TaggedRunMetadata(tag="step1", run_metadata=step_stats.SerializeToString())
        writer.add_event(Event(wall_time=now, tagged_run_metadata=metadata))

    def add_onnx_graph(self, prototxt: str) -> None:
        """Add the graph of an ONNX model file (needs ``onnx``, as torch)."""
        graph_def = _builders.load_module("_onnx_graph").load_onnx_graph(prototxt)
        from tensorboard.compat.proto.event_pb2 import Event

        self._get_file_writer().add_event(Event(wall_time=time.time(), graph_def=graph_def.SerializeToString()))

    # ---------------------------------------------------------- embeddings
    @staticmethod
    def _encode(rawstr: str) -> str:
        """A tag as a folder name: ``%``, ``/`` and ``\\`` percent-encoded, as torch does."""
        return rawstr.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")

    def add_embedding(
        self,
        mat: Any,
        metadata: Any = None,
        label_img: torch.Tensor | None = None,
        global_step: int | None = None,
        tag: str = "default",
        metadata_header: Sequence[Any] | None = None,
    ) -> None:
        """Add points ``(N, D)`` for the embedding projector, with labels and images.

        The files are written on a worker; ``flush()`` returns once they are written.
        """
        _checks.check_embedding(mat, metadata, label_img, metadata_header)
        if global_step is None:
            global_step = 0
        subdir = f"{str(global_step).zfill(5)}/{self._encode(tag)}"
        writer = self._get_file_writer()
        logdir = writer.get_logdir()
        save_path = os.path.join(logdir, subdir)
        local = not is_url(save_path)
        if local and os.path.exists(save_path) and not os.path.isdir(save_path):
            raise NotADirectoryError(f"Path: `{save_path}` exists, but is a file. Cannot proceed.")
        if save_path in self._embedding_dirs or (local and os.path.isdir(save_path)):
            print("warning: Embedding dir exists, did you set global_step for add_embedding()?")
        self._embedding_dirs.add(save_path)
        sprite_dim = None if label_img is None else [label_img.size(3), label_img.size(2)]
        if self._projector is None:
            self._projector = _projector.ProjectorState()
        state = self._projector
        state.saw_logdir(logdir)  # so that even the first job never brings a removed logdir back
        state.config.embeddings.extend(
            [_projector.embedding_info(tag, global_step, subdir, metadata is not None, sprite_dim)]
        )
        state.version += 1
        from google.protobuf import text_format

        matrix = _snapshot.take(mat)
        images = None if label_img is None else _snapshot.take(label_img)
        job = Job(
            _projector.write_embedding, save_path, matrix,
            None if metadata is None else _copy_rows(metadata),
            None if metadata_header is None else list(metadata_header),
            images, state, logdir, state.version, text_format.MessageToString(state.config),
            self._storage_options,
        )
        self._defer(writer, job, global_step, None, _sized(matrix, images))

    # ----------------------------------------------------------- PR curves
    def add_pr_curve(
        self,
        tag: str,
        labels: Any,
        predictions: Any,
        global_step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        """Add a precision-recall curve of binary ``labels`` and ``predictions`` in [0, 1]."""
        _checks.check_pr_curve(labels, predictions, num_thresholds, weights)
        label_snap, prediction_snap = _snapshot.take(labels), _snapshot.take(predictions)
        weight_snap = weights if weights is None or np.isscalar(weights) else _take_sequence(weights)
        job = Job(_pr_curve, tag, label_snap, prediction_snap, num_thresholds, weight_snap)
        size = _sized(label_snap, prediction_snap, weight_snap)
        self._defer(self._get_file_writer(), job, global_step, walltime, size)

    def add_pr_curve_raw(
        self,
        tag: str,
        true_positive_counts: Any,
        false_positive_counts: Any,
        true_negative_counts: Any,
        false_negative_counts: Any,
        precision: Any,
        recall: Any,
        global_step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        """Add a precision-recall curve from its counts, precision and recall per threshold."""
        arrays = (
            true_positive_counts, false_positive_counts, true_negative_counts,
            false_negative_counts, precision, recall,
        )
        _checks.check_pr_curve_raw(arrays)
        snaps = [_take_sequence(a) for a in arrays]
        job = Job(_builders.summary().pr_curve_raw, tag, *snaps, num_thresholds, weights)
        self._defer(self._get_file_writer(), job, global_step, walltime, _sized(*snaps))

    # ------------------------------------------------------ custom scalars
    def add_custom_scalars_multilinechart(self, tags: list[str], category: str = "default", title: str = "untitled") -> None:
        """A chart of several scalar tags on one plot."""
        self.add_custom_scalars({category: {title: ["Multiline", tags]}})

    def add_custom_scalars_marginchart(self, tags: list[str], category: str = "default", title: str = "untitled") -> None:
        """A chart of a value with its lower and upper margins: exactly three tags."""
        if len(tags) != 3:
            raise AssertionError(f"Expected 3 tags, got {len(tags)}.")
        self.add_custom_scalars({category: {title: ["Margin", tags]}})

    def add_custom_scalars(self, layout: dict[str, dict[str, list[Any]]]) -> None:
        """The custom-scalars layout: ``{category: {chart: ['Multiline'|'Margin', tags]}}``."""
        self._get_file_writer().add_summary(_builders.summary().custom_scalars(layout))

    # ----------------------------------------------------------------- mesh
    def add_mesh(
        self,
        tag: str,
        vertices: Any,
        colors: Any = None,
        faces: Any = None,
        config_dict: dict[str, Any] | None = None,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Add a mesh or point cloud: ``vertices``, ``colors``, ``faces`` of shape ``(B, N, 3)``."""
        _checks.check_mesh((vertices, colors, faces), config_dict)
        snaps = [
            None if t is None else _snapshot.take(t if isinstance(t, (torch.Tensor, np.ndarray)) else torch.as_tensor(t))
            for t in (vertices, colors, faces)
        ]
        job = Job(_builders.summary().mesh, tag, *snaps, copy.deepcopy(config_dict))
        self._defer(self._get_file_writer(), job, global_step, walltime, _sized(*snaps))

    # -------------------------------------------------------------- hparams
    def add_hparams(
        self,
        hparam_dict: dict[str, Any],
        metric_dict: dict[str, Any],
        hparam_domain_discrete: dict[str, list[Any]] | None = None,
        run_name: str | None = None,
        global_step: int | None = None,
    ) -> None:
        """Add hyperparameters and their metrics, in a run ``<logdir>/<run_name>``.

        As in torch, each call writes a new run (named after the time by default),
        which is closed in the background; ``flush()`` and ``close()`` wait for it.
        """
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionary.")
        exp, ssi, sei = _builders.summary().hparams(hparam_dict, metric_dict, hparam_domain_discrete)
        if not run_name:
            run_name = str(time.time())
        logdir = os.path.join(self._get_file_writer().get_logdir(), run_name)
        writer = self._new_writer(logdir, "")
        try:
            for summary in (exp, ssi, sei):
                writer.add_summary(summary, global_step)
            for key, value in metric_dict.items():
                self._scalar(writer, key, value, global_step, None)
        finally:
            self._closing.append(run_coroutine(writer.aclose()))

    # ------------------------------------------------------ flush and close
    def _close_bound(self) -> float:
        return float(self._writer_options.get("close_timeout", 30.0)) + 5.0

    def _settle_closing(self, errors: list[BaseException], wait: bool = True) -> None:
        closing, self._closing = self._closing, []
        if not wait:  # only report the ones already closed; keep the others
            self._closing = [future for future in closing if not future.done()]
            closing = [future for future in closing if future.done()]
        for future in closing:
            try:
                future.result(self._close_bound())
            except BaseException as exc:  # noqa: BLE001 - reported after the others
                errors.append(exc)

    def flush(self) -> None:
        """Return once everything added so far is written (summaries built, files written).

        With ``flush_waits=False``: ask every run for its writes and return at once,
        raising only errors already stored.
        """
        errors: list[BaseException] = []
        for writer in list((self.all_writers or {}).values()):
            try:
                writer.flush()
            except BaseException as exc:  # noqa: BLE001 - flush the others first
                errors.append(exc)
        self._settle_closing(errors, wait=self.flush_waits)
        _raise_first(errors)

    def close(self) -> None:
        """Flush and close every run of this writer. Idempotent; bounded in time."""
        errors: list[BaseException] = []
        writers = list((self.all_writers or {}).values())
        self.file_writer = self.all_writers = None
        for writer in writers:
            try:
                writer.close()
            except BaseException as exc:  # noqa: BLE001 - close the others first
                errors.append(exc)
        self._settle_closing(errors)
        _raise_first(errors)

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        close_leaving_with(self.close, exc_val)

    def __repr__(self) -> str:
        state = "closed" if self.all_writers is None else "open"
        return f"<asyncsummary.SummaryWriter {redact_url(os.fspath(self.log_dir))!r} {state}>"


def _raise_first(errors: list[BaseException]) -> None:
    """Raise the first error of several runs (the others are in each run's stats())."""
    if errors:
        raise errors[0]

