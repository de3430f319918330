"""Sinks: where the engine's framed bytes go. One sink is one event file.

The engine talks to storage only through :class:`Sink`; the local file sink below,
the remote (fsspec) sink and the slow or failing sinks in :mod:`asyncsummary.testing`
are implementations of it, never flags inside one class. Every method runs on the
background loop and is awaited one at a time per sink, so a sink needs no locking.

Each local file sink runs its blocking calls on its own single daemon thread, never on
a pool shared with other writers: a write stuck in the kernel on a hung mount (NFS,
FUSE) holds that one thread and stalls that one file, while every other writer of the
process goes on. The price is one thread per open file, and a thread stuck in a
syscall that never returns cannot be reclaimed: it is leaked (a daemon thread, so it
never keeps the process from exiting), at most one per hung file.
"""

from __future__ import annotations

import abc
import asyncio
import errno
import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import aiofiles

from ._loop import DaemonThreadPoolExecutor

__all__ = ["FileSink", "Sink", "SinkFactory"]

_writev: Callable[[int, list[memoryview]], int] | None = getattr(os, "writev", None)  # not on Windows
_IOV_MAX = 1024  # buffers per writev(2) (POSIX guarantees at least 16; Linux takes 1024)

T = TypeVar("T")


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

    async def write_parts(self, parts: list[memoryview]) -> int:
        """Append the parts one after the other; how many bytes were taken (from the
        first part on, possibly fewer than all, as :meth:`write`). One call for a batch
        whose large payloads are parts of their own (an image and its framing): a sink
        that can write them in one storage call (:class:`FileSink`) does; this one
        writes the first part only and the engine comes back with the rest."""
        return await self.write(parts[0])

    @abc.abstractmethod
    async def flush(self, sync: bool, *, explicit: bool = True) -> bool | None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call of this sink's storage (the loop's shared pool here).

        Sinks with a thread of their own (:class:`FileSink`) run it there, so that
        slow or stalled test sinks (:mod:`asyncsummary.testing`) block the thread a
        real hung write would block.
        """
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


#: Makes the sink for one event file from its full path (or URL).
SinkFactory = Callable[[str], Sink]


class FileSink(Sink):
    """A local event file, written through aiofiles on a daemon thread of its own.

    The file is unbuffered (``buffering=0``): each :meth:`write` is one ``write(2)``,
    so once it returns the bytes are in the OS and any other process can read them.
    Its calls run on its own one-thread executor (see the module docstring), made on
    :meth:`open` and let go on :meth:`close` without waiting for a stuck call.
    """

    def __init__(self, path: str) -> None:
        self.name = path
        self._file: Any = None
        self._executor: DaemonThreadPoolExecutor | None = None

    def _own_executor(self) -> DaemonThreadPoolExecutor:
        if self._executor is None:
            self._executor = DaemonThreadPoolExecutor(1, thread_name_prefix="asyncsummary-file")
        return self._executor

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._own_executor(), fn, *args)

    async def open(self) -> None:
        folder = os.path.dirname(self.name)
        if folder:
            await self.run_blocking(functools.partial(os.makedirs, folder, exist_ok=True))
        self._file = await aiofiles.open(
            self.name, "xb", buffering=0, executor=self._own_executor()
        )

    def fileno(self) -> int:
        """The open file's descriptor (the native lane writes to it, see _engine)."""
        return int(self._file.fileno())

    async def write(self, data: memoryview) -> int:
        n = await self._file.write(data)
        return len(data) if n is None else int(n)

    async def write_parts(self, parts: list[memoryview]) -> int:
        """One ``writev(2)`` on the sink's thread: a batch's parts (a 1 MiB image comes
        as three) cost one hop to that thread, not one each (about 80 µs each here)."""
        if len(parts) == 1 or _writev is None:
            return await self.write(parts[0])
        return await self.run_blocking(_writev, self._file.fileno(), parts[:_IOV_MAX])

    async def flush(self, sync: bool, *, explicit: bool = True) -> None:
        fd = self._file.fileno()
        if sync:
            await self.run_blocking(os.fsync, fd)
        if (await self.run_blocking(os.fstat, fd)).st_nlink == 0:
            raise FileNotFoundError(
                errno.ENOENT, "event file was removed while it was being written", self.name
            )

    async def close(self) -> None:
        try:
            if self._file is not None:
                file, self._file = self._file, None
                await file.close()
        finally:
            executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=False)  # its thread ends once idle
