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
* **Recovery.** The spool folder of a live sink is ``flock``-ed. A folder whose lock
  is free belongs to a dead process: the next sink opened on the same logdir
  uploads it before its own segments, and ``python -m asyncsummary.remote
  upload-spool`` does the same by hand.

Spool layout (``spool root`` from ``spool_dir``, ``$ASYNCSUMMARY_SPOOL_DIR``, or
``~/.cache/asyncsummary/spool``)::

    <spool root>/<logdir key>/logdir              the logdir URL (for upload-spool)
    <spool root>/<logdir key>/<event file>/lock   flock()ed while its sink lives
    .../<event file>/0000000003.part              the segment being appended to
    .../<event file>/0000000002.seg               sealed, waiting for its upload

Filesystems: asyncio-native ones (s3fs, gcsfs, adlfs) are created with
``asynchronous=True`` on the writer's loop and awaited there; sync-only ones run
on the loop's executor.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import errno
import hashlib
import logging
import os
import re
import struct
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec

from ._records import masked_crc32c
from ._sinks import Sink

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no automatic recovery
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RemoteSink",
    "RemoteSinkFactory",
    "claim_orphans",
    "default_spool_root",
    "logdir_key",
    "open_store",
    "scan_records",
    "segment_object_name",
]

T = TypeVar("T")

logger = logging.getLogger("asyncsummary.remote")

_INDEX_DIGITS = 10
_PART = ".part"
_SEALED = ".seg"
_LOCK = "lock"
_LOGDIR_FILE = "logdir"
_NEW_PREFIX = ".new-"
_MIN_BACKOFF = 0.05
# An explicit flush waits this long for the next upload to be confirmed before it
# lets the engine go on (it flushes again later): a store that hangs, or a client
# retrying inside one attempt, must not keep new events out of the spool.
_CONFIRM_WAIT = 1.0
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


# ----------------------------------------------------------------------- records
def scan_records(data: bytes) -> tuple[list[bytes], int]:
    """Payloads of the whole, CRC-valid records at the start of ``data``.

    Returns ``(payloads, end)``: ``end`` is where the valid records stop (equal to
    ``len(data)`` when every byte belongs to a valid record).
    """
    data = bytes(data)  # the CRC extension takes bytes, not memoryviews
    size = len(data)
    payloads: list[bytes] = []
    pos = 0
    while size - pos >= 12:
        if masked_crc32c(data[pos : pos + 8]) != _U32.unpack_from(data, pos + 8)[0]:
            break
        length = _U64.unpack_from(data, pos)[0]
        end = pos + 12 + length + 4
        if end > size:
            break
        payload = data[pos + 12 : end - 4]
        if masked_crc32c(payload) != _U32.unpack_from(data, end - 4)[0]:
            break
        payloads.append(payload)
        pos = end
    return payloads, pos


def segment_object_name(event_file: str, index: int) -> str:
    """Object name of segment ``index`` of ``event_file``; sorts by index."""
    return f"{event_file}.{index:0{_INDEX_DIGITS}d}"


# -------------------------------------------------------------------- spool paths
def default_spool_root() -> str:
    """``$ASYNCSUMMARY_SPOOL_DIR``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)/asyncsummary/spool."""
    configured = os.environ.get("ASYNCSUMMARY_SPOOL_DIR")
    if configured:
        return configured
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "asyncsummary", "spool")


