"""Opt-in flush on SIGTERM/SIGINT, for services and jobs stopped by a scheduler.

Without it a SIGTERM kills the process the default way: ``atexit`` does not run and
whatever is still pending (at most ``flush_secs`` worth) is lost. With it, the signal
first flushes every open writer (bounded by ``timeout``), then does exactly what would
have happened without it: the previous Python handler is called, or the default
action is restored and the signal raised again, so the exit status stays the signal's.

A signal that lands while the main thread is inside this library (in the middle of
an ``add``, holding a writer's lock that no flush could then take) is served from a
helper thread instead: the main thread returns to its call at once and goes on, the
helper flushes every event added before the signal, then raises the signal again for
the previous handler. Events added meanwhile may be written too, and if the signal's
action ends the process while they are being written, the file ends in one truncated
record, which readers skip (``tests/test_faults_signals.py``).

It chains with asyncio apps and frameworks. ``loop.add_signal_handler`` (used by
aiohttp's ``run_app``, and by asyncio apps that stop gracefully) installs a no-op
Python handler and learns of the signal through the loop's wake-up fd, which the
interpreter writes whatever Python handler is installed. So when this is installed
*after* the framework's handler (in the app's startup hook), a SIGTERM flushes first,
then the framework's own graceful shutdown runs as before (where ``await
writer.aclose()`` belongs). Installed *before*, it is replaced by the framework's
handler; calling it again later installs it again, on top.

A signal must also reach a main thread that sleeps in C. CPython's C-level handler
only sets a flag (and writes a byte to the wake-up fd, if one is set); a main thread
that took the signal just before it blocked in ``sem_wait`` (a ``multiprocessing``
lock: an idle ``Pool`` worker) or a ``read``, or that never got it because another
thread did, sleeps on and the Python handler never runs. With the default action the
kernel would have ended the process; with this handler it would hang. So where no one
else owns the wake-up fd, it is set to a socket watched by a daemon thread, which sends
the signal again to the main thread until the handler has started (see ``_Wakeup``).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

from ._loop import start_daemon_thread
from ._registry import flush_all

__all__ = ["install_shutdown_handlers"]

#: Signal -> our handler installed for it.
_installed: dict[int, Any] = {}

#: Code in this folder may hold a writer's lock (see ``_interrupted_inside_the_library``).
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def install_shutdown_handlers(
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT), timeout: float = 10.0
) -> None:
    """Flush every open writer when one of ``signals`` arrives, then carry on as before.

    Call it from the main thread (Python's rule for signal handlers). Calling it again
    while its handler is still the installed one changes nothing; if something else
    has replaced it since (e.g. an asyncio framework's ``add_signal_handler``), it is
    installed again, chaining to that one.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_shutdown_handlers() must be called from the main thread")
    installed = False
    for signum in signals:
        signum = signal.Signals(signum)
        current = signal.getsignal(signum)
        if current is not None and current is _installed.get(signum):
            continue
        with _wake_lock:  # one step for the watcher (see _Wakeup)
            handler = _make_handler(signum, timeout, current)
            _installed[signum] = handler
            signal.signal(signum, handler)
            _Wakeup.forget_earlier_signals()
        installed = True
    if installed:
        _Wakeup.watch()


def _make_handler(signum: signal.Signals, timeout: float, previous: Any) -> Any:
    if previous is None:  # a handler installed outside Python: treat as the default
        previous = signal.SIG_DFL

    starting = False

    def handler(received: int, frame: FrameType | None) -> None:
        nonlocal starting
        with _wake_lock:  # the watcher sends no copy of the signal after this block
            if starting:
                return  # a copy the watcher sent before, taken just below: already served
            starting = True
            if _installed.get(signum) is handler:
                del _installed[signum]
        try:
            # A copy sent before the block above may still be pending for this thread;
            # with the previous action back (SIG_DFL) it would end the process before
            # the flush. Any system call takes it (the kernel delivers on the way back),
            # and this one's check of the signals runs this handler for it, at once.
            _take_pending_signals()
        finally:
            try:
                # Put the previous handler back first: a second signal during the flush
                # (an impatient second Ctrl-C) gets the usual action at once.
                signal.signal(signum, previous)
            finally:
                starting = False
        if _interrupted_inside_the_library(frame):
            # The main thread stopped inside a writer, maybe holding its lock, which
            # no flush can get while this handler keeps that thread here. Let it go
            # on; a helper thread flushes, then raises the signal again, and the
            # previous handler (back in place above) does what it always did. (Not
            # _loop.start_daemon_thread: this thread raises the signal on itself, so it
            # must not block it.)
            try:
                threading.Thread(
                    target=_flush_then_raise, args=(signum, timeout), daemon=True,
                    name=f"asyncsummary-{signum.name}",
                ).start()
            except RuntimeError:
                # No thread at interpreter shutdown (Python 3.12): this thread is then
                # in the exit's own close of every writer, which writes them out; the
                # previous handler is back in place for a second signal.
                pass
            return
        _flush_bounded(signum, timeout)
        if callable(previous):
            previous(received, frame)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)
        # SIG_IGN: the signal was ignored before; it stays ignored.

    return handler


def _interrupted_inside_the_library(frame: FrameType | None) -> bool:
    """True if the interrupted main thread was running this package's code."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            return True
        frame = frame.f_back
    return False


def _flush_then_raise(signum: signal.Signals, timeout: float) -> None:
    _flush_bounded(signum, timeout)
    if hasattr(signal, "pthread_sigmask"):
        # This thread has the main thread's mask of the moment it was started, which
        # blocks every signal where the handler ran inside _loop.start_daemon_thread
        # (the interpreter runs handlers when pthread_sigmask returns): the signal
        # raised below would stay pending on this thread, and the process live on.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    signal.raise_signal(signum)  # SIG_DFL ends the process; a Python handler runs on main


def _flush_bounded(signum: signal.Signals, timeout: float) -> None:
    """``flush_all`` within ``timeout`` (+ its grace); a failure is reported, never raised.

    ``flush_all`` starts no thread and waits for every writer within the bound, so a
    signal never hangs the process, even at interpreter shutdown.
    """
    try:
        flush_all(timeout)
    except Exception as exc:  # noqa: BLE001 - the signal's own action must still happen
        print(f"asyncsummary: flush on {signum.name} failed: {exc}", file=sys.stderr)


# ---------------------------------------------------------------- waking the main thread
#: Orders the watcher's "has the handler started? if not, send the signal again" before
#: or after a handler's start (see ``_make_handler``), and guards ``_installed``.
#: Re-entrant: the main thread can enter a handler again, nested, while it holds it.
_wake_lock = threading.RLock()


def _take_pending_signals() -> None:
    """A system call (the kernel delivers pending signals on its way back), then the
    interpreter's check of its signal flags."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, ())


class _Wakeup:
    """This process's wake-up socket and the daemon thread that reads it.

    The interpreter writes the number of every signal that has a Python handler to the
    wake-up fd, from the C handler, whichever thread took the signal. For a signal whose
    handler here is installed and has not started ``_GRACE`` seconds later, the main
    thread is asleep in C and missed it: ``pthread_kill`` sends it again to the main
    thread, whose system call then fails with EINTR, and the interpreter runs the
    handler. Again, further apart, until it starts (a main thread busy in a long C call
    starts it only later; the copies change nothing, the flag is already set).

    A byte read after the handler it woke has run must never send a signal: where that
    handler's previous one installs this one again (a framework's handler calling
    ``install_shutdown_handlers``), it would run the new one with no signal sent. So
    installing a handler, draining the socket and counting an epoch are one step under
    ``_wake_lock``, and the watcher takes the bytes it reads and the epoch in one step
    too: a byte read in an epoch was written after that epoch's handlers were installed.
    Bytes written before were drained: those signals were served by the handlers of
    that moment (``signal.signal`` first runs the handlers of pending signals).

    A forked child shares its parent's socket: its signals would make the parent's
    watcher signal the parent. It gets a socket and a watcher of its own at once, in
    ``os.register_at_fork``'s ``after_in_child`` (where the forking thread is the main
    thread). Spawned and forkserver children start bare: the socket is not inheritable.
    """

    _GRACE = 0.05  #: seconds the handler gets to start before the first copy
    _MAX_GAP = 1.0  #: seconds between copies, at most

    current: _Wakeup | None = None  #: this process's, once set
    epoch = 0

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.writer.setblocking(False)  # the interpreter requires it
        try:
            start_daemon_thread(self._watch, "asyncsummary-signals")
        except RuntimeError:
            self.close()
            raise

    def close(self) -> None:
        self.reader.close()
        self.writer.close()

    @classmethod
    def watch(cls) -> None:
        """Make this process's socket the wake-up fd, unless another one is set (an
        asyncio loop's ``add_signal_handler``): that one owns wake-ups, left as it is."""
        if not hasattr(signal, "pthread_kill"):
            return
        try:
            old = signal.set_wakeup_fd(-1)
        except ValueError:  # not the main interpreter
            return
        if old != -1 and (cls.current is None or old != cls.current.writer.fileno()):
            signal.set_wakeup_fd(old)
            return
        if cls.current is None:
            try:
                cls.current = _Wakeup()
            except (OSError, RuntimeError):  # no socket, or no thread (at exit): as before
                return
        signal.set_wakeup_fd(cls.current.writer.fileno(), warn_on_full_buffer=False)

    @classmethod
    def forget_earlier_signals(cls) -> None:
        """Drop the bytes not read yet and start an epoch (with ``_wake_lock`` held)."""
        cls.epoch += 1
        if cls.current is not None:
            cls.current._read()

    def _read(self) -> bytes:
        data = b""
        try:
            while chunk := self.reader.recv(4096, socket.MSG_DONTWAIT):
                data += chunk
        except BlockingIOError:
            pass
        return data

    def _watch(self) -> None:
        while True:
            try:
                if not self.reader.recv(1, socket.MSG_PEEK):  # wait for a byte
                    return
            except OSError:
                return
            with _wake_lock:
                epoch, received = _Wakeup.epoch, self._read()
            for signum in dict.fromkeys(received):
                self._wake_main_thread(signum, epoch)

    @classmethod
    def _wake_main_thread(cls, signum: int, epoch: int) -> None:
        gap = cls._GRACE
        while cls._unserved(signum, epoch):  # (another Python handler's: nothing to do)
            time.sleep(gap)
            with _wake_lock:
                main = threading.main_thread().ident
                if main is None or not cls._unserved(signum, epoch):
                    return
                try:
                    signal.pthread_kill(main, signum)
                except OSError:  # no main thread any more
                    return
            gap = min(gap * 2, cls._MAX_GAP)

    @classmethod
    def _unserved(cls, signum: int, epoch: int) -> bool:
        """Our handler for ``signum`` is in place and has not started, in ``epoch``."""
        handler = _installed.get(signum)
        return cls.epoch == epoch and handler is not None and signal.getsignal(signum) is handler

    @classmethod
    def after_fork_in_child(cls) -> None:
        global _wake_lock
        _wake_lock = threading.RLock()  # the parent's watcher may have held it
        inherited, cls.current = cls.current, None
        if inherited is None:
            return
        # The fd is still the parent's socket, or none: asyncio's own fork hook (Python
        # 3.12+; registered first, asyncio is imported above) clears it in every child.
        old = signal.set_wakeup_fd(-1)
        ours = old in (-1, inherited.writer.fileno())
        inherited.close()
        if ours:
            cls.watch()  # a socket and a watcher of its own
        else:
            signal.set_wakeup_fd(old)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Wakeup.after_fork_in_child)
