"""``s3://`` logdirs against a real S3 server (moto, server mode) on loopback.

The server runs behind a counting proxy (:mod:`tests.remote_servers`), so the bytes
the writer sends, HTTP included, are measured on the wire, and "the server goes
down" means its endpoint refuses connections until it comes back, with its objects.
Objects are checked straight from the server, through TensorBoard's loader (on a
download and through TensorBoard's own S3 reading, with TensorFlow not imported) and
through TensorFlow's record reader (every CRC).
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from asyncsummary import AsyncSummaryError, AsyncSummaryWriter, FlushTimeoutError
from asyncsummary._remote import scan_records
from asyncsummary.remote import download, read_events

from .procs import Child, run
from .readers import tb_run_events, tf_records

BUCKET = "asyncsummary-test"


@pytest.fixture
def env(s3, tmp_path, monkeypatch):
    """The usual environment of a job writing to S3: endpoint and keys; a spool folder."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    spool = str(tmp_path / "spool")
    monkeypatch.setenv("ASYNCSUMMARY_SPOOL_DIR", spool)
    return spool


@pytest.fixture
def prefix():
    return f"run-{uuid.uuid4().hex[:12]}"


def _scalar_steps(objects, tag="x"):
    """(step, value) of every ``tag`` scalar in the objects, objects in key order."""
    from tensorboard.compat.proto import event_pb2

    out = []
    for key in sorted(objects):
        payloads, end = scan_records(objects[key])
        assert end == len(objects[key]), f"{key}: not a whole number of valid records"
        for payload in payloads:
            event = event_pb2.Event.FromString(payload)
            out.extend((event.step, v.simple_value) for v in event.summary.value if v.tag == tag)
    return out


def _wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)  # polling with a deadline


_TENSORBOARD_S3_READER = """
    import json, sys, types
    # TensorBoard's switch for "no TensorFlow": its own gfile, whose S3 uses boto3.
    sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
    acc.Reload()
    assert "tensorflow" not in sys.modules
    print(json.dumps([[e.step, e.value] for e in acc.Scalars("x")]))
"""


@pytest.mark.tf
def test_thousands_of_events_read_back_by_tensorboard(s3, env, prefix, tmp_path):
    url = f"s3://{BUCKET}/{prefix}"
    writer = AsyncSummaryWriter(url, flush_secs=3600, storage_options=s3.storage_options())
    expected = [(step, step * 0.25) for step in range(4000)]
    for step, value in expected:
        writer.add_scalar("x", value, step)
        if step % 160 == 159:
            writer.flush()
    writer.close()

    objects = s3.objects(BUCKET, prefix + "/")
    base = writer.stats().files[0].rsplit("/", 1)[1]
    # One object per flush (TensorBoard's own S3 reader makes a client per call, so
    # 25 objects keep it to a few seconds), named to sort in write order.
    assert sorted(objects) == [f"{prefix}/{base}.{i:010d}" for i in range(25)]
    assert _scalar_steps(objects) == expected  # names sort in write order; whole records

    # TensorBoard's loader, and TensorFlow's CRC-checking reader, on a download.
    local = download(url, tmp_path / "copy")
    assert [os.path.basename(p) for p in local] == [k.rsplit("/", 1)[1] for k in sorted(objects)]
    events = tb_run_events(str(tmp_path / "copy"))
    assert [(e.step, e.summary.value[0].simple_value) for e in events if e.HasField("summary")] == expected
    assert sum(len(tf_records(path)) for path in local) == 4001
    assert [e.step for e in read_events(url, s3.storage_options()) if e.HasField("summary")] == [
        step for step, _ in expected
    ]

    # TensorBoard reading s3:// itself (its boto3 client, no TensorFlow).
    out = run(_TENSORBOARD_S3_READER, url, timeout=120)
    assert [tuple(pair) for pair in json.loads(out.stdout)] == expected


def test_upload_cost_stays_linear(s3, env, prefix):
    """210 flushes of ~20 KB: the server receives the bytes once, plus HTTP."""
    url = f"s3://{BUCKET}/{prefix}"
    writer = AsyncSummaryWriter(url, flush_secs=3600, storage_options=s3.storage_options())
    writer.add_scalar("warm-up", 0.0, 0)
    writer.flush()  # connection setup and the header segment are not the workload
    before = s3.proxy.bytes_in
    stored_before = sum(len(v) for v in s3.objects(BUCKET, prefix + "/").values())
    step = 0
    for _ in range(210):
        for _ in range(20):  # 400 scalar events of ~49 bytes
            for tag in range(20):
                writer.add_scalar(f"metrics/{tag:02d}", float(step), step)
            step += 1
        writer.flush()
    sent = s3.proxy.bytes_in - before
    writer.close()
    objects = s3.objects(BUCKET, prefix + "/")
    stored = sum(len(v) for v in objects.values()) - stored_before
    assert len(objects) == 211
    assert 18_000 < stored / 210 < 24_000  # about 20 KB per flush
    assert sent <= 1.1 * stored, f"sent {sent} bytes for {stored} stored ({sent / stored:.3f}x)"


