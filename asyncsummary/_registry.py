"""Every open writer engine of the process: closed at exit, reset in a forked child.

At interpreter exit (``atexit``, which runs after non-daemon threads have finished)
every engine still open is closed, all at once, within :data:`EXIT_TIMEOUT` seconds in
total (each writer at most its ``close_timeout``), so a job that forgets ``close()``
keeps its events and a dead storage server cannot hang the exit.

A ``multiprocessing`` child (any start method: fork, spawn, forkserver; ``Pool``
workers and DataLoader workers among them) ends with ``os._exit`` after running
multiprocessing's exit finalizers, so ``atexit`` never runs there. The first writer
registered in a process (whether the library was imported by the parent before a fork
or by the child itself) therefore also installs the same close as a multiprocessing
exit finalizer, once per pid. A child killed by a signal (``Pool.terminate()``) runs
neither. ``flush_all``/``aflush_all`` serve services and signal handlers; they flush
all writers at once, so one hung storage delays the others by nothing.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._errors import WriterClosedError

if TYPE_CHECKING:
    from ._engine import WriterEngine

__all__ = ["EXIT_TIMEOUT", "aflush_all", "close_all", "flush_all", "open_engines"]

#: Seconds that all open writers together get to finish at exit.
EXIT_TIMEOUT = 30.0

#: Reentrant: a signal handler may close a writer (unregister) on the thread that is
#: inside register() or open_engines() with it held.
_lock = threading.RLock()
_engines: dict[int, WriterEngine] = {}
_closing: dict[int, concurrent.futures.Future[None]] = {}  # closes still running
_finalizer_pid = -1  # the process whose multiprocessing exit finalizer is installed

#: Seconds a caller waits past each writer's bound for its flush or close to report.
_JOIN_GRACE = 2.0

#: Multiprocessing runs exit finalizers of priority >= 0 first, in decreasing order.
_EXIT_PRIORITY = 10


def register(engine: WriterEngine) -> None:
    with _lock:
        _engines[id(engine)] = engine
        if engine.closed:  # a signal handler on this thread closed it just now
            _engines.pop(id(engine), None)
        hook = _finalizer_pid != os.getpid()
    if hook:
        _close_at_multiprocessing_exit()


def unregister(engine: WriterEngine) -> None:
    """``engine`` is closing: no longer open, but :func:`flush_all` waits for its close."""
    key = id(engine)
    with _lock:
        _engines.pop(key, None)
        # The engine's drain task; it ends when its close has written everything.
        drain = getattr(engine, "_task_done", None)
        if drain is not None and not drain.done():
            _closing[key] = drain
            drain.add_done_callback(lambda _: _closing.pop(key, None))


def open_engines() -> list[WriterEngine]:
    with _lock:
        return list(_engines.values())


def flush_all(timeout: float = 30.0) -> None:
    """Flush every open writer of the process; raise the first error after trying all.

    The writers flush at the same time, each within ``timeout`` (the bound of the whole
    call): one on hung storage costs the others nothing. The first error, in the order
    the writers were opened, is raised once every flush has ended or timed out.

    It also waits (within the same bound) for closes already under way: a signal that
    lands while the main thread closes a writer (its own ``close()``, or the exit's)
    must not end the process before that close has written what it holds.

    It starts no thread (see :func:`_each_at_once`), and it may be called from a signal
    handler that interrupted this thread inside a writer's ``add``: that writer's wait
    lets its lock go (``WriterEngine._wait``).
    """
    deadline = time.monotonic() + timeout
    errors = _each_at_once(
        open_engines(), lambda engine: engine.start_flush(), lambda engine: timeout, "flush",
        deadline,
    )
    with _lock:
        closing = list(_closing.values())
    concurrent.futures.wait(closing, max(0.0, deadline - time.monotonic()))
    for error in errors:
        if error is not None:
            raise error


async def aflush_all(timeout: float = 30.0) -> None:
    """``flush_all`` for coroutines: the running loop keeps running while it waits."""
    results = await asyncio.gather(
        *(engine.aflush(timeout) for engine in open_engines()), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, WriterClosedError):
            raise result


def close_all(timeout: float = EXIT_TIMEOUT) -> list[BaseException]:
    """Close every open writer concurrently within ``timeout`` seconds in total.

    Each writer gets at most its own ``close_timeout`` of that (the writer's documented
    bound of close and exit), so a hung storage delays the exit only that long.
    """
    deadline = time.monotonic() + timeout + _JOIN_GRACE
    errors = _each_at_once(
        open_engines(),
        lambda engine: engine.start_close(min(timeout, engine.close_timeout)),
        lambda engine: min(timeout, engine.close_timeout),
        "close",
        deadline,
    )
    return [error for error in errors if error is not None]


def _each_at_once(
    engines: list[WriterEngine],
    start: Callable[[WriterEngine], concurrent.futures.Future[None] | None],
    bound: Callable[[WriterEngine], float],
    what: str,
    deadline: float,
) -> list[BaseException | None]:
    """Start a flush or close of every engine (on the loop, all at once), then wait for
    each, within its own ``bound`` and the common ``deadline`` (monotonic).

    Returns each one's exception (None: it finished), in the order of ``engines``. No
    thread is started: at exit (``atexit``) Python 3.12 refuses to start threads
    ("can't create new thread at interpreter shutdown", CPython gh-113964), so a
    thread per writer there lost every event still pending. A writer closed meanwhile
    (by another thread, or a signal handler) is no error: its close writes it out.
    """
    started: list[tuple[float, concurrent.futures.Future[None] | None]] = []
    errors: list[BaseException | None] = [None] * len(engines)
    for i, engine in enumerate(engines):
        try:
            started.append((time.monotonic() + bound(engine), start(engine)))
        except WriterClosedError:
            started.append((0.0, None))
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            started.append((0.0, None))
            errors[i] = exc
    for i, (engine, (own_deadline, future)) in enumerate(zip(engines, started, strict=True)):
        if future is None:
            continue
        wait = max(0.0, min(own_deadline + _JOIN_GRACE, deadline) - time.monotonic())
        try:
            engine.finish(future, wait, what, bound(engine))
        except WriterClosedError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            errors[i] = exc
    return errors


def _close_at_exit() -> None:
    for error in close_all():
        # The interpreter is going away; stderr is the only place left to say it.
        print(f"asyncsummary: at exit: {error}", file=sys.stderr)


def _close_at_multiprocessing_exit() -> None:
    """In a ``multiprocessing`` child, close the writers from its exit finalizers.

    Every start method ends a child with ``os._exit`` (fork and forkserver) or after
    its own bootstrap (spawn), so ``atexit`` may never run there; multiprocessing's
    exit finalizers always do. Installed on the first writer of each process, after
    multiprocessing has cleared the finalizers a forked child inherits, and whether the
    library came from the parent or was first imported in the child. Where
    ``multiprocessing`` was never imported, the process is no child of it: ``atexit``
    covers it.
    """
    global _finalizer_pid
    with _lock:
        if _finalizer_pid == os.getpid():
            return
        _finalizer_pid = os.getpid()
    process = sys.modules.get("multiprocessing.process")
    if process is not None and process.parent_process() is not None:
        from multiprocessing import util

        util.Finalize(None, _close_at_exit, exitpriority=_EXIT_PRIORITY)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()
    _closing.clear()  # the parent's closes: never to finish here
    for engine in list(_engines.values()):
        engine.after_fork_in_child()


atexit.register(_close_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
