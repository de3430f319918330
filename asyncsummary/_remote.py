"""Remote logdirs: each event file becomes numbered segment objects, staged in a spool.

Object stores cannot append, so a writer that re-uploads its growing event file on
every flush sends bytes quadratic in the run's length. Here an event file of a remote
logdir is a series of *segments*: complete objects named
``<event file name>.<10-digit index>``, each holding the bytes written since the
previous one. Guarantees:

* **Whole records.** A segment holds a whole number of records: the engine hands
  :meth:`RemoteSink.write` whole batches, and a write is taken whole or not at all
  (a failed spool write is truncated back).
* **Order.** Names sort in write order (by index within an event file, and the
  engine names event files to sort in order); uploads run one at a time, in order,
  so a reader never sees segment ``k+1`` before ``k``. TensorBoard reads a run's
  files in name order, and each segment appears whole, so it never sees a torn one.
* **Linear cost.** Every written byte is uploaded once (plus HTTP overhead).
  Timer flushes coalesce: they cut a segment only when the last cut is
  ``min_segment_secs`` old; a segment is also cut once it holds
  ``min_segment_bytes``; an explicit ``flush()``/``close()`` always cuts.
* **Durability.** Bytes are in a local spool file before ``write()`` returns; a
  segment's spool file is deleted only after the store confirmed its upload.
  Failed uploads are retried with exponential backoff (up to ``max_backoff``), for
  as long as the process lives; an explicit flush retries at once. A timer flush
  never waits for the network. An explicit flush waits for the confirmation, and
  during an outage returns "held back" (False) after a failed attempt, so the
  engine keeps moving new events into the spool while ``flush()`` waits for its
  timeout (it also lets the engine go on when no upload is confirmed within
  :data:`_CONFIRM_WAIT`, as a client may retry for a while inside one attempt).
  ``close()`` waits for every segment to be confirmed (the writer's close timeout
  bounds the caller; what is not confirmed stays in the spool for the next writer).
* **Private spools.** Every sink has a spool folder of its own, in a folder of
  this user's alone, made atomically and locked while the sink lives; no two
  processes or writers ever share one, and nothing another user planted is read
  (see :mod:`asyncsummary._spool` for the layout and the checks).
* **Recovery.** A folder whose lock is free belongs to a dead process: the next
  sink opened on the same logdir uploads it before its own segments, and
  ``python -m asyncsummary.remote upload-spool`` does the same by hand.
* **No secrets shown.** Credentials in the logdir URL (``user:pw@``, query
  tokens) are masked in the sink's name, its log records and its errors
  (:mod:`asyncsummary._redact`); spool folder names never contain them.

Filesystems: asyncio-native ones (s3fs, gcsfs, adlfs) are created with
``asynchronous=True`` on the writer's loop and awaited there; sync-only ones (ftp,
sftp, webhdfs, ...) run on a thread of the sink's own, one call at a time per
filesystem. Spool I/O runs on another thread of the sink's own, so a sink whose
store or spool disk hangs never holds up another writer.
"""

from __future__ import annotations

import asyncio
import collections
import ftplib
import functools
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, Concatenate, ParamSpec, TypeVar

import fsspec

from ._loop import DaemonThreadPoolExecutor
from ._redact import redact_url, scrub_exception, secrets_of
from ._sinks import Sink
from ._spool import (
    INDEX_DIGITS,
    CheckedDir,
    Segment,
    SpoolFolder,
    UserSpool,
    claim_orphans,
    default_spool_root,
    logdir_key,
    open_user_spool,
    scan_records,
)

__all__ = [
    "RemoteSink",
    "RemoteSinkFactory",
    "default_spool_root",
    "logdir_key",
    "open_store",
    "scan_records",
    "segment_object_name",
]

T = TypeVar("T")
P = ParamSpec("P")

logger = logging.getLogger("asyncsummary.remote")

_MIN_BACKOFF = 0.05
# An explicit flush waits this long for the next upload to be confirmed before it
# lets the engine go on (it flushes again later): a store that hangs, or a client
# retrying inside one attempt, must not keep new events out of the spool.
_CONFIRM_WAIT = 1.0


