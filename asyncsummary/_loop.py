"""The process-wide background loop: one daemon thread running an asyncio loop.

All writers share it. It starts on first use, runs uvloop where uvloop can be
imported (plain asyncio otherwise), and is fork-aware: a child process never touches
the loop, thread or executor it inherited (they do not exist there); it starts its own
on first use. Blocking calls (file I/O, sync storage clients) run on daemon threads
(:class:`DaemonThreadPoolExecutor`), so a write that hangs in the kernel can never
keep the interpreter from exiting. Each local event file has a one-thread executor of
its own (``_sinks.FileSink``), so a hung file stalls no other writer; the loop's
default executor serves the rest.

Every thread of the library is started by :func:`start_daemon_thread`, which keeps
signals sent to the process off it (see there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["DaemonThreadPoolExecutor", "build_pool", "get_loop", "loop_implementation", "run_coroutine"]

T = TypeVar("T")

#: Signals the library's threads never take: all but those a thread raises on itself by
#: faulting. The kernel hands a signal sent to the process to any thread that does not
#: block it, and CPython runs Python handlers on the main thread only: a SIGTERM taken
#: by one of these threads just set a flag, which a main thread asleep in a lock or a
#: semaphore never looked at. With a Python SIGTERM handler installed (a scheduler's
#: stop, ``install_shutdown_handlers``), the process then never stopped: a terminated
#: ``multiprocessing.Pool`` worker hung its parent's ``terminate()`` for good (about one
#: run in 15 of ``tests/test_faults_procs.py`` on Python 3.13). Blocked here, such a
#: signal goes to a thread that runs the handler. The mask is inherited by the threads
#: and processes these threads start; the library starts no process from them.
_BLOCKED_SIGNALS = (
    signal.valid_signals()
    - {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT}
    - {getattr(signal, name) for name in ("SIGTRAP", "SIGSYS") if hasattr(signal, name)}
    if hasattr(signal, "pthread_sigmask")
    else set()
)


def start_daemon_thread(target: Callable[[], Any], name: str) -> threading.Thread:
    """Start a daemon thread that never takes a signal sent to the process.

    The signals are blocked on the calling thread around the start, so the new thread
    has them blocked from its first instruction (a thread inherits its creator's mask);
    the caller's own mask is put back at once (a signal that came meanwhile is
    delivered then). Raises ``RuntimeError`` where no thread can be started.
    """
    thread = threading.Thread(target=target, name=name, daemon=True)
    if not _BLOCKED_SIGNALS:  # no pthread_sigmask (Windows): nothing to keep off
        thread.start()
        return thread
    # The interpreter runs pending signal handlers when pthread_sigmask returns, and
    # one may raise (KeyboardInterrupt): read the mask first, blocking nothing, so that
    # the signals are never left blocked on this thread by a raise after blocking them.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED_SIGNALS)
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread


_uvloop: Any
try:  # pragma: no cover - depends on the platform
    import uvloop as _uvloop
except ImportError:  # pragma: no cover
    _uvloop = None


class DaemonThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A thread pool whose workers are daemon threads, not joined at exit.

    ``ThreadPoolExecutor`` joins its workers when the interpreter exits, so one write
    stuck on a dead NFS server would hang the process forever. These workers are
    daemon threads; at exit a stuck one is simply abandoned. It subclasses
    ``ThreadPoolExecutor`` only because ``loop.set_default_executor`` requires one;
    the pool itself is the few lines below.
    """

    def __init__(self, max_workers: int = 4, thread_name_prefix: str = "asyncsummary-io") -> None:
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._limit = max_workers
        self._prefix = thread_name_prefix
        self._workers = 0
        self._idle = 0
        self._pool_lock = threading.RLock()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError("executor is shut down")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._work.put((future, fn, args, kwargs))
        with self._pool_lock:
            start = self._idle == 0 and self._workers < self._limit
            if start:
                self._workers += 1
                name = f"{self._prefix}-{self._workers}"
        if start:
            try:
                start_daemon_thread(self._worker, name)
            except RuntimeError:
                self._no_new_thread()
        return future

    def _no_new_thread(self) -> None:
        """No thread could be started: run the queued work on this thread, if no worker
        of this pool is left to take it.

        Python 3.12 refuses new threads at interpreter shutdown, in ``atexit``
        callbacks among others (CPython gh-113964), where the exit's close may still
        have to open or write a file; and any Python refuses one when the OS has none
        left. Then the call runs right here, on the loop's thread: the writes still
        happen, only a storage that hangs then would hold the loop (the exit's wait
        for it stays bounded).
        """
        with self._pool_lock:
            self._workers -= 1
            orphaned = self._workers == 0
        while orphaned:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._run(item)

    def _worker(self) -> None:
        while True:
            with self._pool_lock:
                self._idle += 1
            item = self._work.get()
            with self._pool_lock:
                self._idle -= 1
            if item is None:
                return
            self._run(item)
            # Never keep the last call's arguments while idle: a write's are its buffer
            # (a whole batch, or an image), held until the next call came otherwise.
            del item

    @staticmethod
    def _run(item: Any) -> None:
        future, fn, args, kwargs = item
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter
            future.set_exception(exc)
        else:
            future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        with self._pool_lock:
            workers = self._workers
        for _ in range(workers):
            self._work.put(None)


class _LoopThread:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = -1
        # Loops inherited across fork: kept referenced so that their finalizers never
        # run in the child (they would close descriptors shared with nothing useful).
        self._orphans: list[Any] = []

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        loop = _uvloop.new_event_loop() if _uvloop is not None else asyncio.new_event_loop()
        loop.set_default_executor(DaemonThreadPoolExecutor())
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        start_daemon_thread(run, "asyncsummary-loop")
        started.wait()
        self._loop = loop
        self._pid = os.getpid()

    def after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        if self._loop is not None:
            self._orphans.append(self._loop)
        self._loop = None


_loop_thread = _LoopThread()


def get_loop() -> asyncio.AbstractEventLoop:
    """The shared background loop, started on first use (again in a forked child)."""
    return _loop_thread.get()


def run_coroutine(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the background loop from any thread."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


#: Threads of the pool that builds summaries (histograms, images) off the caller's thread.
BUILD_WORKERS = 2
_build_lock = threading.RLock()  # reentrant: a signal handler's flush may come back here
_build_pool: DaemonThreadPoolExecutor | None = None
_build_pid = -1


def build_pool() -> DaemonThreadPoolExecutor:
    """The process's pool of summary builders, started on first use (again after fork).

    Shared by every writer facade (torch-style, Keras). Two workers: builds are mostly
    NumPy, zlib and protobuf work that releases the GIL in its heavy parts; more
    threads would only take the GIL from the training thread more often. Order is not
    the pool's business: a writer's engine awaits the futures in the order of the calls.
    """
    global _build_pool, _build_pid
    pool = _build_pool
    if pool is not None and _build_pid == os.getpid():
        return pool
    with _build_lock:
        if _build_pool is None or _build_pid != os.getpid():
            _build_pool = DaemonThreadPoolExecutor(BUILD_WORKERS, thread_name_prefix="asyncsummary-build")
            _build_pid = os.getpid()
        return _build_pool


def _after_fork_in_child() -> None:
    global _build_lock, _build_pool
    _loop_thread.after_fork_in_child()
    _build_lock = threading.RLock()
    _build_pool = None  # its threads stayed in the parent


def loop_implementation() -> str:
    """``"uvloop"`` or ``"asyncio"``: what the background loop runs on."""
    loop = get_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
