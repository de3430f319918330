"""kill -9 at random moments of heavy writing: files stay readable, flushed events stay.

Each trial starts a child that writes scalars and large histogram summaries as fast
as it can (one event per step, the step being the event's index), calls ``flush()``
at random points and prints ``FLUSHED n`` once a flush covering the first ``n``
events has returned. The test kills it with SIGKILL after a random number of
printed lines, then checks what is on disk:

* every file is read by TensorBoard's loader and by ``tf.data.TFRecordDataset``
  (every CRC checked) up to at most one truncated final record, and only the last
  file of the run may end in one;
* the events on disk are exactly steps ``0 .. m-1`` in order (no gap, no duplicate,
  no torn record in the middle), with ``m`` at least the ``n`` of the last
  ``FLUSHED`` line the child printed.
"""

from __future__ import annotations

import random

import pytest

from .procs import Child, markers, read_run

TRIALS = 20

CHILD = """
    import random, sys
    from tensorboard.compat.proto import summary_pb2
    from asyncsummary import AsyncSummaryWriter

    logdir, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    writer = AsyncSummaryWriter(
        logdir,
        flush_secs=rng.choice([0.05, 1.0, 3600.0]),
        max_file_bytes=rng.choice([None, 60_000, 400_000]),
        batch_bytes=rng.choice([8 << 10, 512 << 10]),
        fsync=rng.random() < 0.2,
    )

    def histogram(step):
        histo = summary_pb2.HistogramProto(
            min=0.0, max=float(step), num=2000.0,
            bucket_limit=[float(b) for b in range(2000)], bucket=[float(step)] * 2000)
        value = summary_pb2.Summary.Value(tag="h", histo=histo)
        return summary_pb2.Summary(value=[value]).SerializeToString()  # about 20 kB

    step = 0
    print("READY", flush=True)
    while True:
        for _ in range(rng.randint(1, 400)):
            if step % 97 == 0:
                writer.add_summary(histogram(step), step)
            else:
                writer.add_scalar("x", float(step), step)
            step += 1
        if rng.random() < 0.4:
            writer.flush()
            print("FLUSHED", step, flush=True)
        else:
            print("ADDED", step, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill_9_keeps_files_readable_and_flushed_events(tmp_path, trial):
    logdir = str(tmp_path / "run")
    rng = random.Random(1000 + trial)
    with Child(CHILD, logdir, str(trial)) as child:
        child.expect("READY")
        for _ in range(rng.randint(1, 25)):
            child.line()
        child.kill()
        assert child.wait() == -9
        lines = child.seen + child.rest()  # markers still in the pipe were printed too
    flushed = max(markers(lines, "FLUSHED"), default=0)

    files = read_run(logdir)
    assert files or not flushed, "a flush returned, yet no event file exists"
    assert all(f.tail == 0 for f in files[:-1]), "only the last file may end in a torn record"
    steps = []
    for f in files:
        if f.events:
            assert f.events[0].file_version == "brain.Event:2"
        for event in f.events[1:]:
            (value,) = event.summary.value
            assert value.tag == ("h" if event.step % 97 == 0 else "x")
            if value.tag == "x":
                assert value.simple_value == event.step
            steps.append(event.step)
    assert steps == list(range(len(steps))), "events missing, repeated or out of order"
    assert len(steps) >= flushed, f"{flushed} events were flushed, {len(steps)} on disk"