def segment_object_name(event_file: str, index: int) -> str:
    """Object name of segment ``index`` of ``event_file``; sorts by index."""
    return f"{event_file}.{index:0{INDEX_DIGITS}d}"


# ------------------------------------------------------------------------ store
class _Store:
    """One fsspec filesystem as used from the background loop: ``put`` whole objects.

    A sync filesystem is called on the calling sink's own thread, one call at a time
    (clients such as ftplib hold one connection that threads must not share).
    """

    def __init__(self, fs: Any, asynchronous: bool) -> None:
        self.fs = fs
        self.asynchronous = asynchronous
        self._sync_lock = threading.Lock()

    async def put(self, path: str, data: bytes, executor: Executor | None) -> None:
        if self.asynchronous:
            await self.fs._pipe_file(path, data)
        else:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(executor, self.put_blocking, path, data)

    def put_blocking(self, path: str, data: bytes) -> None:
        """Upload one object on this thread (a sync filesystem only)."""
        with self._sync_lock:
            try:
                self.fs.pipe_file(path, data)
            except Exception as exc:
                if not _missing_folder(exc):
                    raise
                # File-like stores (ftp, sftp, chained local caches) need the folder;
                # object stores never get here (and must not: makedirs makes S3 buckets).
                self.fs.makedirs(self.fs._parent(path), exist_ok=True)
                self.fs.pipe_file(path, data)


def _missing_folder(exc: BaseException) -> bool:
    """The error of a store whose folder is missing: ``FileNotFoundError``, or FTP's
    550 (fsspec's ftp passes ftplib's errors through untranslated)."""
    if isinstance(exc, FileNotFoundError):
        return True
    return isinstance(exc, ftplib.error_perm) and str(exc).startswith("550")


def open_store(
    url: str, storage_options: dict[str, Any], loop: asyncio.AbstractEventLoop | None
) -> tuple[_Store, str]:
    """The filesystem of ``url`` and the path of ``url`` in it.

    What the URL itself carries (``ftp://user:pw@host:port/...``: host, port,
    user, password) goes to the filesystem as fsspec's own ``url_to_fs`` does;
    ``storage_options`` win over it. With ``loop`` (call it on that loop's thread),
    an asyncio-native filesystem is made ``asynchronous=True`` on it; otherwise,
    and for chained URLs, a sync one.
    """
    if "::" in url:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        return _Store(fs, False), path
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    cls = fsspec.get_filesystem_class(protocol)
    options = {**cls._get_kwargs_from_urls(url), **storage_options}
    path = cls._strip_protocol(url)
    if loop is not None and getattr(cls, "async_impl", False):
        return _Store(cls(asynchronous=True, loop=loop, **options), True), path
    return _Store(cls(**options), False), path


