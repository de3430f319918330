"""The hook benchmark again, on storage where every write takes 5 ms or 50 ms.

Latency is injected in two ways.

**At each writer's storage layer** (the same place in both, one sleep per call):

* TensorFlow: ``tf.compat.v1.summary.FileWriter``'s writer thread
  (``_EventLoggerThread`` in ``tensorflow/python/summary/writer/event_file_writer.py``)
  calls ``WriteEvent`` and ``Flush`` on its C++ ``EventsWriter``. The benchmark
  replaces that object, on the thread, with :class:`SlowEventsWriter`, which sleeps
  ``delay`` (``time.sleep``, the GIL released) before forwarding each of the two calls.
  TF's writer calls ``WriteEvent`` once per event.
* asyncsummary: ``sink_factory=lambda p: DelayedSink(FileSink(p), delay)``
  (``asyncsummary.testing``): every sink ``write`` first blocks an I/O executor thread
  for ``delay``; the writer calls ``write`` once per batch of events.

**Through the kernel**, when FUSE can be mounted here: the log folders sit on the
passthrough file system of :mod:`benchmarks.fuse_slowfs`, which sleeps ``delay``
before every WRITE request (at most 128 KiB each) whoever sends it. Both writers run
unmodified; this is slow storage for TF's C++ writer and for ours alike. Where FUSE
is unavailable the result says ``not run`` and why.

On FUSE, :func:`gil_pauses` also measures how long *other* Python threads stop while
each writer writes: TensorFlow's ``EventsWriter`` keeps the GIL during its writes.

Only ``save_steps=1`` is measured: at ``save_steps=100`` TF's 10-slot queue never
fills and no writer stalls the step.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from . import (
    command_line,
    hook_overhead,
    image_summary_bytes,
    quiet_tensorflow,
    temp_logdir,
)

__all__ = ["SlowEventsWriter", "gil_pauses", "main", "run", "slow_async_writer", "slow_tf_writer"]

DELAYS = (0.005, 0.05)


class SlowEventsWriter:
    """Stands in for TF's C++ ``EventsWriter`` on its writer thread; slow writes and flushes."""

    def __init__(self, inner: Any, delay: float) -> None:
        self._inner = inner
        self._delay = delay
        self.calls = 0

    def WriteEvent(self, event: Any) -> Any:  # noqa: N802 - TF's method name
        time.sleep(self._delay)
        self.calls += 1
        return self._inner.WriteEvent(event)

    def Flush(self) -> Any:  # noqa: N802 - TF's method name
        time.sleep(self._delay)
        self.calls += 1
        return self._inner.Flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def slow_tf_writer(delay: float) -> hook_overhead.WriterFactory:
    """Makes TF ``FileWriter``s whose writer thread writes through :class:`SlowEventsWriter`."""

    def make(logdir: str) -> Any:
        writer = hook_overhead.tf_file_writer(logdir)
        worker = writer.event_writer._worker  # the _EventLoggerThread
        if not hasattr(worker, "_ev_writer"):
            raise RuntimeError("TensorFlow's writer thread has no _ev_writer: its layout changed")
        worker._ev_writer = SlowEventsWriter(worker._ev_writer, delay)
        return writer

    return make


def slow_async_writer(delay: float) -> hook_overhead.WriterFactory:
    """Makes ``AsyncSummaryWriter``s whose every sink write sleeps ``delay`` first."""

    def make(logdir: str) -> Any:
        from asyncsummary import AsyncSummaryWriter, FileSink
        from asyncsummary.testing import DelayedSink

        return AsyncSummaryWriter(logdir, sink_factory=lambda path: DelayedSink(FileSink(path), delay))

    return make


