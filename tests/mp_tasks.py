"""Targets for ``multiprocessing`` children in the fault tests (importable by every start method).

Importing this module imports nothing of asyncsummary: each task imports the library
itself, inside the child, unless the process already has it (inherited from a forking
parent or forkserver, or imported while loading the parent's main module).

Each child also reports where its library came from, as seen on entry to the first
function of this module it runs (a task, or a pool's initializer), before any import
here: whether ``asyncsummary`` was already in ``sys.modules``, and the
``IMPORTED_BY`` pid that the parent's main script records next to its own
``import asyncsummary`` (None where the main module of this process never imported it).
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: The child's writers, kept alive until its exit (which must write them).
_writers: dict[str, Any] = {}

#: Large enough that nothing is written before the exit: no timer, no batch wake-up.
_NEVER = {"flush_secs": 3600.0, "batch_bytes": 64 << 20}

#: By pid (a forked child inherits this dict): where the library came from, at the first
#: entry into this module in that process.
_origin: dict[int, tuple[bool, int | None]] = {}


def _note_origin() -> tuple[bool, int | None]:
    """(``asyncsummary`` imported before this process's first task or initializer ran,
    the pid whose main module imported it or None): recorded once per process."""
    pid = os.getpid()
    if pid not in _origin:
        main = sys.modules.get("__main__")
        _origin[pid] = ("asyncsummary" in sys.modules, getattr(main, "IMPORTED_BY", None))
    return _origin[pid]


def _writer(logdir: str) -> Any:
    from asyncsummary import AsyncSummaryWriter

    writer = _writers.get(logdir)
    if writer is None:
        writer = _writers[logdir] = AsyncSummaryWriter(logdir, **_NEVER)
    return writer


def add_and_exit(logdir: str, tag: str, count: int) -> tuple[int, bool, int | None]:
    """Add ``count`` scalars and return without ``close()``; the process then ends.

    Returns (this pid, the library imported before the first task here, the pid whose
    main module imported it)."""
    origin = _note_origin()
    writer = _writer(logdir)
    for step in range(count):
        writer.add_scalar(tag, float(step), step)
    return (os.getpid(), *origin)


def add_and_report(results: Any, logdir: str, tag: str, count: int) -> None:
    """A ``Process`` target: :func:`add_and_exit`, its result sent on ``results`` (the
    writing end of a ``Pipe``: sent before this returns, no feeder thread)."""
    results.send(add_and_exit(logdir, tag, count))
    results.close()


def install_flush_on_sigterm() -> None:
    """A ``Pool`` initializer: flush every writer when the pool terminates the worker."""
    _note_origin()
    from asyncsummary import install_shutdown_handlers

    install_shutdown_handlers()
