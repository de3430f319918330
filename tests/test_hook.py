"""AsyncSummarySaverHook keeps TF's SummarySaverHook contract without waiting for storage.

Parity tests train the same seeded model twice, once with TF's hook and once with
ours, and compare everything both wrote, read back with TensorBoard's loader.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.compat.proto import graph_pb2
from tensorflow.python.training import basic_session_run_hooks

from asyncsummary import AsyncSummarySaverHook, AsyncSummaryWriter, FileSink, SummaryWriterCache
from asyncsummary.testing import DelayedSink, GatedSink

from .readers import accumulator, event_files, tb_run_events

pytestmark = pytest.mark.tf

v1 = tf.compat.v1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALAR_TAGS = {"loss", "mae", "w_0", "w_1", "w_2", "w_3", "bias", "grad_norm"}
HISTOGRAM_TAGS = {"weights", "residuals"}
# One thread each: the same seeded model computes the same values in both runs.
CONFIG = v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)


@pytest.fixture(autouse=True)
def _clear_writer_caches(monkeypatch):
    # Requests monkeypatch so that it closes the writers before a chdir is undone.
    yield
    SummaryWriterCache.clear()
    v1.summary.FileWriterCache.clear()


class Model(NamedTuple):
    train_op: Any
    merged: Any  # merge_all(): 8 scalars + 2 histograms
    scalars: Any  # the 8 scalars merged into one tensor
    histograms: list[Any]


def build_model() -> Model:
    """Linear regression on seeded synthetic data, in the default graph.

    Between saves both hooks take "the global step fetched in the run, plus one" as the
    step to time the next save by. Unless the train op depends on that fetch, the fetch
    races the increment, and TF's own hook then saves a step early now and then; the
    dependency makes both runs deterministic.
    """
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = (
        x @ np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32) + 0.1 * rng.normal(size=(32, 1))
    ).astype(np.float32)
    global_step = v1.train.get_or_create_global_step()
    # One read of each variable, used by the loss and the summaries alike: the update
    # depends on it, so every summary shows the values from before the update.
    w = tf.identity(v1.get_variable("w", [4, 1], initializer=v1.zeros_initializer()))
    b = tf.identity(v1.get_variable("b", [], initializer=v1.zeros_initializer()))
    residual = tf.matmul(x, w) + b - y
    loss = tf.reduce_mean(tf.square(residual))
    optimizer = v1.train.GradientDescentOptimizer(0.05)
    grads_and_vars = optimizer.compute_gradients(loss)
    scalars = [
        v1.summary.scalar("loss", loss),
        v1.summary.scalar("mae", tf.reduce_mean(tf.abs(residual))),
        *(v1.summary.scalar(f"w_{i}", w[i, 0]) for i in range(4)),
        v1.summary.scalar("bias", b),
        v1.summary.scalar("grad_norm", tf.linalg.global_norm([g for g, _ in grads_and_vars])),
    ]
    histograms = [v1.summary.histogram("weights", w), v1.summary.histogram("residuals", residual)]
    with tf.control_dependencies([AsyncSummarySaverHook.global_step_read()]):
        train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
    return Model(train_op, v1.summary.merge_all(), v1.summary.merge(scalars), histograms)


def train(
    make_hook: Callable[[Model], Any],
    steps: int,
    *,
    scaffold: Any = None,
    before: Sequence[Any] = (),
    way: str = "hooks",
) -> None:
    """Train ``steps`` steps in a fresh graph with the hook made by ``make_hook``."""
    with tf.Graph().as_default():
        model = build_model()
        hooks = [*before, make_hook(model)]
        if way == "hooks":
            session = v1.train.MonitoredTrainingSession(
                scaffold=scaffold, hooks=hooks, config=CONFIG, log_step_count_steps=None
            )
        elif way == "chief_only_hooks":
            session = v1.train.MonitoredTrainingSession(
                is_chief=True,
                scaffold=scaffold,
                chief_only_hooks=hooks,
                config=CONFIG,
                log_step_count_steps=None,
            )
        else:
            assert way == "MonitoredSession"
            creator = v1.train.ChiefSessionCreator(scaffold=scaffold, config=CONFIG)
            session = v1.train.MonitoredSession(session_creator=creator, hooks=hooks)
        with session:
            for _ in range(steps):
                session.run(model.train_op)


def stream(logdir: str) -> list[tuple]:
    """Everything but wall times and the file header, in file order."""
    out: list[tuple] = []
    for event in tb_run_events(logdir):
        if event.HasField("summary"):
            for value in event.summary.value:
                out.append(
                    ("summary", event.step, value.tag, value.SerializeToString(deterministic=True))
                )
        elif event.HasField("session_log"):
            out.append(("session_log", event.step, event.session_log.status))
        elif event.HasField("graph_def"):
            # The same nodes; their attrs name functions by a process-wide counter.
            graph = graph_pb2.GraphDef.FromString(event.graph_def)
            out.append(
                ("graph_def", event.step, [(n.name, n.op, list(n.input)) for n in graph.node])
            )
        elif event.HasField("meta_graph_def"):
            out.append(("meta_graph_def", event.step))
        else:
            assert event.HasField("file_version"), event
    return out


def summary_steps(events: list[tuple]) -> list[int]:
    """Steps of the saves (one per step at which summaries were written)."""
    steps: list[int] = []
    for kind, step, *_ in events:
        if kind == "summary" and (not steps or steps[-1] != step):
            steps.append(step)
    return steps


def session_logs(events: list[tuple]) -> list[tuple[int, int]]:
    return [
        (step, status) for kind, step, *rest in events if kind == "session_log" for status in rest
    ]


START = v1.SessionLog.START


def assert_parity(
    tmp_path,
    steps: int,
    theirs: Callable[[Model, str], Any],
    ours: Callable[[Model, str], Any],
    **kwargs: Any,
) -> list[tuple]:
    """Train with TF's hook, then ours; both write the same events. Returns ours."""
    tf_dir, our_dir = str(tmp_path / "tf"), str(tmp_path / "ours")
    train(lambda model: theirs(model, tf_dir), steps, **kwargs)
    train(lambda model: ours(model, our_dir), steps, **kwargs)
    expected, got = stream(tf_dir), stream(our_dir)
    assert got == expected
    assert session_logs(got)[0] == (1, START)
    return got


