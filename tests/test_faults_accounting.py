"""Counts that add up, inputs refused up front, errors that name what happened.

On disk + lost + dropped + rejected = added, for every way an add can end; a value
that would fail later on the background side (and lose events there) is refused by
the call that passes it; a failure while leaving a ``with`` never hides the body's
own exception. Also the drop-in gaps of ``add_graph`` (a graph's plugin assets) and
torch's ``walltime`` arguments of the file writer.
"""

from __future__ import annotations

import threading
import time
import warnings

import pytest

from asyncsummary import AsyncSummaryWriter, FileSink, WriteError
from asyncsummary.testing import FailingSink, GatedSink

from .readers import accumulator, tb_run_events, tf_summary_iterator


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _summary(tag: str, value: float) -> bytes:
    from tensorboard.compat.proto import summary_pb2

    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]).SerializeToString()


def test_the_add_that_raises_a_stored_write_error_keeps_its_own_event(logdir):
    failing = threading.Event()
    failing.set()
    writer = AsyncSummaryWriter(
        logdir, flush_secs=3600, sink_factory=lambda p: FailingSink(FileSink(p), failing)
    )
    writer.add_scalar("x", 0.0, 0)
    with pytest.raises(WriteError):
        writer.flush(timeout=10)
    raised = 0
    for step in (1, 2):
        # Wait for the loop's next failed retry: it stores an error for the next add.
        errors = writer.stats().write_errors
        _wait_until(lambda errors=errors: writer.stats().write_errors > errors)
        with pytest.raises(WriteError):
            writer.add_scalar("x", float(step), step)
        raised += 1
    assert raised == 2
    failing.clear()
    writer.add_scalar("x", 3.0, 3)
    writer.close()
    stats = writer.stats()
    steps = [e.step for e in tb_run_events(logdir) if e.HasField("summary")]
    assert steps == list(range(stats.queued))
    assert stats.written + stats.lost + stats.dropped + stats.rejected == stats.queued
    assert stats.lost == stats.dropped == stats.rejected == 0


def test_written_does_not_count_rejected_events(logdir):
    writer = AsyncSummaryWriter(logdir)
    writer.add_summary(_summary("a", 1.0), 0)
    writer.add_summary(b"\xff\xff not a summary", 1)
    writer.add_summary(_summary("a", 2.0), 2)
    with pytest.raises(Exception, match="not written"):
        writer.flush()
    writer.close()
    stats = writer.stats()
    assert (stats.queued, stats.written, stats.rejected) == (3, 2, 1)
    assert [e.step for e in tb_run_events(logdir) if e.HasField("summary")] == [0, 2]


def test_graph_bytes_must_be_a_graph_def(logdir):
    from tensorboard.compat.proto import graph_pb2, node_def_pb2

    with AsyncSummaryWriter(logdir) as writer:
        with pytest.raises(ValueError, match="GraphDef"):
            writer.add_graph(b"\xff\x00\x01 certainly not a graph")
        graph = graph_pb2.GraphDef(node=[node_def_pb2.NodeDef(name="a", op="Const")])
        writer.add_graph(graph.SerializeToString())
    assert writer.stats().queued == 1
    loaded = accumulator(logdir).Graph()  # TensorBoard's graph loader
    assert [n.name for n in loaded.node] == ["a"]


@pytest.mark.parametrize("name", ["flush_secs", "block_timeout", "flush_timeout", "close_timeout"])
def test_timeouts_too_large_for_the_timers_are_refused(logdir, name):
    with pytest.raises(ValueError, match=name):
        AsyncSummaryWriter(logdir, **{name: 1e10})


def test_per_call_timeouts_too_large_are_refused(logdir):
    with AsyncSummaryWriter(logdir) as writer:
        writer.add_scalar("x", 1.0, 1)
        with pytest.raises(ValueError, match="timeout"):
            writer.flush(timeout=1e10)
        writer.flush(timeout=1e9)  # the largest accepted works
    assert writer.stats().written == 1


