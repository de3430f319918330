"""Step time of a small TF1 training loop under each summary hook, side by side.

The graph: a 64x32 @ 32x16 matmul, a mean-square loss, SGD, and 8 scalar + 2
histogram summaries merged into one summary op; the train op depends on the hook's
global-step read (so ``exact_step=False`` is exact). Each variant runs it under its
own ``MonitoredSession``:

* ``no hook``: the bare step.
* ``floor: fetch``: a hook that fetches what TF's hook fetches (the global step every
  step, the summaries on save steps, with TF's own timer) and writes nothing. The
  floor of any hook that saves summaries; ``exact_step=False`` is judged against it.
* ``floor: fetch+read (session.run)``: plus the exact global-step read TF's hook makes
  after each save step, ``session.run(global_step)``.
* ``floor: fetch+read (callable)``: plus the same read through a callable made once
  per session, which is how ``AsyncSummarySaverHook`` reads it; its exact mode is
  judged against this floor.
* ``TF SummarySaverHook``: TensorFlow's hook with a ``tf.compat.v1.summary.FileWriter``.
* ``async exact``/``async exact_step=False``: ``AsyncSummarySaverHook`` with an
  ``AsyncSummaryWriter``, in both step modes.

All sessions are open at once; each round runs every variant for a block of steps in
a rotated order, and the rounds repeat, so the machine's noise spreads over all of
them alike. After each block the variant's writer is flushed, untimed, so that what
it still has to write never slows the next variant's block. Each ``session.run`` is timed on its own; reported are p50, p99 and mean
over every timed step, the per-round p50s (the spread), and the *added* time: a
variant's p50 (p99) minus the no-hook p50 (p99).

``slow_storage`` reuses :func:`compare` with writers whose storage is slowed down.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import command_line, quiet_tensorflow, ratio, summarize, temp_logdir

__all__ = ["VARIANTS", "compare", "main", "run"]

VARIANTS = (
    "no hook",
    "floor: fetch",
    "floor: fetch+read (session.run)",
    "floor: fetch+read (callable)",
    "TF SummarySaverHook",
    "async exact",
    "async exact_step=False",
)
#: The floor each writing variant is judged against.
FLOOR_OF = {
    "TF SummarySaverHook": "floor: fetch+read (session.run)",
    "async exact": "floor: fetch+read (callable)",
    "async exact_step=False": "floor: fetch",
}

#: Makes the writer a hook uses, given its logdir.
WriterFactory = Callable[[str], Any]


def _tf() -> Any:
    quiet_tensorflow()
    import tensorflow as tf

    return tf


def _floor_hook_class() -> type:
    """A hook that fetches and times like TF's SummarySaverHook and writes nothing."""
    tf = _tf()
    from tensorflow.python.training import training_util

    class FloorHook(tf.compat.v1.train.SessionRunHook):  # type: ignore[misc,name-defined]
        def __init__(self, save_steps: int, summary_op: Any, read: str | None) -> None:
            self._timer = tf.compat.v1.train.SecondOrStepTimer(every_steps=save_steps)
            self._summary_op = summary_op
            self._read = read  # None, "session.run" or "callable"
            self._next_step: int | None = None
            self._request = False
            self._callable: Any = None

        def begin(self) -> None:
            self._step_tensor = training_util._get_or_create_global_step_read()
            self._step_only = tf.compat.v1.train.SessionRunArgs({"global_step": self._step_tensor})
            self._with_summary = tf.compat.v1.train.SessionRunArgs(
                {"global_step": self._step_tensor, "summary": [self._summary_op]}
            )

        def after_create_session(self, session: Any, coord: Any) -> None:
            if self._read == "callable":
                self._callable = session.make_callable(self._step_tensor)

        def before_run(self, run_context: Any) -> Any:
            self._request = self._next_step is None or self._timer.should_trigger_for_step(self._next_step)
            return self._with_summary if self._request else self._step_only

        def after_run(self, run_context: Any, run_values: Any) -> None:
            step = int(run_values.results["global_step"]) + 1
            if self._read is not None and (self._next_step is None or self._request):
                if self._callable is not None:
                    step = int(self._callable())
                else:
                    step = int(run_context.session.run(self._step_tensor))
            if self._request:
                self._timer.update_last_triggered_step(step)
            self._next_step = step + 1

    return FloorHook