def logdir_key(url: str) -> str:
    """Folder name of one logdir's spool: readable tail of the URL plus its hash."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", url)[-48:].strip("-.")
    return f"{slug}-{digest}"


# ---------------------------------------------------------------------- locks
# Lock descriptors this process holds; a forked child closes its copies, so that a
# parent's spool becomes recoverable when the parent dies even if the child lives.
_held_locks: set[int] = set()


def _try_lock(path: str) -> int | None:
    """An exclusive ``flock`` on ``path`` (created if missing), or None if held."""
    if fcntl is None:  # pragma: no cover - no way to tell a live owner from a dead one
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    _held_locks.add(fd)
    return fd


def _release(fd: int | None) -> None:
    if fd is not None:
        _held_locks.discard(fd)
        os.close(fd)


def _close_locks_in_child() -> None:
    for fd in list(_held_locks):
        try:
            os.close(fd)
        except OSError:
            pass
    _held_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_locks_in_child)


# ---------------------------------------------------------------- spool folder
@dataclasses.dataclass
class _Segment:
    """A sealed segment waiting for its upload."""

    index: int
    path: str  #: the sealed spool file
    size: int
    folder: _SpoolFolder


class _SpoolFolder:
    """The spool folder of one event file. Every method blocks: call it on an executor."""

    def __init__(self, path: str, event_file: str, lock_fd: int | None) -> None:
        self.path = path
        self.event_file = event_file
        self._lock_fd = lock_fd
        self._part_fd: int | None = None
        self._part_size = 0
        self.remaining = 0  #: segments of this folder not yet uploaded

    @classmethod
    def create(cls, key_dir: str, logdir: str, event_file: str) -> _SpoolFolder:
        """Make and lock a new folder. It appears under its final name already locked,
        so no other process can take it for a dead writer's."""
        os.makedirs(key_dir, exist_ok=True)
        _write_logdir_file(key_dir, logdir)
        staging = tempfile.mkdtemp(prefix=_NEW_PREFIX, dir=key_dir)
        lock_fd = _try_lock(os.path.join(staging, _LOCK))
        final = os.path.join(key_dir, event_file)
        try:
            os.rename(staging, final)  # fails if ``final`` exists and is not empty
        except OSError:
            _release(lock_fd)
            _remove_tree_quietly(staging)
            raise
        return cls(final, event_file, lock_fd)

    def _file(self, index: int, ext: str) -> str:
        return os.path.join(self.path, f"{index:0{_INDEX_DIGITS}d}{ext}")

    def append(self, index: int, data: memoryview) -> None:
        """Append all of ``data`` to the open part, or nothing (truncated back on failure)."""
        if self._part_fd is None:
            self._part_fd = os.open(
                self._file(index, _PART),
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0),
                0o600,
            )
            self._part_size = 0
        done = 0
        try:
            while done < len(data):
                done += os.write(self._part_fd, data[done:])
        except BaseException:
            if done:
                os.ftruncate(self._part_fd, self._part_size)
            raise
        self._part_size += done

    def sync_part(self) -> None:
        if self._part_fd is not None:
            os.fsync(self._part_fd)

    def seal(self, index: int, sync: bool) -> _Segment:
        """Close the open part and rename it to a sealed segment."""
        fd, self._part_fd = self._part_fd, None
        assert fd is not None
        try:
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        sealed = self._file(index, _SEALED)
        os.rename(self._file(index, _PART), sealed)
        self.remaining += 1
        return _Segment(index, sealed, self._part_size, self)

    def recover(self) -> list[_Segment]:
        """A dead writer's folder: seal its part (whole records only), list its segments."""
        segments = []
        for name in sorted(os.listdir(self.path)):
            stem, ext = os.path.splitext(name)
            if not stem.isdigit() or ext not in (_PART, _SEALED):
                continue
            path = os.path.join(self.path, name)
            if ext == _PART:
                with open(path, "rb") as f:
                    data = f.read()
                _, end = scan_records(data)  # a kill may have torn the last record
                if end == 0:
                    os.unlink(path)
                    continue
                if end < len(data):
                    os.truncate(path, end)
                sealed = os.path.join(self.path, stem + _SEALED)
                os.rename(path, sealed)
                path = sealed
            segments.append(_Segment(int(stem), path, os.path.getsize(path), self))
        segments.sort(key=lambda s: s.index)
        self.remaining = len(segments)
        return segments

    def dispose(self) -> None:
        """Remove the folder if empty (else leave it to a later recovery) and unlock."""
        if self._part_fd is not None:
            os.close(self._part_fd)
            self._part_fd = None
        try:
            for name in os.listdir(self.path):
                if name == _LOCK:
                    os.unlink(os.path.join(self.path, name))
            os.rmdir(self.path)
        except OSError:
            pass  # a part left by a failed seal: the next writer recovers it
        finally:
            _release(self._lock_fd)
            self._lock_fd = None


def _write_logdir_file(key_dir: str, logdir: str) -> None:
    path = os.path.join(key_dir, _LOGDIR_FILE)
    if os.path.exists(path):
        return
    fd, tmp = tempfile.mkstemp(dir=key_dir, prefix=".logdir-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(logdir)
    os.replace(tmp, path)


def _remove_tree_quietly(path: str) -> None:
    try:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)
    except OSError:
        pass


def claim_orphans(key_dir: str) -> list[tuple[_SpoolFolder, list[_Segment]]]:
    """Lock every spool folder of ``key_dir`` left by a dead writer (blocking).

    Returns each claimed folder (locked by this process; dispose of it when done)
    with its segments, oldest first. Folders with nothing left are disposed here.
    """
    try:
        names = sorted(os.listdir(key_dir))
    except FileNotFoundError:
        return []
    claimed = []
    for name in names:
        path = os.path.join(key_dir, name)
        if name == _LOGDIR_FILE or name.startswith(".logdir-") or not os.path.isdir(path):
            continue
        lock_fd = _try_lock(os.path.join(path, _LOCK))
        if lock_fd is None:
            continue  # a live writer's
        folder = _SpoolFolder(path, name, lock_fd)
        if name.startswith(_NEW_PREFIX):  # a writer died while making its folder
            folder.dispose()
            continue
        try:
            segments = folder.recover()
        except OSError:
            folder.dispose()
            raise
        if segments:
            claimed.append((folder, segments))
        else:
            folder.dispose()
    return claimed