def test_a_suffix_that_makes_names_too_long_is_refused(logdir):
    with pytest.raises(ValueError, match="too long"):
        AsyncSummaryWriter(logdir, filename_suffix="." + "x" * 249)
    with AsyncSummaryWriter(logdir, filename_suffix="." + "y" * 100) as writer:
        writer.add_scalar("x", 1.0, 1)
    (path,) = writer.stats().files
    assert path.endswith("y" * 100) and [e.step for e in tb_run_events(logdir)][1:] == [1]


class _TrainingCrash(Exception):
    pass


@pytest.mark.parametrize("facade", ["filewriter", pytest.param("torch", marks=pytest.mark.torch)])
def test_an_exception_inside_with_is_not_replaced_by_a_close_timeout(logdir, facade):
    gate = threading.Event()
    factory = lambda p: GatedSink(FileSink(p), gate)  # noqa: E731 - hung storage
    if facade == "torch":
        from asyncsummary import SummaryWriter as cls
    else:
        cls = AsyncSummaryWriter
    kwargs = dict(sink_factory=factory, close_timeout=0.5)
    try:
        with pytest.raises(_TrainingCrash) as info, warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with cls(logdir, **kwargs) as writer:
                writer.add_scalar("x", 1.0, 1)
                raise _TrainingCrash("the step failed")
        notes = getattr(info.value, "__notes__", [])
        messages = [str(w.message) for w in seen] + notes
        assert any("_TrainingCrash" in m and "did not finish" in m for m in messages), messages
    finally:
        gate.set()


@pytest.mark.tf
def test_add_graph_writes_the_graphs_plugin_assets_as_tf_does(tmp_path):
    import tensorflow as tf
    from tensorflow.python.summary import plugin_asset

    class Asset(plugin_asset.PluginAsset):
        plugin_name = "test_plugin"

        def assets(self):
            return {"config.pbtxt": "hello", "data.bin": b"\x00\x01"}

    def files(root):
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in (root / "plugins").rglob("*")
            if p.is_file()
        }

    for name, make in (
        ("tf", lambda d, g: tf.compat.v1.summary.FileWriter(d, graph=g)),
        ("ours", lambda d, g: AsyncSummaryWriter(d, graph=g)),
    ):
        graph = tf.Graph()
        with graph.as_default():
            tf.constant(1.0, name="c")
            plugin_asset.get_plugin_asset(Asset)
            writer = make(str(tmp_path / name), graph)
            writer.close()
    ours = files(tmp_path / "ours")
    assert ours == files(tmp_path / "tf") == {
        "plugins/test_plugin/config.pbtxt": b"hello",
        "plugins/test_plugin/data.bin": b"\x00\x01",
    }
    assert [n.name for n in accumulator(str(tmp_path / "ours")).Graph().node] == ["c"]


@pytest.mark.torch
@pytest.mark.tf
def test_torch_file_writer_takes_walltime_like_torchs(logdir):
    from tensorboard.compat.proto import event_pb2

    from asyncsummary import SummaryWriter

    with SummaryWriter(logdir) as writer:
        writer.file_writer.add_summary(_summary("s", 1.0), 3, walltime=1234.5)
        event = event_pb2.Event(step=1, wall_time=1.0)
        event.summary.ParseFromString(_summary("e", 2.0))
        writer.file_writer.add_event(event, step=7, walltime=4321.0)
        writer.file_writer.add_event(event)  # as it is, as TF's add_event
        file_writer = writer.file_writer
    assert event.step == 1  # the caller's proto is untouched
    (path,) = file_writer.stats().files
    got = [(e.step, e.wall_time, e.summary.value[0].tag) for e in tf_summary_iterator(path)[1:]]
    assert got == [(3, 1234.5, "s"), (7, 4321.0, "e"), (1, 1.0, "e")]
