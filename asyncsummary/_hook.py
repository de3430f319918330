"""``AsyncSummarySaverHook``: ``tf.compat.v1.train.SummarySaverHook`` on an async writer.

The only module of the package that imports TensorFlow; ``asyncsummary`` loads it on
first access to ``AsyncSummarySaverHook`` or ``SummaryWriterCache``.

What stays on the training thread, per summary step: the fetch of the summary tensors
(inside the training ``session.run``, as with TF's hook), by default one extra read of
the global step after the run (as TF's hook does, for the exact step; here through a
callable made once per session: about 25 us instead of 200 us on an idle machine here),
and one ``add_summary(bytes, step)`` per summary tensor: the serialized bytes the
session returned are queued as they are. TF's hook parses every one of them into a ``Summary``
proto first; here nothing is parsed on the training thread, and the writer frames and
writes on its background loop, so slow storage never stalls a step.

Contract, the same as TF's hook (``basic_session_run_hooks.SummarySaverHook``):

* ``ValueError`` unless exactly one of ``scaffold``/``summary_op`` is given, and
  unless exactly one of ``save_steps``/``save_secs`` is (TF's ``SecondOrStepTimer``,
  which this hook uses: the first step always saves, a step never saves twice; see
  ``exact_step`` for the one way around that).
* ``RuntimeError`` from ``begin()`` when the graph has no global step.
* ``SessionLog(START)`` at the step of the first run; summaries at the global step
  after the run; ``end()`` flushes and returns when the data is written, and never
  closes the writer (it may be shared).

One deliberate difference: ``after_create_session`` starts the hook afresh, as if
nothing had been written yet. MonitoredSession calls it once per session it creates,
so in an ordinary run this changes nothing; when a session is *re*-created after an
``AbortedError``/``UnavailableError`` (the global step may have gone back to the last
checkpoint), the hook writes a new ``SessionLog(START)`` at the restored step, which
is TensorBoard's sign to drop the abandoned steps, and saves on the first step of the
new session. TF's hook carries its timer over and saves nothing until the restored
step passes the old trigger step.
"""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any, Protocol

import tensorflow as tf
from tensorflow.python.training import training_util

from ._storage import is_url
from ._writer import AsyncSummaryWriter

__all__ = ["AsyncSummarySaverHook", "FileWriterLike", "SummaryWriterCache"]

#: Options ``**options`` may hold: the keyword arguments of ``AsyncSummaryWriter``.
_WRITER_OPTIONS = frozenset(inspect.signature(AsyncSummaryWriter).parameters) - {"logdir"}


class FileWriterLike(Protocol):
    """What the hook needs of a writer (``AsyncSummaryWriter`` and TF's ``FileWriter`` fit)."""

    def add_summary(self, summary: Any, global_step: Any = None) -> None: ...

    def add_session_log(self, session_log: Any, global_step: Any = None) -> None: ...

    def flush(self) -> None: ...


def _cache_key(logdir: str | os.PathLike[str]) -> str:
    """One key per folder: local paths made absolute, URLs (``s3://``, ``a::b://``) kept."""
    path = os.fspath(logdir)
    return path if is_url(path) else os.path.abspath(path)


class SummaryWriterCache:
    """One shared ``AsyncSummaryWriter`` per logdir, like ``tf.compat.v1.summary.FileWriterCache``.

    Hooks given an ``output_dir`` take their writer from here, so hooks (and any other
    code) writing to one folder share one writer, hence one event file, as with TF.
    """

    _lock = threading.RLock()
    _cache: dict[str, tuple[AsyncSummaryWriter, dict[str, Any]]] = {}

    @staticmethod
    def get(logdir: str | os.PathLike[str], **options: Any) -> AsyncSummaryWriter:
        """The writer for ``logdir``, made on first use.

        ``options`` are keyword arguments of :class:`AsyncSummaryWriter`; like TF's cache,
        a new writer gets ``graph=tf.compat.v1.get_default_graph()`` unless ``options``
        name a ``graph`` or ``graph_def``. They apply when the writer is made: asking
        again with different (non-empty) options raises ``ValueError``, since a folder
        has one writer. A writer closed since is reopened (into a new event file).
        """
        unknown = set(options) - _WRITER_OPTIONS
        if unknown:
            raise TypeError(f"unknown AsyncSummaryWriter options: {', '.join(sorted(unknown))}")
        key = _cache_key(logdir)
        with SummaryWriterCache._lock:
            entry = SummaryWriterCache._cache.get(key)
            if entry is not None:
                writer, made_with = entry
                if options and options != made_with:
                    raise ValueError(
                        f"the cached writer for {key!r} was made with options {made_with!r}; "
                        f"cannot give it {options!r}"
                    )
                if writer.closed:
                    writer.reopen()
                return writer
            kwargs = dict(options)
            if "graph" not in kwargs and "graph_def" not in kwargs:
                kwargs["graph"] = tf.compat.v1.get_default_graph()
            writer = AsyncSummaryWriter(logdir, **kwargs)
            SummaryWriterCache._cache[key] = (writer, dict(options))
            return writer

    @staticmethod
    def clear() -> None:
        """Close every cached writer and forget them; raise the first close error, if any."""
        with SummaryWriterCache._lock:
            entries = list(SummaryWriterCache._cache.values())
            SummaryWriterCache._cache = {}
        first: BaseException | None = None
        for writer, _ in entries:
            try:
                writer.close()
            except Exception as exc:  # noqa: BLE001 - every writer gets closed
                first = first or exc
        if first is not None:
            raise first


