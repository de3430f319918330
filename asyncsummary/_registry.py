"""Every writer engine of the process with events to write: closed at exit, reset in a
forked child.

At interpreter exit (``atexit``, which runs after non-daemon threads have finished)
every engine still open is closed, all at once, within :data:`EXIT_TIMEOUT` seconds in
total (each writer at most its ``close_timeout``), so a job that forgets ``close()``
keeps its events and a dead storage server cannot hang the exit. An engine stays here
until its close has ended, so the exit also waits for a close already under way: a
``close()`` that Ctrl-C interrupted still writes everything.

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

#: Reentrant: a signal handler may open or close a writer on the thread that is inside
#: register() or open_engines() with it held.
_lock = threading.RLock()
#: Every engine whose drain may still hold events: from its start until its drain has
#: ended (its close wrote or gave up everything), closing ones among them.
_engines: dict[int, WriterEngine] = {}
_finalizer_pid = -1  # the process whose multiprocessing exit finalizer is installed

#: Seconds a caller waits past each writer's bound for its flush or close to report.
_JOIN_GRACE = 2.0

#: Multiprocessing runs exit finalizers of priority >= 0 first, in decreasing order.
_EXIT_PRIORITY = 10


def register(engine: WriterEngine) -> None:
    """``engine`` started its drain: it is kept until that drain ends."""
    key = id(engine)
    with _lock:
        _engines[key] = engine
        hook = _finalizer_pid != os.getpid()
    drained = engine.drained
    if drained is not None:
        # Runs on the loop's thread, which must never wait for this module's lock: a
        # signal handler on the main thread may hold it while it waits for the loop.
        # One dict operation is atomic; a drain ends once per process (a forked
        # child's engine starts a new one, and the parent's never ends there).
        drained.add_done_callback(lambda _: _engines.pop(key, None))
    if hook:
        _close_at_multiprocessing_exit()


def unregister(engine: WriterEngine) -> None:
    """``engine`` closed without ever starting a drain: nothing of it to wait for."""
    with _lock:
        _engines.pop(id(engine), None)


def open_engines() -> list[WriterEngine]:
    """The writers open for adds."""
    with _lock:
        return [engine for engine in _engines.values() if not engine.closed]


def _closing_drains() -> list[concurrent.futures.Future[None]]:
    with _lock:
        engines = [engine for engine in _engines.values() if engine.closed]
    return [d for d in (engine.drained for engine in engines) if d is not None and not d.done()]


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
    concurrent.futures.wait(_closing_drains(), max(0.0, deadline - time.monotonic()))
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
    """Close every writer concurrently within ``timeout`` seconds in total, and wait
    for the closes already under way (a ``close()`` that Ctrl-C interrupted, say).

    Each writer gets at most its own ``close_timeout`` of that (the writer's documented
    bound of close and exit), so a hung storage delays the exit only that long.
    """
    deadline = time.monotonic() + timeout + _JOIN_GRACE
    with _lock:
        engines = list(_engines.values())
    errors = _each_at_once(
        engines,
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
    (by another thread, or a signal handler) is no error: its close writes it out. A
    close already under way elsewhere is waited for (its drain), not started again.
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
        wait = max(0.0, min(own_deadline + _JOIN_GRACE, deadline) - time.monotonic())
        if future is None:
            drained = engine.drained
            if what == "close" and drained is not None and not drained.done():
                done, _ = concurrent.futures.wait([drained], wait)
                if not done:
                    errors[i] = engine.timeout_error("close", bound(engine))
            continue
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
    for key, engine in list(_engines.items()):
        if engine.closed:  # the parent's close, never to finish here
            del _engines[key]
        else:
            engine.after_fork_in_child()


atexit.register(_close_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