def read_logdir_file(key_dir: str) -> str | None:
    try:
        with open(os.path.join(key_dir, _LOGDIR_FILE), encoding="utf-8") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------------ store
class _Store:
    """One fsspec filesystem as used from the background loop: ``put`` whole objects."""

    def __init__(self, fs: Any, asynchronous: bool) -> None:
        self.fs = fs
        self._async = asynchronous

    async def put(self, path: str, data: bytes) -> None:
        if self._async:
            await self.fs._pipe_file(path, data)
        else:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._put_sync, path, data)

    def _put_sync(self, path: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(path, data)
        except FileNotFoundError:
            # File-like stores (sftp, chained local caches) need the folder; object
            # stores never get here (and must not: makedirs makes S3 buckets).
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)
            self.fs.pipe_file(path, data)


def open_store(url: str, storage_options: dict[str, Any], loop: asyncio.AbstractEventLoop | None) -> tuple[_Store, str]:
    """The filesystem of ``url`` and the path of ``url`` in it.

    With ``loop`` (call it on that loop's thread), an asyncio-native filesystem is
    made ``asynchronous=True`` on it; otherwise, and for chained URLs, a sync one.
    """
    if "::" in url:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        return _Store(fs, False), path
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    cls = fsspec.get_filesystem_class(protocol)
    if loop is not None and getattr(cls, "async_impl", False):
        return _Store(cls(asynchronous=True, loop=loop, **storage_options), True), cls._strip_protocol(url)
    return _Store(cls(**storage_options), False), cls._strip_protocol(url)


