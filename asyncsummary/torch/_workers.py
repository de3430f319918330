"""Runs the torch-style writer's summary builds on the process's build pool.

The pool (:func:`asyncsummary._loop.build_pool`) is shared with the other facades and
started on first use (again in a forked child, which must not count on its parent's
threads). A build whose writer gave up on it (a cancelled future) only releases its
snapshots.
"""

from __future__ import annotations

import concurrent.futures

from .._loop import BUILD_WORKERS, build_pool
from ._builders import Job

__all__ = ["MAX_WORKERS", "discard", "start"]

MAX_WORKERS = BUILD_WORKERS


def start(job: Job, future: concurrent.futures.Future[list[tuple[int, bytes]]]) -> None:
    """Run ``job`` on a worker and resolve ``future`` (already queued) with its payloads."""
    build_pool().submit(_run, job, future)


def discard(job: Job) -> None:
    """Release a job's snapshots on a worker (it may wait for a device copy to land)."""
    build_pool().submit(job.discard)


def _run(job: Job, future: concurrent.futures.Future[list[tuple[int, bytes]]]) -> None:
    if not future.set_running_or_notify_cancel():  # the writer gave up on it
        job.discard()
        return
    try:
        result = job.run()
    except BaseException as exc:  # noqa: BLE001 - handed to the writer, raised on the caller
        future.set_exception(exc)
    else:
        future.set_result(result)