def _scrubbed(
    method: Callable[Concatenate[RemoteSink, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[RemoteSink, P], Coroutine[Any, Any, T]]:
    """Errors leaving a sink method show no secret of the logdir URL (see _redact)."""

    @functools.wraps(method)
    async def wrapper(self: RemoteSink, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:
            clean = scrub_exception(exc, self._secrets)
            if clean is exc:
                raise
        raise clean  # outside the handler: the secret-bearing original is not chained

    return wrapper


# ------------------------------------------------------------------------- sink
class RemoteSink(Sink):
    """One event file of a remote logdir, written as segment objects (see module doc).

    Counters for tests and monitoring: ``uploaded_segments``, ``uploaded_bytes``,
    ``failed_uploads``, ``spooled_bytes`` (waiting for upload); ``last_error`` is the
    last upload error of an outage still going on (None once an upload succeeds).
    ``name`` and ``display_logdir`` show the URL with its credentials masked.
    """

    def __init__(self, url: str, factory: RemoteSinkFactory) -> None:
        self.logdir, self.event_file = url.rsplit("/", 1)
        self.display_logdir = redact_url(self.logdir)
        self.name = f"{self.display_logdir}/{self.event_file}"
        self._secrets = secrets_of(self.logdir)
        self._factory = factory
        self._store: _Store | None = None
        self._root_path = ""
        # Threads of this sink alone: one for the spool, one for a sync store.
        self._spool_io: DaemonThreadPoolExecutor | None = None
        self._store_io: DaemonThreadPoolExecutor | None = None
        self._logdir_dir: CheckedDir | None = None
        self._folder: SpoolFolder | None = None
        self._queue: collections.deque[Segment] = collections.deque()
        self._index = 0
        self._part_bytes = 0
        self._last_cut = 0.0
        self._closing = False
        self._work = asyncio.Event()  # a segment was queued, or closing
        self._kick = asyncio.Event()  # retry now instead of after the backoff
        self._progress: asyncio.Future[bool] | None = None
        self._uploader: asyncio.Task[None] | None = None
        self.uploaded_segments = 0
        self.uploaded_bytes = 0
        self.failed_uploads = 0
        self.spooled_bytes = 0
        self.last_error: BaseException | None = None

    def _run(self, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``func(*args)`` on this sink's spool thread."""
        if self._spool_io is None:
            self._spool_io = DaemonThreadPoolExecutor(1, "asyncsummary-spool")
        return asyncio.get_running_loop().run_in_executor(self._spool_io, func, *args)

    # --------------------------------------------------------------- Sink API
    @_scrubbed
    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._store, self._root_path = self._factory.store_for(self.logdir, loop)
        if not self._store.asynchronous:
            self._store_io = DaemonThreadPoolExecutor(1, "asyncsummary-upload")
        self._folder, orphans = await self._run(self._open_spool)
        # A dead writer's segments sort before ours: upload them first.
        for folder, segments in orphans:
            logger.warning(
                "uploading %d segment(s) of %s/%s left in the spool by a writer that died",
                len(segments),
                self.display_logdir,
                folder.event_file,
            )
            self._queue.extend(segments)
            self.spooled_bytes += sum(segment.size for segment in segments)
        self._last_cut = loop.time()
        self._uploader = loop.create_task(self._upload_loop())
        if self._queue:
            self._work.set()

    def _open_spool(self) -> tuple[SpoolFolder, list[tuple[SpoolFolder, list[Segment]]]]:
        """Blocking: this sink's new folder, and the dead writers' folders it claimed."""
        spool: UserSpool = self._factory.user_spool()
        self._logdir_dir = spool.logdir(self.logdir)
        folder = SpoolFolder.create(self._logdir_dir, self.event_file)
        try:
            orphans = claim_orphans(self._logdir_dir)
        except Exception as exc:  # noqa: BLE001 - recovery must not stop this writer
            logger.warning("could not recover the spool in %s: %r", self._logdir_dir.path, exc)
            orphans = []
        return folder, orphans

    @_scrubbed
    async def write(self, data: memoryview) -> int:
        size = len(data)
        limit = self._factory.max_spool_bytes
        if limit is not None and self.spooled_bytes and self.spooled_bytes + size > limit:
            await self._wait_for_room(size, limit)
        assert self._folder is not None
        await self._run(self._folder.append, self._index, data)
        self._part_bytes += size
        self.spooled_bytes += size
        if self._part_bytes >= self._factory.min_segment_bytes:
            await self._cut(False)
        return size

    @_scrubbed
    async def flush(self, sync: bool, *, explicit: bool = True) -> bool:
        if self._part_bytes:
            loop = asyncio.get_running_loop()
            if explicit or loop.time() - self._last_cut >= self._factory.min_segment_secs:
                await self._cut(sync)
            elif sync:
                assert self._folder is not None
                await self._run(self._folder.sync_part)
        if not explicit:
            return not self._queue and not self._part_bytes
        return await self._wait_uploaded()

    @_scrubbed
    async def close(self) -> None:
        self._closing = True
        try:
            if self._folder is not None:
                await self._cut(False)
        finally:
            self._work.set()
            if self._uploader is not None:
                self._kick.set()
                await asyncio.shield(self._uploader)
            else:  # open() failed: nothing to upload
                self._shutdown_threads()

    # ---------------------------------------------------------------- internals
    async def _cut(self, sync: bool) -> None:
        """Seal the open part as the next segment and queue it for upload."""
        if not self._part_bytes:
            return
        assert self._folder is not None
        segment = await self._run(self._folder.seal, self._index, sync)
        self._index += 1
        self._part_bytes = 0
        self._last_cut = asyncio.get_running_loop().time()
        self._queue.append(segment)
        self._work.set()

    async def _wait_uploaded(self) -> bool:
        """Until the queue is uploaded (True), or an attempt failed or nothing was
        confirmed for :data:`_CONFIRM_WAIT` seconds (False: the engine flushes again
        later, and meanwhile keeps moving new events into the spool)."""
        if not self._queue:
            return True
        self._kick.set()  # one immediate attempt; later ones keep their backoff
        loop = asyncio.get_running_loop()
        while self._queue:
            if self._progress is None:
                self._progress = loop.create_future()
            try:
                ok = await asyncio.wait_for(asyncio.shield(self._progress), _CONFIRM_WAIT)
            except TimeoutError:  # TimeoutError from Python 3.11
                return False
            if not ok:
                return False
        return True

    async def _wait_for_room(self, size: int, limit: int) -> None:
        """The spool is full: seal what is open, wait for uploads to make room."""
        await self._cut(False)
        while self._queue and self.spooled_bytes + size > limit:
            if self._progress is None:
                self._progress = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._progress)

    def _notify(self, ok: bool) -> None:
        progress, self._progress = self._progress, None
        if progress is not None and not progress.done():
            progress.set_result(ok)

    async def _upload_loop(self) -> None:
        assert self._store is not None and self._folder is not None
        try:
            await self._upload_all(self._store)
            await self._run(self._folder.dispose)
        finally:
            self._shutdown_threads()

    async def _upload_all(self, store: _Store) -> None:
        backoff = 0.0
        data: bytes | None = None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._work.clear()
                await self._work.wait()
                continue
            segment = self._queue[0]
            name = segment_object_name(segment.folder.event_file, segment.index)
            try:
                if data is None:
                    data = await self._run(segment.folder.read, segment)
                await store.put(f"{self._root_path}/{name}", data, self._store_io)
            except FileNotFoundError as exc:
                if data is None:  # the spool file itself is gone: nothing to retry
                    logger.error(
                        "spool file %s/%s vanished; its segment is lost: %r",
                        segment.folder.path,
                        segment.name,
                        exc,
                    )
                    await self._segment_done(segment, remove=False)
                    continue
                backoff = await self._failed(exc, name, backoff)
                continue
            except Exception as exc:  # noqa: BLE001 - any store's error: retry
                backoff = await self._failed(exc, name, backoff)
                continue
            data = None
            if self.failed_uploads and self.last_error is not None:
                logger.warning("uploads to %s resumed", self.display_logdir)
            self.last_error = None
            backoff = 0.0
            self.uploaded_segments += 1
            self.uploaded_bytes += segment.size
            await self._segment_done(segment)

    async def _segment_done(self, segment: Segment, remove: bool = True) -> None:
        self._queue.popleft()
        self.spooled_bytes -= segment.size
        segment.folder.remaining -= 1
        try:
            if remove:
                await self._run(segment.folder.remove, segment)
            if segment.folder is not self._folder and segment.folder.remaining == 0:
                await self._run(segment.folder.dispose)
        except OSError as exc:
            # The object is in the store; a leftover file re-uploads the same bytes.
            logger.warning(
                "could not remove %s/%s from the spool: %r", segment.folder.path, segment.name, exc
            )
        self._notify(True)

    async def _failed(self, exc: BaseException, name: str, backoff: float) -> float:
        exc = scrub_exception(exc, self._secrets)
        if self.last_error is None:
            logger.warning(
                "upload of %s/%s failed (%r); retrying with backoff, data kept in the spool %s",
                self.display_logdir,
                name,
                exc,
                self._folder.path if self._folder else "",
            )
        self.failed_uploads += 1
        self.last_error = exc
        self._notify(False)
        backoff = min(max(_MIN_BACKOFF, backoff * 2), self._factory.max_backoff)
        self._kick.clear()
        try:
            await asyncio.wait_for(self._kick.wait(), backoff)
        except TimeoutError:  # TimeoutError from Python 3.11
            pass
        return backoff

    def _shutdown_threads(self) -> None:
        """After the last spool call: the sink's threads end (daemon threads: a call
        stuck in the kernel never keeps the process from exiting)."""
        if self._spool_io is not None and self._logdir_dir is not None:
            self._spool_io.submit(self._logdir_dir.close)
        for executor in (self._spool_io, self._store_io):
            if executor is not None:
                executor.shutdown(wait=False)


# ---------------------------------------------------------------------- factory
class RemoteSinkFactory:
    """Makes the :class:`RemoteSink` of each event file of a remote logdir.

    A writer given a URL logdir makes one with default settings; pass your own as
    ``sink_factory`` to change them::

        AsyncSummaryWriter("s3://bucket/run", sink_factory=RemoteSinkFactory(
            {"anon": False}, spool_dir="/scratch/spool", min_segment_secs=30))

    Args:
        storage_options: Passed to the fsspec filesystem (as pandas and dask do);
            the usual environment (credentials, ``AWS_ENDPOINT_URL``, ...) applies.
        spool_dir: Root of the local spool (default :func:`default_spool_root`).
            It may be shared by several users: each writes only below its own
            ``uid-<uid>`` folder there (see :mod:`asyncsummary._spool`).
        min_segment_secs: Timer flushes cut a segment at most this often.
        min_segment_bytes: A segment is cut as soon as it holds this many bytes.
        max_spool_bytes: Bytes of one event file waiting for upload before writes
            wait (the writer's memory bound and policy then apply); None: no bound.
        max_backoff: Longest wait between two upload attempts (seconds).
    """

    def __init__(
        self,
        storage_options: dict[str, Any] | None = None,
        *,
        spool_dir: str | os.PathLike[str] | None = None,
        min_segment_secs: float = 10.0,
        min_segment_bytes: int = 4 << 20,
        max_spool_bytes: int | None = 1 << 30,
        max_backoff: float = 30.0,
    ) -> None:
        if storage_options is not None and not isinstance(storage_options, dict):
            raise TypeError(f"storage_options must be a dict, not {type(storage_options).__name__}")
        for name, value in (("min_segment_secs", min_segment_secs), ("max_backoff", max_backoff)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if (
            isinstance(min_segment_bytes, bool)
            or not isinstance(min_segment_bytes, int)
            or min_segment_bytes <= 0
        ):
            raise ValueError(f"min_segment_bytes must be a positive int, got {min_segment_bytes!r}")
        if max_spool_bytes is not None and (
            isinstance(max_spool_bytes, bool)
            or not isinstance(max_spool_bytes, int)
            or max_spool_bytes <= 0
        ):
            raise ValueError(
                f"max_spool_bytes must be a positive int or None, got {max_spool_bytes!r}"
            )
        self.storage_options = dict(storage_options or {})
        self.spool_root = os.fspath(spool_dir) if spool_dir is not None else default_spool_root()
        self.min_segment_secs = float(min_segment_secs)
        self.min_segment_bytes = min_segment_bytes
        self.max_spool_bytes = max_spool_bytes
        self.max_backoff = max(float(max_backoff), _MIN_BACKOFF)
        self._stores: dict[tuple[int, int, str], tuple[_Store, str]] = {}
        self._user_spools: dict[int, UserSpool] = {}

    def __call__(self, url: str) -> RemoteSink:
        if "/" not in url:
            raise ValueError(f"not a file URL inside a logdir: {redact_url(url)!r}")
        return RemoteSink(url, self)

    def user_spool(self) -> UserSpool:
        """This user's checked folder under the spool root, opened once per process
        (blocking; raises :class:`~asyncsummary._spool.UnsafeSpoolError` if it is
        not this user's alone)."""
        return open_user_spool(self.spool_root, self._user_spools)

    def store_for(self, logdir: str, loop: asyncio.AbstractEventLoop) -> tuple[_Store, str]:
        """Filesystem and path of ``logdir``, made once per process and loop."""
        key = (os.getpid(), id(loop), logdir)
        found = self._stores.get(key)
        if found is None:
            found = self._stores[key] = open_store(logdir, self.storage_options, loop)
        return found

    def __repr__(self) -> str:
        return f"RemoteSinkFactory(spool_dir={self.spool_root!r})"
