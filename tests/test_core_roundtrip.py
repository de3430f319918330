"""Thousands of events of every kind, read back by TensorBoard and TensorFlow."""

from __future__ import annotations

import io

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, graph_pb2, summary_pb2
from tensorboard.plugins.text import summary_v2 as text_summary

from asyncsummary import AsyncSummaryWriter

from .readers import accumulator, event_files, tb_events, tf_records, tf_summary_iterator

STEPS = 600


def _png(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)


def _histogram(tag: str, data: np.ndarray) -> summary_pb2.Summary:
    counts, edges = np.histogram(data, bins=10)
    histo = summary_pb2.HistogramProto(
        min=float(data.min()), max=float(data.max()), num=float(data.size),
        sum=float(data.sum()), sum_squares=float((data**2).sum()),
        bucket_limit=edges[1:].tolist(), bucket=counts.astype(float).tolist(),
    )
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, histo=histo)])


def _image(tag: str, pixels: np.ndarray) -> summary_pb2.Summary:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    image = summary_pb2.Summary.Image(
        height=pixels.shape[0], width=pixels.shape[1], colorspace=3, encoded_image_string=buffer.getvalue()
    )
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One run with scalars, histograms, images, text, session logs and a graph."""
    logdir = str(tmp_path_factory.mktemp("roundtrip"))
    rng = np.random.default_rng(0)
    expected: dict[str, list] = {"loss": [], "acc": [], "hist": [], "img": [], "text": []}
    graph = graph_pb2.GraphDef()
    graph.node.add(name="x", op="Placeholder")
    graph.node.add(name="y", op="Identity", input=["x"])
    with AsyncSummaryWriter(logdir, flush_secs=0.5) as writer:
        writer.add_graph(graph)
        writer.add_session_log(event_pb2.SessionLog(status=event_pb2.SessionLog.START), 0)
        for step in range(STEPS):
            loss = float(np.float32(1.0 / (step + 1)))
            writer.add_scalar("loss", loss, step)
            expected["loss"].append((step, loss))
            acc = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="acc", simple_value=step / STEPS)])
            writer.add_summary(acc.SerializeToString(), global_step=step)  # bytes, as a session returns
            expected["acc"].append((step, float(np.float32(step / STEPS))))
            if step % 10 == 0:
                data = rng.normal(size=100)
                writer.add_summary(_histogram("hist", data), step)  # proto
                expected["hist"].append((step, float(data.sum())))
                image = _png(step)
                writer.add_summary(_image("img", image), step)
                expected["img"].append((step, image))
                writer.add_summary(text_summary.text_pb("text", f"step {step}"), step)
                expected["text"].append((step, f"step {step}"))
            if step == STEPS // 2:
                writer.add_session_log(
                    event_pb2.SessionLog(status=event_pb2.SessionLog.CHECKPOINT, checkpoint_path="/ckpt"), step
                )
    stats = writer.stats()  # after close: everything accounted for
    return logdir, expected, stats, graph


def test_all_events_counted(written):
    logdir, expected, stats, _ = written
    assert stats.queued == stats.written
    assert stats.dropped == stats.lost == stats.rejected == 0
    assert len(event_files(logdir)) == 1


def test_event_accumulator_reads_everything(written):
    logdir, expected, _, graph = written
    acc = accumulator(logdir)
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == expected["loss"]
    assert [(e.step, e.value) for e in acc.Scalars("acc")] == expected["acc"]
    hists = acc.Histograms("hist")
    assert [h.step for h in hists] == [s for s, _ in expected["hist"]]
    for got, (_, total) in zip(hists, expected["hist"], strict=True):
        assert got.histogram_value.sum == pytest.approx(total)
    images = acc.Images("img")
    assert [i.step for i in images] == [s for s, _ in expected["img"]]
    from PIL import Image

    for got, (_, pixels) in zip(images, expected["img"], strict=True):
        decoded = np.asarray(Image.open(io.BytesIO(got.encoded_image_string)))
        np.testing.assert_array_equal(decoded, pixels)
    texts = acc.Tensors("text")
    assert [(t.step, t.tensor_proto.string_val[0].decode()) for t in texts] == expected["text"]
    assert acc.Graph() == graph


@pytest.mark.tf
def test_summary_iterator_reads_everything_in_order(written):
    logdir, expected, _, _ = written
    (path,) = event_files(logdir)
    events = tf_summary_iterator(path)
    assert events[0].file_version == "brain.Event:2"
    losses = [(e.step, v.simple_value) for e in events for v in e.summary.value if v.tag == "loss"]
    assert losses == expected["loss"]
    statuses = [e.session_log.status for e in events if e.HasField("session_log")]
    assert statuses == [event_pb2.SessionLog.START, event_pb2.SessionLog.CHECKPOINT]
    steps = [e.step for e in events if e.HasField("summary")]
    assert steps == sorted(steps)  # call order kept


@pytest.mark.tf
def test_tfrecord_dataset_checks_every_crc(written):
    logdir, _, stats, _ = written
    (path,) = event_files(logdir)
    records = tf_records(path)
    assert len(records) == stats.written + 1  # + the file_version header
    assert records == [e.SerializeToString() for e in tb_events(path)]
