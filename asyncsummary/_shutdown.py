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
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

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
    for signum in signals:
        signum = signal.Signals(signum)
        current = signal.getsignal(signum)
        if current is not None and current is _installed.get(signum):
            continue
        handler = _make_handler(signum, timeout, current)
        _installed[signum] = handler
        signal.signal(signum, handler)


def _make_handler(signum: signal.Signals, timeout: float, previous: Any) -> Any:
    if previous is None:  # a handler installed outside Python: treat as the default
        previous = signal.SIG_DFL

    def handler(received: int, frame: FrameType | None) -> None:
        if _installed.get(signum) is handler:
            del _installed[signum]
        # Put the previous handler back first: a second signal during the flush
        # (an impatient second Ctrl-C) gets the usual action at once.
        signal.signal(signum, previous)
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
