"""Opt-in flush on SIGTERM/SIGINT, for services and jobs stopped by a scheduler.

Without it a SIGTERM kills the process the default way: ``atexit`` does not run and
whatever is still pending (at most ``flush_secs`` worth) is lost. With it, the signal
first flushes every open writer (bounded by ``timeout``), then does exactly what would
have happened without it: the previous Python handler is called, or the default
action is restored and the signal raised again, so the exit status stays the signal's.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

from ._registry import flush_all

__all__ = ["install_shutdown_handlers"]

_installed: dict[int, Any] = {}


def install_shutdown_handlers(
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT), timeout: float = 10.0
) -> None:
    """Flush every open writer when one of ``signals`` arrives, then carry on as before.

    Call it from the main thread (Python's rule for signal handlers). Calling it again
    for a signal it already handles changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_shutdown_handlers() must be called from the main thread")
    for signum in signals:
        signum = signal.Signals(signum)
        if signum in _installed:
            continue
        _installed[signum] = signal.getsignal(signum)
        signal.signal(signum, _make_handler(signum, timeout))


def _make_handler(signum: signal.Signals, timeout: float) -> Any:
    def handler(received: int, frame: FrameType | None) -> None:
        try:
            flush_all(timeout)
        except Exception as exc:  # noqa: BLE001 - the signal's own action must still happen
            print(f"asyncsummary: flush on {signum.name} failed: {exc}", file=sys.stderr)
        previous = _installed.pop(signum, signal.SIG_DFL)
        signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(received, frame)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)
        # SIG_IGN: the signal was ignored before; it stays ignored.

    return handler