def _run(func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    return asyncio.get_running_loop().run_in_executor(None, func, *args)


# ------------------------------------------------------------------------- sink
class RemoteSink(Sink):
    """One event file of a remote logdir, written as segment objects (see module doc).

    Counters for tests and monitoring: ``uploaded_segments``, ``uploaded_bytes``,
    ``failed_uploads``, ``spooled_bytes`` (waiting for upload); ``last_error`` is the
    last upload error of an outage still going on (None once an upload succeeds).
    """

    def __init__(self, url: str, factory: RemoteSinkFactory) -> None:
        self.name = url
        self.logdir, self.event_file = url.rsplit("/", 1)
        self._factory = factory
        self._store: _Store | None = None
        self._root_path = ""
        self._folder: _SpoolFolder | None = None
        self._queue: collections.deque[_Segment] = collections.deque()
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

    # --------------------------------------------------------------- Sink API
    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._store, self._root_path = self._factory.store_for(self.logdir, loop)
        key_dir = self._factory.key_dir(self.logdir)
        self._folder = await _run(_SpoolFolder.create, key_dir, self.logdir, self.event_file)
        try:
            orphans = await _run(claim_orphans, key_dir)
        except Exception as exc:  # noqa: BLE001 - recovery must not stop this writer
            logger.warning("could not recover the spool in %s: %r", key_dir, exc)
            orphans = []
        # A dead writer's segments sort before ours: upload them first.
        for folder, segments in orphans:
            logger.warning(
                "uploading %d segment(s) of %s/%s left in the spool by a writer that died",
                len(segments), self.logdir, folder.event_file,
            )
            self._queue.extend(segments)
            self.spooled_bytes += sum(segment.size for segment in segments)
        self._last_cut = loop.time()
        self._uploader = loop.create_task(self._upload_loop())
        if self._queue:
            self._work.set()

    async def write(self, data: memoryview) -> int:
        size = len(data)
        limit = self._factory.max_spool_bytes
        if limit is not None and self.spooled_bytes and self.spooled_bytes + size > limit:
            await self._wait_for_room(size, limit)
        assert self._folder is not None
        await _run(self._folder.append, self._index, data)
        self._part_bytes += size
        self.spooled_bytes += size
        if self._part_bytes >= self._factory.min_segment_bytes:
            await self._cut(False)
        return size

    async def flush(self, sync: bool, *, explicit: bool = True) -> bool:
        if self._part_bytes:
            loop = asyncio.get_running_loop()
            if explicit or loop.time() - self._last_cut >= self._factory.min_segment_secs:
                await self._cut(sync)
            elif sync:
                assert self._folder is not None
                await _run(self._folder.sync_part)
        if not explicit:
            return not self._queue and not self._part_bytes
        return await self._wait_uploaded()

    async def close(self) -> None:
        self._closing = True
        try:
            await self._cut(False)
        finally:
            self._work.set()
            if self._uploader is not None:
                self._kick.set()
                await asyncio.shield(self._uploader)

    # ---------------------------------------------------------------- internals
    async def _cut(self, sync: bool) -> None:
        """Seal the open part as the next segment and queue it for upload."""
        if not self._part_bytes:
            return
        assert self._folder is not None
        segment = await _run(self._folder.seal, self._index, sync)
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
            except asyncio.TimeoutError:  # TimeoutError from Python 3.11
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
        backoff = 0.0
        data: bytes | None = None
        while True:
            if not self._queue:
                if self._closing:
                    break
                self._work.clear()
                await self._work.wait()
                continue
            segment = self._queue[0]
            url = segment_object_name(segment.folder.event_file, segment.index)
            try:
                if data is None:
                    data = await _run(_read_file, segment.path)
                await self._store.put(f"{self._root_path}/{url}", data)
            except FileNotFoundError as exc:
                if data is None:  # the spool file itself is gone: nothing to retry
                    logger.error("spool file %s vanished; its segment is lost: %r", segment.path, exc)
                    await self._segment_done(segment)
                    continue
                backoff = await self._failed(exc, url, backoff)
                continue
            except Exception as exc:  # noqa: BLE001 - any store's error: retry
                backoff = await self._failed(exc, url, backoff)
                continue
            data = None
            if self.failed_uploads and self.last_error is not None:
                logger.warning("uploads to %s resumed", self.logdir)
            self.last_error = None
            backoff = 0.0
            self.uploaded_segments += 1
            self.uploaded_bytes += segment.size
            await self._segment_done(segment)
        await _run(self._folder.dispose)

    async def _segment_done(self, segment: _Segment) -> None:
        self._queue.popleft()
        self.spooled_bytes -= segment.size
        segment.folder.remaining -= 1
        try:
            await _run(os.unlink, segment.path)
            if segment.folder is not self._folder and segment.folder.remaining == 0:
                await _run(segment.folder.dispose)
        except OSError as exc:  # the object is in the store; a leftover file re-uploads the same bytes
            logger.warning("could not remove %s from the spool: %r", segment.path, exc)
        self._notify(True)

    async def _failed(self, exc: BaseException, name: str, backoff: float) -> float:
        if self.last_error is None:
            logger.warning(
                "upload of %s/%s failed (%r); retrying with backoff, data kept in the spool %s",
                self.logdir, name, exc, self._folder.path if self._folder else "",
            )
        self.failed_uploads += 1
        self.last_error = exc
        self._notify(False)
        backoff = min(max(_MIN_BACKOFF, backoff * 2), self._factory.max_backoff)
        self._kick.clear()
        try:
            await asyncio.wait_for(self._kick.wait(), backoff)
        except asyncio.TimeoutError:  # TimeoutError from Python 3.11
            pass
        return backoff


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


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
        if isinstance(min_segment_bytes, bool) or not isinstance(min_segment_bytes, int) or min_segment_bytes <= 0:
            raise ValueError(f"min_segment_bytes must be a positive int, got {min_segment_bytes!r}")
        if max_spool_bytes is not None and (
            isinstance(max_spool_bytes, bool) or not isinstance(max_spool_bytes, int) or max_spool_bytes <= 0
        ):
            raise ValueError(f"max_spool_bytes must be a positive int or None, got {max_spool_bytes!r}")
        self.storage_options = dict(storage_options or {})
        self.spool_root = os.fspath(spool_dir) if spool_dir is not None else default_spool_root()
        self.min_segment_secs = float(min_segment_secs)
        self.min_segment_bytes = min_segment_bytes
        self.max_spool_bytes = max_spool_bytes
        self.max_backoff = max(float(max_backoff), _MIN_BACKOFF)
        self._stores: dict[tuple[int, int, str], tuple[_Store, str]] = {}

    def __call__(self, url: str) -> RemoteSink:
        if "/" not in url:
            raise ValueError(f"not a file URL inside a logdir: {url!r}")
        return RemoteSink(url, self)

    def key_dir(self, logdir: str) -> str:
        """The spool folder of one logdir."""
        return os.path.join(self.spool_root, logdir_key(logdir))

    def store_for(self, logdir: str, loop: asyncio.AbstractEventLoop) -> tuple[_Store, str]:
        """Filesystem and path of ``logdir``, made once per process and loop."""
        key = (os.getpid(), id(loop), logdir)
        found = self._stores.get(key)
        if found is None:
            found = self._stores[key] = open_store(logdir, self.storage_options, loop)
        return found

    def __repr__(self) -> str:
        return f"RemoteSinkFactory(spool_dir={self.spool_root!r})"
