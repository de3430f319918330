"""Memory while the storage is stalled and events keep coming: the bound holds.

A writer whose sink is stalled (``asyncsummary.testing.GatedSink``, gate closed)
receives a flood of summaries (about a scalar's size, and 1 KiB), four times
``max_pending_bytes`` in all (counted as the writer counts: payload + ``ITEM_OVERHEAD``):

* ``drop_oldest``: every add returns at once; the oldest pending events are dropped
  (counted in ``stats().dropped``) so that the pending bytes stay within the bound.
* ``block`` (the default policy) with a short ``block_timeout``: adds return until
  the bound is reached; the next one waits, then raises ``PendingLimitError``.

Each runs in a fresh child process, so its resident set is its own: the peak RSS
(``VmHWM``) over the flood, minus the RSS just before it, is compared with
``max_pending_bytes``, next to ``stats().peak_pending_bytes`` (the writer's own
accounting: payload plus ``ITEM_OVERHEAD`` bytes per event). Then the gate opens and the writer
closes, writing what it kept. The drain may hold one more batch (the one stalled in
the sink) beyond the bound, by design.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from . import command_line, jsonable, temp_logdir

__all__ = ["main", "run"]

#: Serialized summary sizes flooded: about a scalar's, and 1 KiB.
EVENT_SIZES = (32, 1024)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def flood(policy: str, max_pending: int, factor: int, event_bytes: int) -> dict[str, Any]:
    """In this process: stall a writer, flood it, measure; then release and close."""
    from asyncsummary import AsyncSummaryWriter, FileSink, PendingLimitError
    from asyncsummary._engine import ITEM_OVERHEAD
    from asyncsummary.testing import GatedSink

    from . import image_summary_bytes

    template = image_summary_bytes("flood", max(event_bytes - 32, 8))
    template = template[: len(template) - 8]
    # ``factor`` times the bound, counted as the writer counts (payload + ITEM_OVERHEAD).
    count = factor * max_pending // (len(template) + 8 + ITEM_OVERHEAD)
    gate = threading.Event()
    sinks: list[GatedSink] = []

    def sink_factory(path: str) -> GatedSink:
        sink = GatedSink(FileSink(path), gate)
        sinks.append(sink)
        return sink

    with temp_logdir("asb-mem-") as logdir:
        writer = AsyncSummaryWriter(
            logdir, max_pending_bytes=max_pending, policy=policy, block_timeout=0.5, sink_factory=sink_factory
        )
        try:
            # Stall the writer first: one event, flushed into the closed gate.
            writer.add_summary(template + bytes(8), 0)
            flushing = threading.Thread(target=lambda: writer.flush(timeout=120), daemon=True)
            flushing.start()
            deadline = time.monotonic() + 30
            while not (sinks and sinks[0].entered.wait(0.05)):  # made on the loop: poll, bounded
                if time.monotonic() > deadline:
                    raise RuntimeError("the gated sink never started a write")
                time.sleep(0.01)
            before = _rss_kib("VmRSS")
            peak_reset = _reset_peak()
            added = 0
            limit_error = None
            for step in range(1, count + 1):
                try:
                    writer.add_summary(template + step.to_bytes(8, "little"), step)
                except PendingLimitError as exc:
                    limit_error = str(exc)
                    break
                added += 1
            peak = _rss_kib("VmHWM") if peak_reset else _rss_kib("VmRSS")
            stats = writer.stats()
        finally:
            gate.set()
            writer.close(timeout=120)
        final = writer.stats()
    growth = (peak - before) * 1024
    return {
        "policy": policy,
        "max_pending_bytes": max_pending,
        "flood_events": count,
        "event_bytes": len(template) + 8,
        "flood_bytes": count * (len(template) + 8 + ITEM_OVERHEAD),
        "added": added,
        "pending_limit_error": limit_error,
        "peak_pending_bytes": stats.peak_pending_bytes,
        "pending_bytes_at_peak": stats.pending_bytes,
        "dropped": stats.dropped,
        "rss_before_bytes": before * 1024,
        "rss_peak_bytes": peak * 1024,
        "rss_growth_bytes": growth,
        "rss_growth_vs_bound": growth / max_pending,
        "peak_pending_vs_bound": stats.peak_pending_bytes / max_pending,
        "peak_is_vmhwm": peak_reset,
        "bound_held": stats.peak_pending_bytes <= max_pending,
        "written_after_release": final.written,
        "lost": final.lost,
    }


def _in_child(policy: str, max_pending: int, factor: int, event_bytes: int) -> dict[str, Any]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "--child", policy, str(max_pending), str(factor), str(event_bytes)],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory child ({policy}) failed with {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(quick: bool = False) -> dict[str, Any]:
    max_pending = (4 if quick else 32) << 20
    return {
        f"{policy}, {size} B events": _in_child(policy, max_pending, 4, size)
        for size in EVENT_SIZES
        for policy in ("drop_oldest", "block")
    }


def table(result: dict[str, Any]) -> list[str]:
    lines = ["memory, stalled sink, flood of 4x max_pending_bytes:"]
    lines.append(
        f"  {'policy, event size':<26}{'bound MiB':>10}{'flood MiB':>10}{'peak pending MiB':>18}"
        f"{'RSS growth MiB':>16}{'growth/bound':>14}{'dropped':>9}  bound held"
    )
    for policy, r in result.items():
        lines.append(
            f"  {policy:<26}{r['max_pending_bytes'] / 2**20:>10.1f}{r['flood_bytes'] / 2**20:>10.1f}"
            f"{r['peak_pending_bytes'] / 2**20:>18.2f}{r['rss_growth_bytes'] / 2**20:>16.2f}"
            f"{r['rss_growth_vs_bound']:>14.2f}{r['dropped']:>9}  {r['bound_held']}"
        )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # one flood in a fresh process, as run() starts them
        policy, max_pending, factor, event_bytes = argv[1:5]
        result = flood(policy, int(max_pending), int(factor), int(event_bytes))
        print(json.dumps(jsonable(result)))
        return result
    return command_line(__doc__ or "", run, table, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
