"""The same calls into TF's FileWriter and ours give the same event stream."""

from __future__ import annotations

import pytest

from asyncsummary import AsyncSummaryWriter

from .readers import event_files, tf_summary_iterator, without_wall_time


def _calls(writer, tf):
    """A script of FileWriter calls covering every method and metadata stripping."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        tf.identity(x * 2.0, name="y")
    writer.add_graph(graph, global_step=1)
    meta = tf.compat.v1.train.export_meta_graph(graph=graph)
    writer.add_meta_graph(meta, global_step=2)
    run_metadata = tf.compat.v1.RunMetadata()
    run_metadata.step_stats.dev_stats.add(device="/cpu:0")
    writer.add_run_metadata(run_metadata, "step_3", global_step=3)
    writer.add_session_log(tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.START), 0)
    for step in range(50):
        # v2-style summaries carry plugin metadata on every value: only the first is kept.
        summary = tf.compat.v1.Summary()
        value = summary.value.add(tag="loss", simple_value=1.0 / (step + 1))
        value.metadata.plugin_data.plugin_name = "scalars"
        value.metadata.display_name = "Loss"
        other = summary.value.add(tag="other", simple_value=float(step))
        other.metadata.plugin_data.plugin_name = "scalars"
        if step % 2:
            writer.add_summary(summary.SerializeToString(), step)  # bytes
        else:
            writer.add_summary(summary, step)  # proto
        writer.add_summary(
            tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag="plain", simple_value=step)]),
            global_step=None if step == 0 else step,
        )
    event = tf.compat.v1.Event(step=77, wall_time=12345.0)
    event.summary.value.add(tag="raw", simple_value=7.0)
    writer.add_event(event)
    writer.add_session_log(tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.STOP), 50)


def _canonical_graphs(events, tf):
    """Graph bytes re-serialized deterministically: map fields (node attrs) are
    serialized in an order that differs between processes, so the same graph may have
    other bytes in each writer's file."""
    for event in events:
        if event.graph_def:
            event.graph_def = tf.compat.v1.GraphDef.FromString(event.graph_def).SerializeToString(deterministic=True)
        if event.meta_graph_def:
            event.meta_graph_def = tf.compat.v1.MetaGraphDef.FromString(event.meta_graph_def).SerializeToString(
                deterministic=True
            )
    return events


@pytest.mark.tf
def test_same_event_stream_as_tf_file_writer(tmp_path):
    import tensorflow as tf

    with tf.Graph().as_default():
        ctor_graph = tf.Graph()
        with ctor_graph.as_default():
            tf.constant(1.0, name="c")
        theirs = tf.compat.v1.summary.FileWriter(str(tmp_path / "tf"), graph=ctor_graph)
        _calls(theirs, tf)
        theirs.close()
    with tf.Graph().as_default():
        ours = AsyncSummaryWriter(str(tmp_path / "ours"), graph=ctor_graph)
        _calls(ours, tf)
        ours.close()

    (tf_file,) = event_files(str(tmp_path / "tf"))
    (our_file,) = event_files(str(tmp_path / "ours"))
    tf_events = tf_summary_iterator(tf_file)
    our_events = tf_summary_iterator(our_file)
    assert len(our_events) == len(tf_events) > 100
    # Each writer names itself in the first event; everything else is the same.
    assert our_events[0].source_metadata.writer == "asyncsummary"
    for first in (our_events[0], tf_events[0]):
        first.ClearField("source_metadata")
    assert without_wall_time(_canonical_graphs(our_events, tf)) == without_wall_time(_canonical_graphs(tf_events, tf))
    # and metadata survives exactly once per tag
    with_metadata = [v.tag for e in our_events for v in e.summary.value if v.HasField("metadata")]
    assert sorted(with_metadata) == ["loss", "other"]


@pytest.mark.tf
def test_run_metadata_tag_reuse_raises_like_tf(tmp_path):
    import tensorflow as tf

    with tf.Graph().as_default():
        writers = (tf.compat.v1.summary.FileWriter(str(tmp_path / "tf")), AsyncSummaryWriter(str(tmp_path / "ours")))
    for writer in writers:
        writer.add_run_metadata(tf.compat.v1.RunMetadata(), "t")
        with pytest.raises(ValueError, match="already used"):
            writer.add_run_metadata(tf.compat.v1.RunMetadata(), "t")
        writer.close()


@pytest.mark.tf
def test_type_errors_like_tf(tmp_path):
    import tensorflow as tf

    with tf.Graph().as_default():
        writers = (tf.compat.v1.summary.FileWriter(str(tmp_path / "tf")), AsyncSummaryWriter(str(tmp_path / "ours")))
    for writer in writers:
        with pytest.raises(TypeError):
            writer.add_meta_graph("not a meta graph")
        with pytest.raises(TypeError):
            writer.add_graph(42)
        with pytest.raises(ValueError):
            writer.add_graph(tf.Graph(), graph_def=tf.compat.v1.GraphDef())
        writer.close()