def gil_pauses(make_writer: hook_overhead.WriterFactory, parent: str, events: int) -> dict[str, Any]:
    """How long the main thread's Python stops while another thread logs and flushes.

    A thread adds ``events`` summaries of 4 KiB (about one step of the hook benchmark
    each) to a writer in ``parent`` and flushes it; meanwhile the main thread spins a
    Python loop and records the longest gap between two of its iterations, and the
    total time lost in gaps over 1 ms. A writer that keeps the GIL while it waits for
    the storage shows here: every Python thread of the process stops with it.
    """
    payload = image_summary_bytes("pause", 4000)
    with temp_logdir("asb-gil-", parent) as logdir:
        writer = make_writer(logdir)
        done = threading.Event()
        failure: list[BaseException] = []

        def log() -> None:
            try:
                for step in range(events):
                    writer.add_summary(payload, step)
                writer.flush()
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                failure.append(exc)
            finally:
                done.set()

        clock, longest, lost, spins = time.perf_counter, 0.0, 0.0, 0
        thread = threading.Thread(target=log, name="asb-logger", daemon=True)
        start = last = clock()
        thread.start()
        while not done.is_set():
            now = clock()
            gap = now - last
            last = now
            spins += 1
            if gap > longest:
                longest = gap
            if gap > 0.001:
                lost += gap
        elapsed = clock() - start
        thread.join(60)
        writer.close()
    if failure:
        raise failure[0]
    return {"events": events, "seconds": elapsed, "longest_pause_ms": longest * 1000,
            "paused_ms_over_1ms": lost * 1000, "spins": spins}


def _steps_for(delay: float, quick: bool) -> tuple[int, int, int]:
    """(steps per block, rounds, warm-up steps): TF's slowest step is about ``delay``."""
    if quick:
        return 10, 1, 3
    return (150, 3, 20) if delay < 0.02 else (40, 3, 15)


def run(quick: bool = False) -> dict[str, Any]:
    """Injected at the writers' storage layer, then through FUSE, for each delay."""
    quiet_tensorflow()
    from . import fuse_slowfs

    delays = DELAYS[:1] if quick else DELAYS
    result: dict[str, Any] = {"injected": {}, "fuse": {}}
    for delay in delays:
        steps, rounds, warmup = _steps_for(delay, quick)
        result["injected"][f"{delay * 1000:g} ms"] = hook_overhead.compare(
            1, steps, rounds, tf_writer=slow_tf_writer(delay), our_writer=slow_async_writer(delay), warmup=warmup
        )
    reason = fuse_slowfs.unavailable()
    for delay in delays:
        key = f"{delay * 1000:g} ms"
        if reason is not None:
            result["fuse"][key] = {"not run": reason}
            continue
        steps, rounds, warmup = _steps_for(delay, quick)
        try:
            with fuse_slowfs.mounted(delay) as mountpoint:
                part = hook_overhead.compare(1, steps, rounds, warmup=warmup, parent=mountpoint)
                events = 10 if quick else 50
                part["gil_pauses"] = {
                    "TF FileWriter": gil_pauses(hook_overhead.tf_file_writer, mountpoint, events),
                    "AsyncSummaryWriter": gil_pauses(hook_overhead.async_writer, mountpoint, events),
                }
                result["fuse"][key] = part
        except RuntimeError as exc:  # the mount itself failed: say so, as for a missing FUSE
            result["fuse"][key] = {"not run": str(exc)}
    return result


def table(result: dict[str, Any]) -> list[str]:
    lines = []
    for how, parts in (("injected at the writer's storage layer", result["injected"]), ("FUSE", result["fuse"])):
        for delay, part in parts.items():
            if "not run" in part:
                lines.append(f"slow storage {delay} per write, {how}: not run: {part['not run']}")
                continue
            sub = hook_overhead.table({f"save_steps=1, {delay} per write, {how}": part})
            lines.extend(sub)
            for writer, p in part.get("gil_pauses", {}).items():
                lines.append(
                    f"  main thread while {writer} logs {p['events']} events and flushes: longest pause "
                    f"{p['longest_pause_ms']:.1f} ms, {p['paused_ms_over_1ms']:.0f} ms in pauses > 1 ms, "
                    f"of {p['seconds'] * 1000:.0f} ms"
                )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return command_line(__doc__ or "", run, table, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
