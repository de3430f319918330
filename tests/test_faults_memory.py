"""Memory on slow but moving storage: the events held stay within ``max_pending_bytes``.

The bound is ``max_pending_bytes`` for every event the writer holds (each counted as
its payload plus ``ITEM_OVERHEAD``): those waiting in the deque *and* the batch the
drain took off it and is writing, whose room comes back only once the sink took all
of its bytes. A sink that takes every write after a pause (5 ms or 2 ms, blocking its
file's thread as a slow NFS write does) while a caller floods the writer with the
``block`` policy:

* every write the sink sees is at most one batch of framed bytes (the drain never
  takes more than a batch, however much is pending);
* at every write, ``stats().pending_bytes`` (queued events and the batch in that
  write) is within ``max_pending_bytes``, and so is ``stats().peak_pending_bytes``;
* the blocked caller is woken each time a write frees room: the flood (many times
  the bound) finishes, nothing is dropped or lost, every event is on disk in order
  (TensorBoard's loader and ``tf.data``), counts exact.

Both for 4 KiB summaries and for scalars (tiny events, where the per-event overhead
dominates). The resident-memory side of it is measured in ``benchmarks/memory.py``.
"""

from __future__ import annotations

import time

import pytest

from asyncsummary import AsyncSummaryWriter, FileSink
from asyncsummary.testing import WrappedSink

from .procs import DEADLINE, read_run


class _SlowRecordingSink(WrappedSink):
    """Pauses before each write on the file's thread; records what the engine held then."""

    def __init__(
        self, inner, delay: float, samples: list[tuple[int, int]], writer_box: list
    ) -> None:
        super().__init__(inner)
        self.delay = delay
        self.samples = samples  # (bytes offered to this write, pending bytes at that time)
        self.writer_box = writer_box

    async def write(self, data: memoryview) -> int:
        pending = self.writer_box[0].stats().pending_bytes if self.writer_box else 0
        self.samples.append((len(data), pending))
        await self.inner.run_blocking(time.sleep, self.delay)
        return await self.inner.write(data)


def _image_summary(step: int, size: int) -> bytes:
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(
        height=1,
        width=1,
        colorspace=1,
        encoded_image_string=step.to_bytes(8, "little") * (size // 8),
    )
    return Summary(value=[Summary.Value(tag="img", image=image)]).SerializeToString()


@pytest.mark.parametrize(
    ("kind", "events", "max_pending", "batch", "delay"),
    [
        ("4k-summaries", 2048, 1 << 20, 64 << 10, 0.005),
        ("scalars", 20_000, 256 << 10, 16 << 10, 0.002),
    ],
)
def test_slow_moving_storage_holds_at_most_the_bound_plus_one_batch(
    logdir, kind, events, max_pending, batch, delay
):
    samples: list[tuple[int, int]] = []
    box: list[AsyncSummaryWriter] = []
    writer = AsyncSummaryWriter(
        logdir,
        max_pending_bytes=max_pending,
        batch_bytes=batch,
        policy="block",
        block_timeout=DEADLINE,
        flush_secs=0.05,
        sink_factory=lambda path: _SlowRecordingSink(FileSink(path), delay, samples, box),
    )
    box.append(writer)
    try:
        for step in range(events):
            if kind == "scalars":
                writer.add_scalar("loss", step, step)
            else:
                writer.add_summary(_image_summary(step, 4096), step)
        writer.flush(timeout=DEADLINE)
        stats = writer.stats()
    finally:
        writer.close(timeout=DEADLINE)

    assert stats.dropped == stats.lost == stats.rejected == 0
    assert stats.written == stats.queued == events
    assert stats.peak_pending_bytes <= max_pending
    assert len(samples) > 20, "the storage was not slow enough to test anything"
    worst_write = max(size for size, _ in samples[1:])  # samples[0]: the file's header alone
    assert worst_write <= batch, f"the drain wrote {worst_write} bytes at once, batch_bytes={batch}"
    worst_held = max(pending for _, pending in samples)
    assert worst_held <= max_pending, f"held {worst_held} bytes with a write under way"
    # The batch in the write is counted: the pending bytes never read 0 while writing.
    assert min(pending for _, pending in samples[1:]) > 0

    files = read_run(logdir)
    assert [f.tail for f in files] == [0]
    steps = [e.step for e in files[0].events if e.HasField("summary")]
    assert steps == list(range(events))
