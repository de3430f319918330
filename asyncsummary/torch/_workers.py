"""The small pool of worker threads that build summaries off the caller's thread.

One pool per process, shared by every torch-style writer, started on first use (again
in a forked child, which must not count on its parent's threads). Its threads are
daemon threads (:class:`~asyncsummary._loop.DaemonThreadPoolExecutor`), so a stuck
build never keeps the interpreter from exiting. Two workers: builds are mostly NumPy,
zlib and protobuf work that releases the GIL in its heavy parts; more threads would
only take the GIL from the training thread more often.

Order is not the pool's business: each writer's engine awaits the futures in the order
of the calls, so two builds of one writer may run side by side and still be written in
call order.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

from .._loop import DaemonThreadPoolExecutor
from ._builders import Job

__all__ = ["MAX_WORKERS", "discard", "start"]

MAX_WORKERS = 2

_lock = threading.RLock()  # reentrant: see _engine.add
_executor: DaemonThreadPoolExecutor | None = None
_pid = -1


def _pool() -> DaemonThreadPoolExecutor:
    global _executor, _pid
    executor = _executor
    if executor is not None and _pid == os.getpid():
        return executor
    with _lock:
        if _executor is None or _pid != os.getpid():
            _executor = DaemonThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="asyncsummary-build")
            _pid = os.getpid()
        return _executor


def start(job: Job, future: concurrent.futures.Future[list[tuple[int, bytes]]]) -> None:
    """Run ``job`` on a worker and resolve ``future`` (already queued) with its payloads."""
    _pool().submit(_run, job, future)


def discard(job: Job) -> None:
    """Release a job's snapshots on a worker (it may wait for a device copy to land)."""
    _pool().submit(job.discard)


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


def _after_fork_in_child() -> None:
    global _executor, _lock
    _lock = threading.RLock()
    _executor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
