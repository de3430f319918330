"""Load: 8 threads x 60 000 events, through one writer and through 20 writers.

Every thread adds scalars tagged with its index, step and value = its sequence
number, as fast as it can, against a small pending bound (``block`` policy), so the
threads spend much of the run waiting for room. Then, read back by TensorBoard's
loader and TF:

* nothing is lost: every event of every thread is on disk exactly once;
* each thread's events are in its call order (per writer);
* the pending memory never went above ``max_pending_bytes`` (the engine's own
  high-water mark, taken where the pending bytes peak: right before each drain).

The 20 writers share the one background loop; each thread spreads its events over
all of them.
"""

from __future__ import annotations

import threading

import pytest

from asyncsummary import AsyncSummaryWriter

from .procs import read_run

THREADS, EVENTS = 8, 60_000


def _produce(writers: list[AsyncSummaryWriter], errors: list[BaseException]) -> None:
    """Run the 8 producer threads; thread k sends event i to writer (i + k) % len."""
    start = threading.Barrier(THREADS)

    def produce(k: int) -> None:
        try:
            tag, count = f"t{k}", len(writers)
            adds = [w.add_scalar for w in writers]
            start.wait()
            for i in range(EVENTS):
                adds[(i + k) % count](tag, i, i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _by_tag(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] in file order, after checking every file reads whole."""
    out: dict[str, list[tuple[int, float]]] = {}
    for f in read_run(logdir):
        assert f.tail == 0
        for event in f.events[1:]:
            (value,) = event.summary.value
            out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("writer_count, bound", [(1, 1 << 20), (20, 256 << 10)])
def test_threads_through_shared_writers_lose_nothing_and_keep_order(tmp_path, writer_count, bound):
    logdirs = [str(tmp_path / f"run{n}") for n in range(writer_count)]
    writers = [
        AsyncSummaryWriter(d, max_pending_bytes=bound, batch_bytes=64 << 10, block_timeout=120)
        for d in logdirs
    ]
    errors: list[BaseException] = []
    try:
        _produce(writers, errors)
    finally:
        for writer in writers:
            writer.close()
    assert not errors, errors
    for writer in writers:
        stats = writer.stats()
        assert stats.queued == stats.written == THREADS * EVENTS // writer_count
        assert stats.dropped == stats.lost == stats.rejected == 0
        assert 0 < stats.peak_pending_bytes <= bound
    expected: dict[str, list[int]] = {f"t{k}": [] for k in range(THREADS)}
    for n, logdir in enumerate(logdirs):
        for tag, events in _by_tag(logdir).items():
            steps = [step for step, _ in events]
            # Thread k sent writer n exactly the steps i with (i + k) % count == n, in order.
            k = int(tag[1:])
            assert steps == list(range((n - k) % writer_count, EVENTS, writer_count)), tag
            assert all(step == value for step, value in events)
            expected[tag].extend(steps)
    assert {tag: sorted(steps) for tag, steps in expected.items()} == {
        f"t{k}": list(range(EVENTS)) for k in range(THREADS)
    }