def test_outage_server_stopped_and_restarted(s3, env, prefix):
    url = f"s3://{BUCKET}/{prefix}"
    # policy="raise": an add that would have to wait for room raises instead, so a
    # test run without PendingLimitError shows the training thread never waited:
    # the outage's events went to the spool, not into the (small) memory bound.
    writer = AsyncSummaryWriter(url, flush_secs=0.05, batch_bytes=16 << 10, max_pending_bytes=512 << 10,
                                policy="raise", storage_options=s3.storage_options())
    for step in range(1000):
        writer.add_scalar("x", step, step)
    writer.flush()

    s3.stop()
    for step in range(1000, 21000):
        writer.add_scalar("x", step, step)
        if step % 200 == 0:
            _wait_until(lambda: writer.stats().pending_events == 0)  # drained into the spool
    with pytest.raises(FlushTimeoutError) as info:
        writer.flush(timeout=1.0)
    assert isinstance(info.value, AsyncSummaryError)
    _wait_until(lambda: writer.stats().pending_events == 0)
    spooled = [n for _, _, names in os.walk(env) for n in names if n.endswith((".seg", ".part"))]
    assert spooled  # kept on local disk while the store is down
    for step in range(21000, 21500):
        writer.add_scalar("x", step, step)

    s3.start()
    writer.flush(timeout=60)
    assert _scalar_steps(s3.objects(BUCKET, prefix + "/")) == [(s, float(s)) for s in range(21500)]
    writer.close()
    stats = writer.stats()
    assert stats.dropped == stats.lost == 0
    assert not [n for _, _, names in os.walk(env) for n in names if n.endswith((".seg", ".part"))]


_KILLED_WRITER = """
    import os, sys, time
    from asyncsummary import AsyncSummaryWriter, FlushTimeoutError

    url, down = sys.argv[1], sys.argv[2]
    writer = AsyncSummaryWriter(url, flush_secs=0.05)  # endpoint and spool from the environment

    def add(start, stop):
        for step in range(start, stop):
            writer.add_scalar("x", step, step)

    def wait_until(predicate):
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)

    add(0, 500)
    writer.flush(timeout=60)
    print("FLUSHED 500", flush=True)
    wait_until(lambda: os.path.exists(down))
    for start, stop in ((500, 1500), (1500, 2000)):
        add(start, stop)
        try:
            writer.flush(timeout=0.5)
            print("UNEXPECTED flush returned during the outage", flush=True)
        except FlushTimeoutError:
            pass
        # flush() timed out, but its events went to the spool (the sink took them).
        wait_until(lambda: writer.stats().written == writer.stats().queued)
        print(f"FLUSHED {stop}", flush=True)
    time.sleep(600)  # killed here
"""


@pytest.mark.slow
def test_kill9_during_outage_then_next_writer_uploads_the_spool(s3, env, prefix, tmp_path):
    url = f"s3://{BUCKET}/{prefix}"
    down = str(tmp_path / "server-is-down")
    with Child(_KILLED_WRITER, url, down) as child:
        child.expect("FLUSHED 500")
        s3.stop()
        open(down, "w").close()
        child.expect("FLUSHED 1500")
        child.expect("FLUSHED 2000")
        child.kill()
        assert child.wait() == -9
    assert [n for _, _, names in os.walk(env) for n in names if n.endswith((".seg", ".part"))]

    s3.start()
    with AsyncSummaryWriter(url, flush_secs=3600) as writer:  # same logdir, same spool
        writer.add_scalar("after", 1.0, 1)
        writer.flush()  # also waits for the dead writer's segments
        objects = s3.objects(BUCKET, prefix + "/")
        assert _scalar_steps(objects) == [(s, float(s)) for s in range(2000)]  # each once
        assert _scalar_steps(objects, "after") == [(1, 1.0)]
    assert not [n for _, _, names in os.walk(env) for n in names if n.endswith((".seg", ".part"))]


@pytest.mark.tf
def test_hook_output_dir_and_writer_cache_take_an_s3_url(s3, env, prefix):
    import tensorflow as tf

    from asyncsummary import AsyncSummarySaverHook, SummaryWriterCache

    v1 = tf.compat.v1
    url = f"s3://{BUCKET}/{prefix}"
    with tf.Graph().as_default():
        step = v1.train.get_or_create_global_step()
        increment = v1.assign_add(step, 1)
        v1.summary.scalar("x", tf.cast(step, tf.float32))
        hook = AsyncSummarySaverHook(save_steps=1, output_dir=url, summary_op=v1.summary.merge_all())
        with v1.train.MonitoredSession(hooks=[hook]) as session:
            for _ in range(5):
                session.run(increment)
        writer = SummaryWriterCache.get(url)
        assert writer.get_logdir() == url
        SummaryWriterCache.clear()
    events = list(read_events(url))
    assert any(e.HasField("graph_def") for e in events)
    steps = [e.step for e in events for v in e.summary.value if v.tag == "x"]
    assert len(steps) == 5 and steps == sorted(steps)
