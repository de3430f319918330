"""Every open writer engine of the process: closed at exit, reset in a forked child.

At interpreter exit (``atexit``, which runs after non-daemon threads have finished)
every engine still open is closed, all at once, within :data:`EXIT_TIMEOUT` seconds in
total (each writer at most its ``close_timeout``), so a job that forgets ``close()``
keeps its events and a dead storage server cannot hang the exit. A ``multiprocessing``
child started by fork skips ``atexit``; there the same close runs from
multiprocessing's exit finalizers. ``flush_all``/``aflush_all`` serve services and
signal handlers.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._engine import WriterEngine

__all__ = ["EXIT_TIMEOUT", "aflush_all", "close_all", "flush_all", "open_engines"]

#: Seconds that all open writers together get to finish at exit.
EXIT_TIMEOUT = 30.0

_lock = threading.Lock()
_engines: dict[int, WriterEngine] = {}
_exit_hooked_pid = os.getpid()  # atexit covers this process (see below for others)


def register(engine: WriterEngine) -> None:
    with _lock:
        _engines[id(engine)] = engine
    if _exit_hooked_pid != os.getpid():
        _close_at_multiprocessing_exit()


def unregister(engine: WriterEngine) -> None:
    with _lock:
        _engines.pop(id(engine), None)


def open_engines() -> list[WriterEngine]:
    with _lock:
        return list(_engines.values())


def flush_all(timeout: float = 30.0) -> None:
    """Flush every open writer of the process; raise the first error after trying all."""
    deadline = time.monotonic() + timeout
    first: BaseException | None = None
    for engine in open_engines():
        try:
            engine.flush(max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - every writer gets its flush
            first = first or exc
    if first is not None:
        raise first


async def aflush_all(timeout: float = 30.0) -> None:
    """``flush_all`` for coroutines: the running loop keeps running while it waits."""
    results = await asyncio.gather(
        *(engine.aflush(timeout) for engine in open_engines()), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


def close_all(timeout: float = EXIT_TIMEOUT) -> list[BaseException]:
    """Close every open writer concurrently within ``timeout`` seconds in total.

    Each writer gets at most its own ``close_timeout`` of that (the writer's documented
    bound of close and exit), so a hung storage delays the exit only that long.
    """
    engines = open_engines()
    errors: list[BaseException] = []
    threads = []
    for engine in engines:

        def close(engine: Any = engine) -> None:
            try:
                engine.close(min(timeout, engine.close_timeout))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        thread = threading.Thread(target=close, name="asyncsummary-exit", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout + 2.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return errors


def _close_at_exit() -> None:
    for error in close_all():
        # The interpreter is going away; stderr is the only place left to say it.
        print(f"asyncsummary: at exit: {error}", file=sys.stderr)


def _close_at_multiprocessing_exit() -> None:
    """In a ``multiprocessing`` child, close the writers from its exit finalizers.

    A child started with the fork method (DataLoader workers, ``Pool``) ends with
    ``os._exit``, so ``atexit`` never runs there; multiprocessing's own exit
    finalizers do. (Registered on the first writer, after multiprocessing has reset
    the finalizers it inherited.)
    """
    global _exit_hooked_pid
    _exit_hooked_pid = os.getpid()
    process = sys.modules.get("multiprocessing.process")
    if process is not None and process.parent_process() is not None:
        from multiprocessing import util

        util.Finalize(None, _close_at_exit, exitpriority=10)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for engine in list(_engines.values()):
        engine.after_fork_in_child()


atexit.register(_close_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