# ------------------------------------------------------------------------ parity
def test_parity_save_steps_with_one_summary_tensor(tmp_path):
    got = assert_parity(
        tmp_path,
        20,
        lambda m, d: v1.train.SummarySaverHook(save_steps=3, output_dir=d, summary_op=m.merged),
        lambda m, d: AsyncSummarySaverHook(save_steps=3, output_dir=d, summary_op=m.merged),
    )
    assert summary_steps(got) == [1, 4, 7, 10, 13, 16, 19]
    assert session_logs(got) == [(1, START)]
    assert {
        tag for kind, _, tag, *_ in (e for e in got if e[0] == "summary")
    } == SCALAR_TAGS | HISTOGRAM_TAGS
    # Like TF's FileWriterCache, the cached writer starts with the graph.
    assert [e[0] for e in got[:2]] == ["graph_def", "meta_graph_def"]


class FakeTime:
    """The timer's clock: moves only when a step ticks it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


class Tick(v1.train.SessionRunHook):
    def __init__(self, clock: FakeTime, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def before_run(self, run_context):
        self.clock.now += self.seconds


def test_parity_save_secs_with_a_fake_clock(tmp_path):
    clock = FakeTime()
    # Both hooks' timers are TF's SecondOrStepTimer, which reads basic_session_run_hooks.time.
    with mock.patch.object(basic_session_run_hooks, "time", types.SimpleNamespace(time=clock.time)):
        got = assert_parity(
            tmp_path,
            20,
            lambda m, d: v1.train.SummarySaverHook(save_secs=1, output_dir=d, summary_op=m.merged),
            lambda m, d: AsyncSummarySaverHook(save_secs=1, output_dir=d, summary_op=m.merged),
            before=[Tick(clock, 0.4)],
        )
    # 0.4 s a step, a save at least 1 s after the last one: every third step.
    assert summary_steps(got) == [1, 4, 7, 10, 13, 16, 19]


def test_parity_scaffold_summary_op(tmp_path):
    made: dict[str, Any] = {}

    def scaffold_hook(cls):
        def make(model, logdir):
            # No summary_op: Scaffold.finalize() sets it to merge_all() after begin().
            made["scaffold"] = scaffold = v1.train.Scaffold()
            return cls(save_steps=5, output_dir=logdir, scaffold=scaffold)

        return make

    tf_dir, our_dir = str(tmp_path / "tf"), str(tmp_path / "ours")
    for cls, logdir in ((v1.train.SummarySaverHook, tf_dir), (AsyncSummarySaverHook, our_dir)):
        with tf.Graph().as_default():
            model = build_model()
            hook = scaffold_hook(cls)(model, logdir)
            with v1.train.MonitoredTrainingSession(
                scaffold=made["scaffold"], hooks=[hook], config=CONFIG, log_step_count_steps=None
            ) as session:
                for _ in range(12):
                    session.run(model.train_op)
    got = stream(our_dir)
    assert got == stream(tf_dir)
    assert summary_steps(got) == [1, 6, 11]
    assert len([e for e in got if e[0] == "summary"]) == 3 * 10


def test_parity_list_of_summary_ops(tmp_path):
    got = assert_parity(
        tmp_path,
        10,
        lambda m, d: v1.train.SummarySaverHook(
            save_steps=2, output_dir=d, summary_op=[m.scalars, *m.histograms]
        ),
        lambda m, d: AsyncSummarySaverHook(
            save_steps=2, output_dir=d, summary_op=[m.scalars, *m.histograms]
        ),
    )
    assert summary_steps(got) == [1, 3, 5, 7, 9]
    first_save = [e[2] for e in got if e[0] == "summary" and e[1] == 1]
    assert first_save[-2:] == ["weights", "residuals"]  # the list's order, one event each


@pytest.mark.parametrize("writer_kind", ["AsyncSummaryWriter", "tf FileWriter"])
def test_parity_explicit_writer(tmp_path, writer_kind):
    writers: list[Any] = []

    def theirs(model, logdir):
        writers.append(v1.summary.FileWriter(logdir))
        return v1.train.SummarySaverHook(
            save_steps=4, summary_writer=writers[-1], summary_op=model.merged
        )

    def ours(model, logdir):
        make = AsyncSummaryWriter if writer_kind == "AsyncSummaryWriter" else v1.summary.FileWriter
        writers.append(make(logdir))
        return AsyncSummarySaverHook(
            save_steps=4, summary_writer=writers[-1], summary_op=model.merged
        )

    got = assert_parity(tmp_path, 10, theirs, ours)
    assert summary_steps(got) == [1, 5, 9]
    for writer in writers:
        writer.close()


@pytest.mark.parametrize("way", ["chief_only_hooks", "MonitoredSession"])
def test_parity_in_chief_only_hooks_and_monitored_session(tmp_path, way):
    got = assert_parity(
        tmp_path,
        6,
        lambda m, d: v1.train.SummarySaverHook(save_steps=2, output_dir=d, summary_op=m.merged),
        lambda m, d: AsyncSummarySaverHook(save_steps=2, output_dir=d, summary_op=m.merged),
        way=way,
    )
    assert summary_steps(got) == [1, 3, 5]


def test_exact_step_false_matches_when_the_train_op_depends_on_the_step_read(tmp_path):
    # build_model() makes the train op depend on AsyncSummarySaverHook.global_step_read().
    got = assert_parity(
        tmp_path,
        30,
        lambda m, d: v1.train.SummarySaverHook(save_steps=1, output_dir=d, summary_op=m.merged),
        lambda m, d: AsyncSummarySaverHook(
            save_steps=1, output_dir=d, summary_op=m.merged, exact_step=False
        ),
    )
    assert summary_steps(got) == list(range(1, 31))


def test_exact_step_false_writes_the_fetched_step_plus_one(tmp_path):
    """Documented limit: the skipped read assumes one increment per run."""
    saved: dict[str, list[int]] = {}
    for name, exact in (("exact", True), ("fetched", False)):
        logdir = str(tmp_path / name)
        with tf.Graph().as_default():
            global_step = v1.train.get_or_create_global_step()
            with tf.control_dependencies([AsyncSummarySaverHook.global_step_read()]):
                train_op = v1.assign_add(global_step, 2)  # two steps a run
            hook = AsyncSummarySaverHook(
                save_steps=1,
                output_dir=logdir,
                summary_op=v1.summary.scalar("c", 1.0),
                exact_step=exact,
            )
            with v1.train.MonitoredTrainingSession(
                hooks=[hook], config=CONFIG, log_step_count_steps=None
            ) as session:
                for _ in range(4):
                    session.run(train_op)
        saved[name] = summary_steps(stream(logdir))
    assert saved == {"exact": [2, 4, 6, 8], "fetched": [1, 3, 5, 7]}


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(dict(save_steps=1), id="neither scaffold nor summary_op"),
        pytest.param(
            dict(save_steps=1, summary_op="op", scaffold="scaffold"),
            id="both scaffold and summary_op",
        ),
        pytest.param(dict(summary_op="op"), id="neither save_steps nor save_secs"),
        pytest.param(
            dict(summary_op="op", save_steps=1, save_secs=1), id="both save_steps and save_secs"
        ),
        pytest.param(
            dict(scaffold="scaffold", save_secs=1, save_steps=1), id="scaffold with both timers"
        ),
    ],
)
def test_value_errors_like_tf(tmp_path, kwargs):
    with tf.Graph().as_default():
        real = {"op": v1.summary.scalar("x", 1.0), "scaffold": v1.train.Scaffold()}
        kwargs = {k: real.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
        with pytest.raises(ValueError) as theirs:
            v1.train.SummarySaverHook(output_dir=str(tmp_path), **kwargs)
        with pytest.raises(ValueError) as ours:
            AsyncSummarySaverHook(output_dir=str(tmp_path), **kwargs)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("cls", [v1.train.SummarySaverHook, AsyncSummarySaverHook])
def test_runtime_error_without_a_global_step(tmp_path, cls):
    with tf.Graph().as_default():
        hook = cls(save_steps=1, output_dir=str(tmp_path), summary_op=v1.summary.scalar("x", 1.0))
        with pytest.raises(RuntimeError, match="Global step should be created"):
            hook.begin()


def test_writer_options_errors(tmp_path):
    with tf.Graph().as_default():
        op = v1.summary.scalar("x", 1.0)
        with pytest.raises(TypeError, match="flush_sec"):
            AsyncSummarySaverHook(
                save_steps=1, output_dir=str(tmp_path), summary_op=op, flush_sec=1
            )
        writer = AsyncSummaryWriter(str(tmp_path))
        with pytest.raises(ValueError, match="output_dir"):
            AsyncSummarySaverHook(save_steps=1, summary_writer=writer, summary_op=op, flush_secs=1)
        with pytest.raises(ValueError, match="output_dir"):
            AsyncSummarySaverHook(save_steps=1, summary_op=op, flush_secs=1)
        writer.close()


# ---------------------------------------------------------------- the writer side
class RecordingWriter:
    """A FileWriter-like object that keeps what the hook hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.flushes = 0

    def add_summary(self, summary, global_step=None):
        self.calls.append(("add_summary", summary, global_step))

    def add_session_log(self, session_log, global_step=None):
        self.calls.append(("add_session_log", session_log.status, global_step))

    def flush(self):
        self.flushes += 1


