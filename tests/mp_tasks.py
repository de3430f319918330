"""Targets for ``multiprocessing`` children in the fault tests (importable by every start method).

Importing this module imports nothing of asyncsummary: each task imports the library
itself, inside the child, which is the case that used to lose every event.
"""

from __future__ import annotations

import os
from typing import Any

#: The child's writers, kept alive until its exit (which must write them).
_writers: dict[str, Any] = {}

#: Large enough that nothing is written before the exit: no timer, no batch wake-up.
_NEVER = {"flush_secs": 3600.0, "batch_bytes": 64 << 20}


def _writer(logdir: str) -> Any:
    from asyncsummary import AsyncSummaryWriter

    writer = _writers.get(logdir)
    if writer is None:
        writer = _writers[logdir] = AsyncSummaryWriter(logdir, **_NEVER)
    return writer


def add_and_exit(logdir: str, tag: str, count: int) -> int:
    """Add ``count`` scalars and return without ``close()``; the process then ends."""
    writer = _writer(logdir)
    for step in range(count):
        writer.add_scalar(tag, float(step), step)
    return os.getpid()


def install_flush_on_sigterm() -> None:
    """A ``Pool`` initializer: flush every writer when the pool terminates the worker."""
    from asyncsummary import install_shutdown_handlers

    install_shutdown_handlers()
