"""The library's exceptions: one root, each class for one way a call can fail.

::

    AsyncSummaryError                 root of everything this library raises
    ├── WriterClosedError             the writer was closed (also a ValueError, like
    │                                 writing to a closed file)
    ├── WriteError                    the background side failed to write or upload;
    │                                 always chained (``__cause__``) to the OSError or
    │                                 storage error that caused it
    ├── InvalidEventError             an event's bytes did not parse (found on the
    │                                 background side; raised on the next call; the
    │                                 event is not written; also a ValueError)
    ├── PendingLimitError             ``max_pending_bytes`` was reached and the policy
    │                                 is ``raise`` (or ``block`` ran out of time)
    └── FlushTimeoutError             ``flush``/``close`` gave up after its timeout (also
                                      a TimeoutError); the events it waited for are
                                      still queued, nothing is dropped by the timeout

Bad arguments raise the built-in ``TypeError``/``ValueError`` at the call, on the
caller's thread, before anything is queued.
"""

from __future__ import annotations

__all__ = [
    "AsyncSummaryError",
    "FlushTimeoutError",
    "InvalidEventError",
    "PendingLimitError",
    "WriteError",
    "WriterClosedError",
]


class AsyncSummaryError(Exception):
    """Root of every exception raised by asyncsummary."""


class WriterClosedError(AsyncSummaryError, ValueError):
    """An event was added to, or a flush asked of, a closed writer."""


class WriteError(AsyncSummaryError):
    """Writing (or uploading) events failed on the background side.

    Raised once per failure on the caller's next ``add_*`` call, and by every
    ``flush()``/``close()`` whose events could not be written. ``__cause__`` holds
    the original exception (usually an ``OSError``).
    """


class InvalidEventError(AsyncSummaryError, ValueError):
    """Bytes given as a summary (or built by a deferred builder) were not valid.

    Serialized summaries are validated on the background side, since parsing them on
    the caller's thread is the cost this library exists to avoid; the invalid event is
    not written (``stats().rejected``) and this error is raised on the next call.
    """


class PendingLimitError(AsyncSummaryError):
    """The pending buffer is full (``max_pending_bytes``) and the event was not queued."""


class FlushTimeoutError(AsyncSummaryError, TimeoutError):
    """``flush()`` or ``close()`` did not complete within its timeout."""


class RetryCannotHelp:
    """Mixin of storage errors that no retry heals (a spool folder that is not this
    user's alone stays refused until a person acts): a closing writer gives up on
    them at once instead of retrying until its timeout."""