def test_summaries_are_passed_on_as_serialized_bytes():
    writer = RecordingWriter()
    train(
        lambda m: AsyncSummarySaverHook(
            save_steps=2, summary_writer=writer, summary_op=[m.scalars, *m.histograms]
        ),
        3,
    )
    summaries = [call for call in writer.calls if call[0] == "add_summary"]
    assert len(summaries) == 2 * 3  # steps 1 and 3, three tensors each
    assert all(type(s) is bytes and type(step) is int for _, s, step in summaries)
    assert writer.calls[0] == ("add_session_log", START, 1)
    assert writer.flushes == 1  # end()


def test_driven_by_hand_without_after_create_session():
    """Outside MonitoredSession: fetches resolved on the first step, the step read by run."""
    writer = RecordingWriter()
    with tf.Graph().as_default():
        model = build_model()
        hook = AsyncSummarySaverHook(save_steps=2, summary_writer=writer, summary_op=model.scalars)
        hook.begin()
        with v1.Session(config=CONFIG) as session:
            session.run(v1.global_variables_initializer())
            for _ in range(4):
                context = v1.train.SessionRunContext(
                    original_args=v1.train.SessionRunArgs(model.train_op), session=session
                )
                fetches = hook.before_run(context).fetches
                _, results = session.run([model.train_op, fetches])
                hook.after_run(context, v1.train.SessionRunValues(results, None, None))
            hook.end(session)
    assert [(kind, step) for kind, _, step in writer.calls] == [
        ("add_session_log", 1),
        ("add_summary", 1),
        ("add_summary", 3),
    ]
    assert writer.flushes == 1


