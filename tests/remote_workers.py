"""Child processes of the multi-process remote test (importable by ``spawn`` children).

Kept apart from the test module so a spawned child imports only this and the
library, not pytest and the test's servers.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any


def rank_writer(
    rank: int, url: str, spool: str, events: int, env: dict[str, str], start: Any, results: Any
) -> None:
    """Rank ``rank`` of a job: wait for the common start, write ``events`` scalars
    tagged ``r<rank>`` with rotation to ``url``, close, and report what it counted."""
    os.environ.update(env)
    report: dict[str, Any] = {"rank": rank, "pid": os.getpid(), "errors": []}
    try:
        from asyncsummary import AsyncSummaryWriter
        from asyncsummary.remote import RemoteSinkFactory

        factory = RemoteSinkFactory(spool_dir=spool, min_segment_secs=0, max_backoff=0.2)
        start.wait(60)
        # Small files: every rank rotates several times (a new sink, a new spool
        # folder, a scan for dead writers' folders) while the others do the same.
        writer = AsyncSummaryWriter(
            url, flush_secs=0.02, max_file_bytes=1024, sink_factory=factory, close_timeout=60
        )
        for step in range(events):
            try:
                writer.add_scalar(f"r{rank}", float(step), step)
            except Exception as exc:  # noqa: BLE001 - counted, reported to the test
                report["errors"].append(f"add {step}: {exc!r}")
            if step % 50 == 49:
                try:
                    writer.flush(timeout=60)
                except Exception as exc:  # noqa: BLE001
                    report["errors"].append(f"flush {step}: {exc!r}")
            if step % 100 == 0:
                time.sleep(0.001)  # let the ranks interleave
        try:
            writer.close(timeout=60)
        except Exception as exc:  # noqa: BLE001
            report["errors"].append(f"close: {exc!r}")
        stats = writer.stats()
        report.update(
            added=events,
            queued=stats.queued,
            written=stats.written,
            dropped=stats.dropped,
            lost=stats.lost,
            rejected=stats.rejected,
            write_errors=stats.write_errors,
            files=len(stats.files),
        )
    except BaseException:  # noqa: BLE001 - the test shows it
        report["errors"].append(traceback.format_exc())
    results.put(report)
