"""Several processes on one remote logdir: the shape of a multi-rank job writing to one bucket.

Eight real processes (``spawn`` and ``fork``), started together, write to one
``s3://`` logdir on a loopback S3 server (moto), through one spool root, rotating
to a new event file every ~1 KB, so each rank makes two dozen spool folders and scans
the others' folders for dead writers' while they are being made, written and
removed. Every object is read back (whole records; TensorBoard's loader on a
download): each event exactly once, on disk + lost + dropped + rejected == added,
and no rank saw a ``WriteError`` or a storage error.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue
import uuid

import pytest

from asyncsummary._remote import scan_records

from .readers import tb_run_events
from .remote_workers import rank_writer

BUCKET = "asyncsummary-ranks"
RANKS = 8
EVENTS = 600  # per rank: about 27 event files each


def _run_ranks(method: str, url: str, spool: str, env: dict[str, str]) -> list[dict]:
    ctx = multiprocessing.get_context(method)
    start = ctx.Event()
    results = ctx.Queue()
    procs = [
        ctx.Process(target=rank_writer, args=(rank, url, spool, EVENTS, env, start, results))
        for rank in range(RANKS)
    ]
    reports = []
    try:
        for proc in procs:
            proc.start()
        start.set()  # each rank has imported the library and waits for this
        for _ in procs:
            try:
                reports.append(results.get(timeout=180))
            except queue.Empty:
                raise AssertionError(f"only {len(reports)} of {RANKS} ranks reported") from None
        for proc in procs:
            proc.join(30)
            assert proc.exitcode == 0, f"rank process exited with {proc.exitcode}"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    return sorted(reports, key=lambda r: r["rank"])


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_eight_ranks_with_rotation_on_one_logdir_each_event_once(s3, tmp_path, method):
    prefix = f"run-{method}-{uuid.uuid4().hex[:8]}"
    url = f"s3://{BUCKET}/{prefix}"
    spool = str(tmp_path / "spool")  # one spool root for the whole job, as on one node
    reports = _run_ranks(method, url, spool, s3.env())

    for report in reports:
        assert report["errors"] == [], f"rank {report['rank']}: {report['errors']}"
        assert report["write_errors"] == 0, report
        assert report["files"] >= 5, report  # it did rotate, many times

    objects = s3.objects(BUCKET, prefix + "/")
    copy = tmp_path / "copy"
    copy.mkdir()
    for key, data in objects.items():
        assert scan_records(data)[1] == len(data), f"{key}: not whole, valid records"
        (copy / key.rsplit("/", 1)[1]).write_bytes(data)
    events = tb_run_events(str(copy))  # TensorBoard's loader, objects in name order
    seen = collections.Counter()
    steps_by_rank = collections.defaultdict(list)
    for event in events:
        for value in event.summary.value:
            seen[(value.tag, event.step)] += 1
            steps_by_rank[value.tag].append(event.step)
    assert [key for key, count in seen.items() if count > 1] == []  # nothing twice
    for report in reports:
        rank = report["rank"]
        on_disk = len(steps_by_rank[f"r{rank}"])
        assert on_disk + report["lost"] + report["dropped"] + report["rejected"] == report["added"]
        assert report["lost"] == report["dropped"] == report["rejected"] == 0  # block policy
        assert steps_by_rank[f"r{rank}"] == list(range(EVENTS))  # in order, as TensorBoard reads
    leftovers = [
        n for _, _, names in os.walk(spool) for n in names if n.endswith((".seg", ".part"))
    ]
    assert leftovers == []  # every segment confirmed and removed from the spool