def test_no_writer_means_no_events_and_no_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(lambda m: AsyncSummarySaverHook(save_steps=1, summary_op=m.merged), 3)
    assert list(tmp_path.rglob("*tfevents*")) == []


def test_end_leaves_every_summary_on_disk_and_the_shared_writer_open(logdir):
    slow = lambda path: DelayedSink(FileSink(path), 0.01)  # noqa: E731 - slow storage
    hooks: list[AsyncSummarySaverHook] = []

    def make(model):
        # flush_secs far away: only end() can have written the events by the time we read.
        hooks.append(
            AsyncSummarySaverHook(
                save_steps=1,
                output_dir=logdir,
                summary_op=model.merged,
                flush_secs=600,
                sink_factory=slow,
            )
        )
        return hooks[-1]

    train(make, 25)
    acc = accumulator(logdir)
    assert set(acc.Tags()["scalars"]) == SCALAR_TAGS
    assert set(acc.Tags()["histograms"]) == HISTOGRAM_TAGS
    for tag in SCALAR_TAGS:
        assert [e.step for e in acc.Scalars(tag)] == list(range(1, 26))
    for tag in HISTOGRAM_TAGS:
        assert [e.step for e in acc.Histograms(tag)] == list(range(1, 26))
    writer = SummaryWriterCache.get(logdir)  # the hook's writer: flushed, not closed
    assert not writer.closed and writer.stats().pending_events == 0
    assert len(hooks) == 1