class AsyncSummarySaverHook(tf.compat.v1.train.SessionRunHook):
    """Saves summaries every N steps or seconds, without waiting for the storage.

    A drop-in for ``tf.compat.v1.train.SummarySaverHook`` (same arguments, errors and
    events); the summaries go to an :class:`AsyncSummaryWriter`, or to any writer with
    ``add_summary``/``add_session_log``/``flush`` (TF's ``FileWriter`` too).

    Args:
        save_steps: Save every N steps. Exactly one of ``save_steps``, ``save_secs``.
        save_secs: Save every N seconds.
        output_dir: Folder (or URL) of the writer taken from :class:`SummaryWriterCache`;
            only used without ``summary_writer``. With neither, the hook does nothing.
        summary_writer: The writer to use.
        scaffold: A ``Scaffold`` whose ``summary_op`` is saved (read once the session
            exists, after ``Scaffold.finalize``). Exactly one of ``scaffold``, ``summary_op``.
        summary_op: A string ``Tensor`` of serialized ``Summary`` protos (e.g.
            ``tf.compat.v1.summary.merge_all()``), or a list of them.
        exact_step: ``True`` (default, as TF): on each save, one extra
            ``session.run(global_step)`` after the training run reads the step the
            summaries are written at. ``False`` skips that run and writes at the global
            step fetched *in* the training run plus one. That is the same step exactly
            when (1) each training run adds exactly 1 to the global step
            (``optimizer.minimize(loss, global_step=...)`` does) and nothing else
            changes it meanwhile (no other worker, no other run), and (2) the fetch
            reads the value from before the increment. TensorFlow orders the two only
            if the train op depends on the tensor the hook fetches, which
            :meth:`global_step_read` returns: build the train op under
            ``tf.control_dependencies([AsyncSummarySaverHook.global_step_read()])``
            (``tf.estimator`` graphs already are). Without it the read and the
            increment race: a read that lands after the increment writes the summary
            one step too high, so two saves can share a step (this happened in 40 of
            300 steps of a small model here). With it, the events are identical to
            those of ``exact_step=True``. (Between saves, this hook and TF's alike
            time the next ``save_steps`` save by that same fetched step plus one.)
        **options: Keyword arguments of :class:`AsyncSummaryWriter` (``flush_secs``,
            ``max_pending_bytes``, ``fsync``, ``sink_factory``, ...) for the writer made
            for ``output_dir``.

    Raises:
        ValueError: Not exactly one of ``scaffold``/``summary_op``, or of
            ``save_steps``/``save_secs``; ``options`` without ``output_dir`` or with
            ``summary_writer``.
        TypeError: An option that ``AsyncSummaryWriter`` does not take.
    """

    def __init__(
        self,
        save_steps: int | None = None,
        save_secs: float | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        summary_writer: FileWriterLike | None = None,
        scaffold: Any = None,
        summary_op: Any = None,
        *,
        exact_step: bool = True,
        **options: Any,
    ) -> None:
        if (scaffold is None) == (summary_op is None):
            raise ValueError("Exactly one of scaffold or summary_op must be provided.")
        self._timer = tf.compat.v1.train.SecondOrStepTimer(
            every_secs=save_secs, every_steps=save_steps
        )
        unknown = set(options) - _WRITER_OPTIONS
        if unknown:
            raise TypeError(f"unknown AsyncSummaryWriter options: {', '.join(sorted(unknown))}")
        if options and (summary_writer is not None or not output_dir):
            raise ValueError(
                "writer options apply to the writer made for output_dir; "
                "pass output_dir and no summary_writer, or configure your writer yourself"
            )
        self._summary_op = summary_op
        self._scaffold = scaffold
        self._summary_writer = summary_writer
        self._output_dir = output_dir
        self._options = options
        self._exact_step = bool(exact_step)
        self._start_log = tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.START)
        self._global_step_tensor: Any = None
        self._next_step: int | None = None
        self._request_summary = False
        self._step_only: Any = None  # SessionRunArgs of a step without a save
        self._with_summary: Any = None  # SessionRunArgs of a step with a save
        self._step_session: Any = None  # the session that _read_step reads from
        self._read_step: Any = None  # callable: the exact global step read

    @staticmethod
    def global_step_read(graph: Any = None) -> Any:
        """The global-step tensor the hook fetches (made if missing), as TF's hooks do.

        Build the train op under a control dependency on it to make
        ``exact_step=False`` exact (see the class docstring). None without a global step.
        """
        return training_util._get_or_create_global_step_read(graph)

    # ------------------------------------------------------------ SessionRunHook
    def begin(self) -> None:
        if self._summary_writer is None and self._output_dir:
            self._summary_writer = SummaryWriterCache.get(self._output_dir, **self._options)
        self._next_step = None
        self._step_only = self._with_summary = None
        self._global_step_tensor = self.global_step_read()
        if self._global_step_tensor is None:
            raise RuntimeError("Global step should be created to use AsyncSummarySaverHook.")

    def after_create_session(self, session: Any, coord: Any) -> None:
        # The scaffold is finalized by now: resolve the fetches once, not on every step.
        self._resolve_fetches()
        # The exact step read is the same fetch TF's hook makes with session.run, through
        # a callable made once: about 25 us a read instead of 200 us here.
        self._step_session, self._read_step = session, None
        if self._exact_step and self._summary_writer is not None:
            make_callable = getattr(session, "make_callable", None)
            if make_callable is not None:
                self._read_step = make_callable(self._global_step_tensor)
        # A (re-)created session starts a new stretch of the run: START and save first.
        self._next_step = None

    def before_run(self, run_context: Any) -> Any:
        if self._summary_writer is None:
            return None
        if self._step_only is None:
            self._resolve_fetches()
        self._request_summary = request = (
            self._next_step is None or self._timer.should_trigger_for_step(self._next_step)
        )
        return self._with_summary if request else self._step_only

    def after_run(self, run_context: Any, run_values: Any) -> None:
        writer = self._summary_writer
        if writer is None:
            return
        results = run_values.results
        first = self._next_step is None
        if self._exact_step and (first or self._request_summary):
            session = run_context.session
            if self._read_step is not None and session is self._step_session:
                global_step = int(self._read_step())
            else:
                global_step = int(session.run(self._global_step_tensor))
        else:
            global_step = int(results["global_step"]) + 1
        if first:
            writer.add_session_log(self._start_log, global_step)
        if self._request_summary:
            self._timer.update_last_triggered_step(global_step)
            summaries = results.get("summary")
            if summaries is not None:
                add_summary = writer.add_summary
                for summary in summaries:  # serialized Summary bytes, passed on unparsed
                    add_summary(summary, global_step)
        self._next_step = global_step + 1

    def end(self, session: Any = None) -> None:
        """Return once every summary of the run is written; the writer stays open.

        An ``AsyncSummaryWriter`` raises its ``WriteError`` here if the storage failed,
        or ``FlushTimeoutError`` after its ``flush_timeout`` (60 s by default) if the
        storage is still stalled, where TF's writer would wait for ever.
        """
        if self._summary_writer is not None:
            self._summary_writer.flush()

    # ------------------------------------------------------------------ helpers
    def _summary_fetches(self) -> list[Any] | None:
        summary_op = self._summary_op if self._summary_op is not None else self._scaffold.summary_op
        if summary_op is None:
            return None
        return summary_op if isinstance(summary_op, list) else [summary_op]

    def _resolve_fetches(self) -> None:
        step = {"global_step": self._global_step_tensor}
        summaries = self._summary_fetches()
        self._step_only = tf.compat.v1.train.SessionRunArgs(step)
        self._with_summary = (
            self._step_only
            if summaries is None
            else tf.compat.v1.train.SessionRunArgs({**step, "summary": summaries})
        )