def tf_file_writer(logdir: str) -> Any:
    """TF's own ``FileWriter`` with its defaults (made in graph mode, as it requires)."""
    tf = _tf()
    with tf.Graph().as_default():
        return tf.compat.v1.summary.FileWriter(logdir)


def async_writer(logdir: str) -> Any:
    """An ``AsyncSummaryWriter`` with its defaults."""
    from asyncsummary import AsyncSummaryWriter

    return AsyncSummaryWriter(logdir)


class _Session:
    """One variant: its own graph, hook, writer and MonitoredSession."""

    def __init__(
        self, variant: str, save_steps: int, logdir: str, tf_writer: WriterFactory, our_writer: WriterFactory
    ) -> None:
        tf = _tf()
        from asyncsummary import AsyncSummarySaverHook

        self.variant = variant
        self.writer: Any = None
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.set_random_seed(0)
            global_step = tf.compat.v1.train.get_or_create_global_step()
            x = tf.random.normal([64, 32])
            w = tf.compat.v1.get_variable("w", [32, 16])
            y = tf.matmul(x, w)
            loss = tf.reduce_mean(tf.square(y))
            for i in range(8):
                tf.compat.v1.summary.scalar(f"scalar_{i}", loss * float(i + 1))
            tf.compat.v1.summary.histogram("activations", y)
            tf.compat.v1.summary.histogram("weights", w)
            summary_op = tf.compat.v1.summary.merge_all()
            with tf.control_dependencies([AsyncSummarySaverHook.global_step_read()]):
                self.train_op = tf.compat.v1.train.GradientDescentOptimizer(0.01).minimize(
                    loss, global_step=global_step
                )
            hooks: list[Any] = []
            floor = _floor_hook_class()
            if variant == "floor: fetch":
                hooks.append(floor(save_steps, summary_op, None))
            elif variant == "floor: fetch+read (session.run)":
                hooks.append(floor(save_steps, summary_op, "session.run"))
            elif variant == "floor: fetch+read (callable)":
                hooks.append(floor(save_steps, summary_op, "callable"))
            elif variant == "TF SummarySaverHook":
                self.writer = tf_writer(logdir)
                hooks.append(
                    tf.compat.v1.train.SummarySaverHook(
                        save_steps=save_steps, summary_writer=self.writer, summary_op=summary_op
                    )
                )
            elif variant.startswith("async"):
                self.writer = our_writer(logdir)
                hooks.append(
                    AsyncSummarySaverHook(
                        save_steps=save_steps,
                        summary_writer=self.writer,
                        summary_op=summary_op,
                        exact_step=variant == "async exact",
                    )
                )
            elif variant != "no hook":
                raise ValueError(f"unknown variant {variant!r}")
            self.session = tf.compat.v1.train.MonitoredSession(
                session_creator=tf.compat.v1.train.ChiefSessionCreator(), hooks=hooks
            )
        self.run = self.session.run

    def steps(self, n: int, out: list[float]) -> None:
        """Run ``n`` steps, appending each one's time in µs to ``out``."""
        run, train_op, clock = self.run, self.train_op, time.perf_counter_ns
        for _ in range(n):
            start = clock()
            run(train_op)
            out.append((clock() - start) / 1000)

    def settle(self) -> None:
        """Let the writer finish the block's events (untimed), so that its leftover
        background work never lands in the next variant's block."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        try:
            self.session.close()  # runs the hooks' end(): a flush
        finally:
            if self.writer is not None:
                self.writer.close()


@contextlib.contextmanager
def _sessions(
    variants: tuple[str, ...], save_steps: int, tf_writer: WriterFactory, our_writer: WriterFactory, parent: str | None
) -> Iterator[list[_Session]]:
    with contextlib.ExitStack() as stack:
        sessions = []
        for variant in variants:
            logdir = stack.enter_context(temp_logdir("asb-hook-", parent))
            session = _Session(variant, save_steps, logdir, tf_writer, our_writer)
            stack.callback(session.close)
            sessions.append(session)
        yield sessions


def compare(
    save_steps: int,
    steps: int,
    rounds: int,
    *,
    variants: tuple[str, ...] = VARIANTS,
    tf_writer: WriterFactory = tf_file_writer,
    our_writer: WriterFactory = async_writer,
    warmup: int = 20,
    parent: str | None = None,
) -> dict[str, Any]:
    """Step times of ``variants``: ``rounds`` interleaved blocks of ``steps`` steps each."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    round_p50: dict[str, list[float]] = {v: [] for v in variants}
    with _sessions(variants, save_steps, tf_writer, our_writer, parent) as sessions:
        for session in sessions:
            session.steps(warmup, [])
        gc.collect()
        gc.disable()  # a collection in one variant's block and not another's is noise
        try:
            for r in range(rounds):
                shift = r % len(sessions)
                for session in sessions[shift:] + sessions[:shift]:
                    block: list[float] = []
                    session.steps(steps, block)
                    session.settle()
                    times[session.variant].extend(block)
                    round_p50[session.variant].append(summarize(block)["p50"])
        finally:
            gc.enable()
    result: dict[str, Any] = {"save_steps": save_steps, "steps": steps, "rounds": rounds, "variants": {}}
    base = summarize(times["no hook"]) if "no hook" in times else None
    for variant in variants:
        stats: dict[str, Any] = summarize(times[variant])
        stats["round_p50"] = round_p50[variant]
        if base is not None:
            stats["added_p50"] = stats["p50"] - base["p50"]
            stats["added_p99"] = stats["p99"] - base["p99"]
            stats["added_mean"] = stats["mean"] - base["mean"]
        result["variants"][variant] = stats
        result.setdefault("samples", {})[variant] = times[variant]
    for variant, floor in FLOOR_OF.items():
        if variant in result["variants"] and floor in result["variants"] and base is not None:
            mine, ref = result["variants"][variant], result["variants"][floor]
            mine["floor"] = floor
            # Added time relative to the floor's added time: 1.10 = 10 % over the floor.
            mine["vs_floor_added_p50"] = ratio(mine["added_p50"], ref["added_p50"])
            mine["vs_floor_added_p99"] = ratio(mine["added_p99"], ref["added_p99"])
            # Whole step time relative to the floor's step time.
            mine["vs_floor_step_p50"] = ratio(mine["p50"], ref["p50"])
            mine["vs_floor_step_p99"] = ratio(mine["p99"], ref["p99"])
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """Both save_steps settings, every variant."""
    steps, rounds = (30, 1) if quick else (200, 4)
    return {f"save_steps={n}": compare(n, steps, rounds, warmup=5 if quick else 20) for n in (1, 100)}


def table(result: dict[str, Any]) -> list[str]:
    lines = []
    for key, part in result.items():
        lines.append(f"hook overhead, {key} ({part['rounds']} rounds x {part['steps']} steps), µs per step:")
        lines.append(
            f"  {'variant':<34}{'p50':>8}{'p99':>9}{'mean':>9}{'+p50':>8}{'+p99':>9}  vs floor (+p50, +p99)"
        )
        for name, v in part["variants"].items():
            versus = ""
            if "floor" in v:
                versus = f"  {v['vs_floor_added_p50']:.2f}x, {v['vs_floor_added_p99']:.2f}x of {v['floor']}"
            lines.append(
                f"  {name:<34}{v['p50']:>8.0f}{v['p99']:>9.0f}{v['mean']:>9.0f}"
                f"{v.get('added_p50', 0):>8.0f}{v.get('added_p99', 0):>9.0f}{versus}"
            )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return command_line(__doc__ or "", run, table, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