def test_training_goes_on_while_the_storage_is_stalled(logdir):
    gate = threading.Event()
    sinks: list[GatedSink] = []
    sink_made = threading.Event()

    def gated(path):
        sinks.append(GatedSink(FileSink(path), gate))
        sink_made.set()
        return sinks[-1]

    with tf.Graph().as_default():
        model = build_model()
        # batch_bytes=1: every add wakes the writer, which then stalls in its first write.
        hook = AsyncSummarySaverHook(
            save_steps=1,
            output_dir=logdir,
            summary_op=model.merged,
            flush_secs=600,
            batch_bytes=1,
            sink_factory=gated,
        )
        with v1.train.MonitoredTrainingSession(
            hooks=[hook], config=CONFIG, log_step_count_steps=None
        ) as session:
            session.run(model.train_op)
            assert sink_made.wait(30) and sinks[0].entered.wait(30)  # the storage is stuck now
            for _ in range(99):
                session.run(model.train_op)
            # 100 steps done, each with a save, and not one byte has reached the file.
            stats = SummaryWriterCache.get(logdir).stats()
            assert stats.written == 0 and stats.pending_events > 0
            assert tb_run_events(logdir) == []
            gate.set()
        # end() flushed: every save is on disk.
    acc = accumulator(logdir)
    for tag in SCALAR_TAGS:
        assert [e.step for e in acc.Scalars(tag)] == list(range(1, 101))


