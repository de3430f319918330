"""Memory while the storage is stalled or slow and events keep coming: the bound holds.

The target: the resident memory a writer adds stays within ``max_pending_bytes`` (the
events it holds, queued or being written, counted as the writer counts: payload +
``ITEM_OVERHEAD``) plus one batch (the framed copy the drain makes of the batch it
writes: ``batch_bytes``, or one event when an event is larger than that). Each case
floods one writer with four times ``max_pending_bytes`` of summaries of 100 bytes
(about a scalar's), 16 KiB and 1 MiB (an image; payloads of 64 KiB and more are
written as they are, never copied):

* **stalled** storage (``asyncsummary.testing.GatedSink``, gate closed):

  * ``drop_oldest``: every add returns at once; the oldest pending events are dropped
    (counted in ``stats().dropped``) so that the pending bytes stay within the bound.
  * ``block`` (the default policy) with a short ``block_timeout``: adds return until
    the bound is reached; the next one waits, then raises ``PendingLimitError``.

* **slow but moving** storage (``asyncsummary.testing.DelayedSink``: every write
  first blocks the file's thread for 5 ms, as a slow NFS write does), ``block``
  policy: the flood goes through at the storage's pace,
  the caller waiting for room, while the drain frames and writes batch after batch.

Each runs in a fresh child process, so its resident set is its own: the peak RSS
(``VmHWM``, reset just before the flood) minus the RSS just before it is compared
with ``max_pending_bytes`` (``growth/bound``) and with the bound plus one batch
(``growth/(bound+batch)``: at most 1 is the target), next to
``stats().peak_pending_bytes`` (the writer's own accounting). Then the writer closes,
writing what it kept.

``--before REF`` runs every case a second time on the library as of git ``REF``
(extracted to a temporary folder, with this checkout's compiled encoder when the
ref's C source is the same; the benchmark code is this one), for a before/after
table in one run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from typing import Any

from . import command_line, jsonable, temp_logdir

__all__ = ["main", "run"]

#: Serialized summary sizes flooded: about a scalar's, 16 KiB, 1 MiB (an image).
EVENT_SIZES = (100, 16 << 10, 1 << 20)

#: Slow but moving storage's pause before every write.
SLOW_WRITE_SECONDS = 0.005

#: The writers' batch (AsyncSummaryWriter's default).
BATCH_BYTES = 512 << 10


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


def flood(storage: str, policy: str, max_pending: int, factor: int, event_bytes: int) -> dict[str, Any]:
    """In this process: stall (or slow down) a writer, flood it, measure; then close."""
    from asyncsummary import AsyncSummaryWriter, FileSink, PendingLimitError, _encoder
    from asyncsummary._engine import ITEM_OVERHEAD
    from asyncsummary.testing import DelayedSink, GatedSink

    from . import image_summary_bytes

    template = image_summary_bytes("flood", max(event_bytes - 32, 8))
    template = template[: len(template) - 8]
    # ``factor`` times the bound, counted as the writer counts (payload + ITEM_OVERHEAD).
    count = factor * max_pending // (len(template) + 8 + ITEM_OVERHEAD)
    gate = threading.Event()
    sinks: list[Any] = []

    def sink_factory(path: str) -> Any:
        sink = GatedSink(FileSink(path), gate) if storage == "stalled" else DelayedSink(FileSink(path), SLOW_WRITE_SECONDS)
        sinks.append(sink)
        return sink

    with temp_logdir("asb-mem-") as logdir:
        writer = AsyncSummaryWriter(
            logdir,
            max_pending_bytes=max_pending,
            policy=policy,
            block_timeout=0.5 if storage == "stalled" else 300,
            batch_bytes=BATCH_BYTES,
            sink_factory=sink_factory,
        )
        try:
            writer.add_summary(template + bytes(8), 0)
            if storage == "stalled":  # stall the writer first: one event, flushed into the closed gate
                flushing = threading.Thread(target=lambda: writer.flush(timeout=120), daemon=True)
                flushing.start()
                deadline = time.monotonic() + 30
                while not (sinks and sinks[0].entered.wait(0.05)):  # made on the loop: poll, bounded
                    if time.monotonic() > deadline:
                        raise RuntimeError("the gated sink never started a write")
                    time.sleep(0.01)
            else:  # the file is open and its thread started before the measurement
                writer.flush(timeout=120)
            before = _rss_kib("VmRSS")
            peak_reset = _reset_peak()
            added = 0
            limit_error = None
            started = time.perf_counter()
            for step in range(1, count + 1):
                try:
                    writer.add_summary(template + step.to_bytes(8, "little"), step)
                except PendingLimitError as exc:
                    limit_error = str(exc)
                    break
                added += 1
            if storage == "slow":
                writer.flush(timeout=300)  # the drain's last batches are part of the peak
            seconds = time.perf_counter() - started
            peak = _rss_kib("VmHWM") if peak_reset else _rss_kib("VmRSS")
            stats = writer.stats()
        finally:
            gate.set()
            writer.close(timeout=120)
        final = writer.stats()
    growth = (peak - before) * 1024
    # One batch: what the drain frames at once (at least one event, however large).
    batch = max(BATCH_BYTES, len(template) + 8 + ITEM_OVERHEAD)
    return {
        "storage": storage,
        "policy": policy,
        "encoder": _encoder.IMPLEMENTATION,
        "max_pending_bytes": max_pending,
        "batch_bytes": BATCH_BYTES,
        "batch": batch,
        "flood_events": count,
        "event_bytes": len(template) + 8,
        "flood_bytes": count * (len(template) + 8 + ITEM_OVERHEAD),
        "flood_seconds": seconds,
        "added": added,
        "pending_limit_error": limit_error,
        "peak_pending_bytes": stats.peak_pending_bytes,
        "pending_bytes_at_peak": stats.pending_bytes,
        "dropped": stats.dropped,
        "rss_before_bytes": before * 1024,
        "rss_peak_bytes": peak * 1024,
        "rss_growth_bytes": growth,
        "rss_growth_vs_bound": growth / max_pending,
        "rss_growth_vs_bound_plus_batch": growth / (max_pending + batch),
        "peak_pending_vs_bound": stats.peak_pending_bytes / max_pending,
        "peak_is_vmhwm": peak_reset,
        "bound_held": stats.peak_pending_bytes <= max_pending,
        "written_after_release": final.written,
        "lost": final.lost,
    }


def _in_child(cwd: str, storage: str, policy: str, max_pending: int, factor: int, event_bytes: int) -> dict[str, Any]:
    args = [storage, policy, str(max_pending), str(factor), str(event_bytes)]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "--child", *args],
        cwd=cwd, capture_output=True, text=True, timeout=600, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory child ({' '.join(args)}) failed with {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _cases(cwd: str, max_pending: int) -> dict[str, Any]:
    cases = {
        f"stalled, {policy}, {size} B events": ("stalled", policy, size)
        for size in EVENT_SIZES
        for policy in ("drop_oldest", "block")
    }
    cases.update({f"slow 5 ms/write, block, {size} B events": ("slow", "block", size) for size in EVENT_SIZES})
    return {key: _in_child(cwd, storage, policy, max_pending, 4, size) for key, (storage, policy, size) in cases.items()}


def _library_at(ref: str, root: str, into: str) -> None:
    """``into``: asyncsummary as of git ``ref``, and this benchmark package (linked)."""
    archive = subprocess.run(
        ["git", "-C", root, "archive", "--format=tar", ref, "asyncsummary"], capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # 3.10.12+
            tar.extractall(into, **safe)  # type: ignore[arg-type]
    os.symlink(os.path.join(root, "benchmarks"), os.path.join(into, "benchmarks"))
    here, there = os.path.join(root, "asyncsummary"), os.path.join(into, "asyncsummary")
    sources = [name for name in ("_native.c", "_queue.c", "_native.h") if os.path.exists(os.path.join(here, name))]
    if all(_same_file(os.path.join(here, name), os.path.join(there, name)) for name in sources):
        # The same extension, compiled: compare the engines, not the encoders.
        for name in os.listdir(here):
            if name.startswith("_native.") and name.endswith(".so"):
                shutil.copy(os.path.join(here, name), there)


def _same_file(a: str, b: str) -> bool:
    if not os.path.exists(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def run(quick: bool = False, before: str | None = None) -> dict[str, Any]:
    """Every case on this library; with ``before``, also on the library as of that git ref."""
    max_pending = (4 if quick else 32) << 20
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = _cases(root, max_pending)
    if before is not None:
        old = tempfile.mkdtemp(prefix="asb-mem-before-")
        try:
            _library_at(before, root, old)
            result.update({f"before ({before}): {key}": r for key, r in _cases(old, max_pending).items()})
        finally:
            shutil.rmtree(old, ignore_errors=True)
    return result


def table(result: dict[str, Any]) -> list[str]:
    lines = ["memory, flood of 4x max_pending_bytes (batch_bytes 512 KiB; batch: one event when larger):"]
    lines.append(
        f"  {'storage, policy, event size':<52}{'bound MiB':>10}{'flood MiB':>10}{'peak pending MiB':>18}"
        f"{'RSS growth MiB':>16}{'growth/bound':>14}{'growth/(bound+batch)':>22}{'dropped':>9}"
    )
    for case, r in result.items():
        lines.append(
            f"  {case:<52}{r['max_pending_bytes'] / 2**20:>10.1f}{r['flood_bytes'] / 2**20:>10.1f}"
            f"{r['peak_pending_bytes'] / 2**20:>18.2f}{r['rss_growth_bytes'] / 2**20:>16.2f}"
            f"{r['rss_growth_vs_bound']:>14.2f}{r['rss_growth_vs_bound_plus_batch']:>22.2f}{r['dropped']:>9}"
        )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # one flood in a fresh process, as run() starts them
        storage, policy, max_pending, factor, event_bytes = argv[1:6]
        result = flood(storage, policy, int(max_pending), int(factor), int(event_bytes))
        print(json.dumps(jsonable(result)))
        return result
    before = None
    if "--before" in argv:  # python -m benchmarks.memory --before REF [--quick] [--json F]
        i = argv.index("--before")
        before, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    return command_line(__doc__ or "", lambda quick: run(quick, before), table, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
