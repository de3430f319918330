"""Sinks: where the engine's framed bytes go. One sink is one event file.

The engine talks to storage only through :class:`Sink`; the local file sink below,
the remote (fsspec) sink and the slow or failing sinks in :mod:`asyncsummary.testing`
are implementations of it, never flags inside one class. Every method runs on the
background loop and is awaited one at a time per sink, so a sink needs no locking.
"""

from __future__ import annotations

import abc
import errno
import os
from collections.abc import Callable
from typing import Any

import aiofiles
import aiofiles.os

__all__ = ["FileSink", "Sink", "SinkFactory"]


class Sink(abc.ABC):
    """One append-only event file.

    Contract:

    * :meth:`open` creates the file exclusively (never truncating or appending to an
      existing one), making parent folders as needed.
    * :meth:`write` appends bytes and returns how many it took (possibly fewer than
      given, as ``os.write`` may); an exception means it took none in that call. The
      engine keeps what was not taken and writes it again later, so a failure in the
      middle of a record never leaves a torn record followed by more data.
    * :meth:`flush` makes everything written so far reach the place readers see it
      (the OS page cache, fsynced when ``sync``; or the object store) and reports a
      file that vanished underneath it. ``explicit`` is True for ``flush()``,
      ``close()`` and rotation, False for the engine's timer: on a timer flush a sink
      may hold data back (the remote sink coalesces tiny segments, and uploads in the
      background) and then returns False, so the engine keeps it marked unflushed and
      flushes again, explicitly when a caller waits. None or True: all is visible.
    * :meth:`close` releases the file; it is called once, also after failures.
    """

    #: Path or URL of the file, as readers will see it.
    name: str

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def write(self, data: memoryview) -> int: ...

    @abc.abstractmethod
    async def flush(self, sync: bool, *, explicit: bool = True) -> bool | None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


#: Makes the sink for one event file from its full path (or URL).
SinkFactory = Callable[[str], Sink]

_fstat = aiofiles.os.wrap(os.fstat)  # type: ignore[attr-defined]
_fsync = aiofiles.os.wrap(os.fsync)  # type: ignore[attr-defined]


class FileSink(Sink):
    """A local event file, written through aiofiles on the loop's daemon-thread executor.

    The file is unbuffered (``buffering=0``): each :meth:`write` is one ``write(2)``,
    so once it returns the bytes are in the OS and any other process can read them.
    """

    def __init__(self, path: str) -> None:
        self.name = path
        self._file: Any = None

    async def open(self) -> None:
        folder = os.path.dirname(self.name)
        if folder:
            await aiofiles.os.makedirs(folder, exist_ok=True)
        self._file = await aiofiles.open(self.name, "xb", buffering=0)

    async def write(self, data: memoryview) -> int:
        n = await self._file.write(data)
        return len(data) if n is None else int(n)

    async def flush(self, sync: bool, *, explicit: bool = True) -> None:
        fd = self._file.fileno()
        if sync:
            await _fsync(fd)
        if (await _fstat(fd)).st_nlink == 0:
            raise FileNotFoundError(
                errno.ENOENT, "event file was removed while it was being written", self.name
            )

    async def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            await file.close()