class AbortOnce(v1.train.SessionRunHook):
    """Raises AbortedError after the n-th run: MonitoredSession re-creates the session."""

    def __init__(self, n: int) -> None:
        self.n, self.runs = n, 0

    def after_run(self, run_context, run_values):
        self.runs += 1
        if self.runs == self.n:
            raise tf.errors.AbortedError(None, None, "injected preemption")


def test_a_recreated_session_starts_afresh(tmp_path):
    """after_create_session: a new START at the restored step, and a save right away."""
    saved: dict[str, list[tuple]] = {}
    for name, cls in (("tf", v1.train.SummarySaverHook), ("ours", AsyncSummarySaverHook)):
        logdir = str(tmp_path / name)

        # No checkpoint: the re-created session starts again from global step 0.
        def make(m, cls=cls, logdir=logdir):
            return cls(save_steps=4, output_dir=logdir, summary_op=m.scalars)

        train(make, 10, before=[AbortOnce(6)])
        saved[name] = stream(logdir)
    ours = saved["ours"]
    assert session_logs(ours) == [(1, START), (1, START)]
    assert summary_steps(ours) == [1, 5, 1, 5]
    # TensorBoard drops the abandoned steps at the second START.
    assert [e.step for e in accumulator(str(tmp_path / "ours")).Scalars("loss")] == [1, 5]
    # TF's hook carries its timer over and saves nothing in the new session up to step 5.
    assert session_logs(saved["tf"]) == [(1, START)]
    assert summary_steps(saved["tf"]) == [1, 5]


# -------------------------------------------------------------------------- cache
def test_cache_one_writer_per_logdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with tf.Graph().as_default():
        writer = SummaryWriterCache.get("run", flush_secs=1.0)
        assert SummaryWriterCache.get(str(tmp_path / "run")) is writer
        assert SummaryWriterCache.get("./run", flush_secs=1.0) is writer
        with pytest.raises(ValueError, match="options"):
            SummaryWriterCache.get("run", flush_secs=5.0)
        with pytest.raises(TypeError, match="nonsense"):
            SummaryWriterCache.get("other", nonsense=1)
        writer.add_scalar("a", 1.0, 1)
        writer.close()
        assert SummaryWriterCache.get("run") is writer and not writer.closed  # reopened
        writer.add_scalar("a", 2.0, 2)
        SummaryWriterCache.clear()
        assert writer.closed
        fresh = SummaryWriterCache.get("run")
        assert fresh is not writer
        fresh.add_scalar("a", 3.0, 3)
        SummaryWriterCache.clear()
    run = str(tmp_path / "run")
    assert len(event_files(run)) == 3  # the writer, reopened (a new file), a new writer
    kinds = [e[0] for e in stream(run)]
    # New writers start with the default graph, as FileWriterCache's do; reopen does not.
    assert kinds == [
        "graph_def",
        "meta_graph_def",
        "summary",
        "summary",
        "graph_def",
        "meta_graph_def",
        "summary",
    ]


# ------------------------------------------------------------------ import & demo
def test_import_asyncsummary_does_not_import_tensorflow():
    code = (
        "import sys, asyncsummary\n"
        "assert 'tensorflow' not in sys.modules\n"
        "asyncsummary.AsyncSummarySaverHook, asyncsummary.SummaryWriterCache\n"
        "assert 'tensorflow' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "examples", "demo.py"),
            "--logdir",
            str(tmp_path / "demo"),
            "--steps",
            "40",
        ],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "tensorboard --logdir" in out
    for tag in sorted(SCALAR_TAGS | HISTOGRAM_TAGS):
        assert tag in out
    tf1_dir = tmp_path / "demo" / "tf1"
    acc = accumulator(str(tf1_dir))
    assert set(acc.Tags()["scalars"]) >= {"loss"} and len(acc.Tags()["scalars"]) == 8
    assert len(acc.Tags()["histograms"]) == 2
    assert acc.Scalars("loss")[-1].step == 40
    assert "demo/sine" in out and "run 'writer'" in out
