"""The local spool of remote logdirs: folders private to one user and one writer.

A remote sink keeps the bytes of its event file here until the store confirmed
them (see :mod:`asyncsummary._remote`). The spool root may be a folder that other
users share (``/scratch/spool``), so nothing in it is trusted that this user did
not make:

* **Per user.** Everything lives in ``<root>/uid-<uid>``, made ``0o700`` and
  checked on every open: a real folder (never a symlink), owned by this user,
  writable by nobody else. Otherwise :class:`UnsafeSpoolError` says why, and
  nothing is read or written there. The folder is held open and every name below
  it is resolved against that descriptor (``dir_fd``), so swapping the folder
  under its name after the check changes nothing.
* **Per process and per writer.** Each sink gets a folder of its own, made by one
  ``mkdir`` of a name no one else can make (``w-<pid>-<random>``). Its ``lock`` is
  written, ``flock``-ed and only then renamed into place, so a ``lock`` exists
  only when held by its writer or left by a dead one: another process can never
  take a live writer's folder for a dead writer's, nor one being made.
* **No symlinks, nothing foreign.** Files are opened with ``O_NOFOLLOW``
  (``lock`` is never created under its own name), and a dead writer's folder is
  recovered only if it, its lock and each of its segments are owned by this user
  and writable by nobody else; a sealed segment must hold whole, CRC-valid records.
  A live sink uploads only the segments it wrote itself.

Layout::

    <root>/uid-<uid>/<logdir key>/logdir          the logdir URL, with credentials masked
    <root>/uid-<uid>/<logdir key>/w-<pid>-<hex>/  one sink's folder
        lock                                      flock()ed while its sink lives; holds
                                                  the event file's name
        0000000003.part                           the segment being appended to
        0000000002.seg                            sealed, waiting for its upload

The logdir key is the readable tail of the masked URL plus a hash of the full URL,
so no folder name shows a secret and two URLs never share a folder. Every function
here blocks: call it on an executor. POSIX only (``dir_fd``, ``O_NOFOLLOW``,
``flock``).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable

from ._errors import RetryCannotHelp
from ._records import masked_crc32c
from ._redact import redact_url

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: UserSpool.open refuses
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CheckedDir",
    "SpoolFolder",
    "UnsafeSpoolError",
    "UserSpool",
    "default_spool_root",
    "logdir_key",
    "scan_records",
]

logger = logging.getLogger("asyncsummary.remote")

INDEX_DIGITS = 10
_PART = ".part"
_SEALED = ".seg"
_LOCK = "lock"
_LOCK_NEW = ".lock-new"
_LOGDIR_FILE = "logdir"
_FOLDER = re.compile(r"w-[0-9]+-[0-9a-f]+\Z")
_SEGMENT = re.compile(rf"([0-9]{{{INDEX_DIGITS}}})(\.part|\.seg)\Z")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
_ADVICE = " (another user may have made it: choose a spool_dir of your own, or remove it)"


def _warn_refused(reason: str) -> None:
    """What a writer does with a refused spool path: say so, and go on."""
    logger.warning("not uploading from the spool: %s", reason)


class UnsafeSpoolError(RetryCannotHelp, PermissionError):
    """A spool folder or file is not this user's alone (owner, mode or a symlink).

    Its message names the path and the reason; ``filename`` is the path.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(errno.EPERM, f"refusing the spool path {path!r}: {reason}")
        self.filename = path


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
        if masked_crc32c(data[pos : pos + 8]) != int.from_bytes(data[pos + 8 : pos + 12], "little"):
            break
        length = int.from_bytes(data[pos : pos + 8], "little")
        end = pos + 12 + length + 4
        if end > size:
            break
        payload = data[pos + 12 : end - 4]
        if masked_crc32c(payload) != int.from_bytes(data[end - 4 : end], "little"):
            break
        payloads.append(payload)
        pos = end
    return payloads, pos


# ------------------------------------------------------------------------ names
def default_spool_root() -> str:
    """``$ASYNCSUMMARY_SPOOL_DIR``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)/asyncsummary/spool."""
    configured = os.environ.get("ASYNCSUMMARY_SPOOL_DIR")
    if configured:
        return configured
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "asyncsummary", "spool")


def logdir_key(url: str) -> str:
    """Folder name of one logdir's spool: readable tail of the masked URL, hash of the URL."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", redact_url(url))[-48:].strip("-.")
    return f"{slug}-{digest}"


def user_folder_name() -> str:
    return f"uid-{os.getuid()}"


def _valid_event_file(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\x00" not in name


# -------------------------------------------------------------- checked folders
def _check_private(st: os.stat_result, path: str, *, folder: bool) -> None:
    """Refuse what is not this user's alone: wrong type, owner, or writable by others."""
    kind = "folder" if folder else "file"
    if not (stat.S_ISDIR(st.st_mode) if folder else stat.S_ISREG(st.st_mode)):
        raise UnsafeSpoolError(path, f"not a plain {kind}")
    if st.st_uid != os.getuid():
        raise UnsafeSpoolError(
            path, f"owned by uid {st.st_uid}, not by this user (uid {os.getuid()}){_ADVICE}"
        )
    if st.st_mode & _OTHERS_WRITE:
        mode = stat.S_IMODE(st.st_mode)
        raise UnsafeSpoolError(path, f"writable by other users (mode {mode:o}){_ADVICE}")


class CheckedDir:
    """An open, checked folder; names inside it resolve against it, never a path."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path  #: for messages

    @classmethod
    def open(cls, name: str, parent: CheckedDir | None, path: str) -> CheckedDir:
        try:
            fd = os.open(name, _O_DIR, dir_fd=parent.fd if parent else None)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeSpoolError(path, f"a symbolic link, or not a folder{_ADVICE}") from None
            raise
        try:
            _check_private(os.fstat(fd), path, folder=True)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    def sub(self, name: str) -> CheckedDir:
        return CheckedDir.open(name, self, os.path.join(self.path, name))

    def make(self, name: str) -> CheckedDir:
        """The private subfolder ``name``, made if missing, checked either way."""
        try:
            os.mkdir(name, 0o700, dir_fd=self.fd)
        except FileExistsError:
            pass
        return self.sub(name)

    def listdir(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def open_file(self, name: str, flags: int, mode: int = 0o600) -> int:
        return os.open(name, flags | _NOFOLLOW | _CLOEXEC, mode, dir_fd=self.fd)

    def open_private_file(self, name: str, flags: int) -> tuple[int, os.stat_result]:
        """Open an existing file that must be this user's alone (no symlink, one link)."""
        path = os.path.join(self.path, name)
        try:
            fd = self.open_file(name, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeSpoolError(path, "a symbolic link") from None
            raise
        try:
            st = os.fstat(fd)
            _check_private(st, path, folder=False)
            if st.st_nlink != 1:
                raise UnsafeSpoolError(path, "a file with other hard links")
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def rename(self, old: str, new: str) -> None:
        os.rename(old, new, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def rmdir(self, name: str) -> None:
        os.rmdir(name, dir_fd=self.fd)

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _read_fd(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


# ------------------------------------------------------------------------- locks
# Lock descriptors this process holds; a forked child closes its copies, so that a
# parent's folder becomes recoverable when the parent dies even if the child lives.
_held_locks: set[int] = set()
_spool_lock = threading.RLock()  # reentrant: a signal handler may open a writer


def _flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    _held_locks.add(fd)
    return True


def _release(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        _held_locks.discard(fd)
        os.close(fd)


def _after_fork_in_child() -> None:
    global _spool_lock
    _spool_lock = threading.RLock()
    for fd in list(_held_locks):
        try:
            os.close(fd)
        except OSError:
            pass
    _held_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------- the spool
class UserSpool:
    """This user's private folder under a spool root (which may be shared)."""

    def __init__(self, root: str, folder: CheckedDir) -> None:
        self.root = root
        self.pid = os.getpid()
        self._dir = folder

    @property
    def path(self) -> str:
        return self._dir.path

    @classmethod
    def open(cls, root: str, *, create: bool = True) -> UserSpool | None:
        """Open (and with ``create``, make) ``<root>/uid-<uid>``; None if it is missing."""
        if fcntl is None or os.open not in os.supports_dir_fd or not _NOFOLLOW:  # pragma: no cover
            raise OSError(errno.ENOTSUP, "the spool of remote logdirs needs a POSIX system", root)
        path = os.path.join(root, user_folder_name())
        if create:
            os.makedirs(root, exist_ok=True)  # a shared root is the admin's: mode as umask says
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
        try:
            return cls(root, CheckedDir.open(path, None, path))
        except FileNotFoundError:
            if create:
                raise
            return None

    def logdir(self, url: str) -> CheckedDir:
        """The (made, checked) folder of one logdir, with its ``logdir`` file."""
        folder = self._dir.make(logdir_key(url))
        try:
            os.stat(_LOGDIR_FILE, dir_fd=folder.fd, follow_symlinks=False)
        except FileNotFoundError:
            tmp = f".logdir-{secrets.token_hex(8)}"
            fd = folder.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                os.write(fd, redact_url(url).encode("utf-8"))
            finally:
                os.close(fd)
            folder.rename(tmp, _LOGDIR_FILE)
        return folder

    def logdir_keys(self) -> list[str]:
        return [name for name in self._dir.listdir() if not name.startswith(".")]

    def open_logdir(self, key: str) -> tuple[CheckedDir, str | None]:
        """An existing logdir folder (checked) and the URL its ``logdir`` file records.

        The URL is None when the file is missing, or when it does not hash to the
        folder's name (it was masked: the URL had credentials; or it was forged).
        """
        folder = self._dir.sub(key)
        try:
            fd, _ = folder.open_private_file(_LOGDIR_FILE, os.O_RDONLY)
        except FileNotFoundError:
            return folder, None
        except BaseException:
            folder.close()
            raise
        try:
            recorded = _read_fd(fd).decode("utf-8", "replace").strip()
        finally:
            os.close(fd)
        return folder, (recorded if recorded and logdir_key(recorded) == key else None)

    def close(self) -> None:
        self._dir.close()


@dataclasses.dataclass
class Segment:
    """A sealed segment waiting for its upload."""

    index: int
    size: int
    folder: SpoolFolder

    @property
    def name(self) -> str:
        return f"{self.index:0{INDEX_DIGITS}d}{_SEALED}"


class SpoolFolder:
    """The folder of one sink (its own, or a dead writer's it recovers), locked."""

    def __init__(
        self, parent: CheckedDir, name: str, folder: CheckedDir, lock_fd: int, event_file: str
    ) -> None:
        self._parent = parent
        self.name = name
        self._dir = folder
        self._lock_fd: int | None = lock_fd
        self.event_file = event_file
        self._part_fd: int | None = None
        self._part_size = 0
        self.remaining = 0  #: segments of this folder not yet uploaded

    @property
    def path(self) -> str:
        return self._dir.path

    @classmethod
    def create(cls, parent: CheckedDir, event_file: str) -> SpoolFolder:
        """A new folder, under a name no other process can make, appearing locked."""
        if not _valid_event_file(event_file):
            raise ValueError(f"not an event file name: {event_file!r}")
        while True:
            name = f"w-{os.getpid()}-{secrets.token_hex(8)}"
            try:
                os.mkdir(name, 0o700, dir_fd=parent.fd)
                break
            except FileExistsError:  # pragma: no cover - 64 random bits
                continue
        folder = parent.sub(name)
        try:
            fd = folder.open_file(_LOCK_NEW, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except BaseException:
            folder.close()
            raise
        try:
            os.write(fd, event_file.encode("utf-8"))
            if not _flock(fd):  # pragma: no cover - a file nobody else knows of
                raise OSError(errno.EAGAIN, "could not lock a new spool folder", folder.path)
            folder.rename(_LOCK_NEW, _LOCK)  # only now can another process see a lock
        except BaseException:
            _release(fd)
            folder.close()
            raise
        return cls(parent, name, folder, fd, event_file)

    @classmethod
    def claim(cls, parent: CheckedDir, name: str) -> SpoolFolder | None:
        """Lock a dead writer's folder: None if live, being made, gone, or not ours alone."""
        if not _FOLDER.match(name):
            return None
        try:
            folder = parent.sub(name)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            try:
                fd, st = folder.open_private_file(_LOCK, os.O_RDWR)
            except FileNotFoundError:
                folder.close()  # being made (its lock not yet in place), or done
                return None
            if not _flock(fd):
                os.close(fd)
                folder.close()
                return None  # a live writer's
            try:
                now = folder.lstat(_LOCK)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
                _release(fd)  # its writer finished and removed it meanwhile
                folder.close()
                return None
            event_file = _read_fd(fd).decode("utf-8", "replace")
            if not _valid_event_file(event_file):
                _release(fd)
                raise UnsafeSpoolError(folder.path, "its lock names no event file")
        except BaseException:
            folder.close()
            raise
        return cls(parent, name, folder, fd, event_file)

    # ------------------------------------------------------------ own segments
    def _file(self, index: int, ext: str) -> str:
        return f"{index:0{INDEX_DIGITS}d}{ext}"

    def append(self, index: int, data: memoryview) -> None:
        """Append all of ``data`` to the open part, or nothing (truncated back on failure)."""
        if self._part_fd is None:
            self._part_fd = self._dir.open_file(
                self._file(index, _PART), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
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

    def seal(self, index: int, sync: bool) -> Segment:
        """Close the open part and rename it to a sealed segment."""
        fd, self._part_fd = self._part_fd, None
        assert fd is not None
        try:
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self._dir.rename(self._file(index, _PART), self._file(index, _SEALED))
        self.remaining += 1
        return Segment(index, self._part_size, self)

    def read(self, segment: Segment) -> bytes:
        """The bytes of a sealed segment (a file of this user's alone)."""
        fd, _ = self._dir.open_private_file(segment.name, os.O_RDONLY)
        try:
            return _read_fd(fd)
        finally:
            os.close(fd)

    def remove(self, segment: Segment) -> None:
        self._dir.unlink(segment.name)

    # ------------------------------------------------------------- recovery
    def recover(self, refuse: Callable[[str], None] = _warn_refused) -> list[Segment]:
        """A dead writer's folder: seal its part (whole records only), list its segments.

        A file that is not this user's alone, or a sealed segment that is not whole,
        CRC-valid records, is left where it is and not uploaded: ``refuse`` gets the
        reason (default: a logged warning).
        """
        segments = []
        for name in self._dir.listdir():
            match = _SEGMENT.match(name)
            if match is None:
                continue
            index, ext = int(match.group(1)), match.group(2)
            try:
                fd, _ = self._dir.open_private_file(name, os.O_RDWR)
            except UnsafeSpoolError as exc:
                refuse(str(exc.strerror))
                continue
            try:
                data = _read_fd(fd)
                _, end = scan_records(data)
                if ext == _SEALED and end != len(data):
                    path = os.path.join(self.path, name)
                    refuse(f"refusing the spool path {path!r}: not whole, CRC-valid records")
                    continue
                if ext == _PART:
                    if end == 0:  # a kill may have torn the last record, or all there was
                        self._dir.unlink(name)
                        continue
                    if end < len(data):
                        os.ftruncate(fd, end)
                    self._dir.rename(name, self._file(index, _SEALED))
            finally:
                os.close(fd)
            segments.append(Segment(index, end, self))
        segments.sort(key=lambda s: s.index)
        self.remaining = len(segments)
        return segments

    def dispose(self) -> None:
        """Unlock. Remove the folder when nothing but its lock is left; otherwise keep
        the lock file, so a later writer (or ``upload-spool``) recovers the rest."""
        if self._part_fd is not None:
            os.close(self._part_fd)
            self._part_fd = None
        try:
            if self._dir.fd >= 0 and self._dir.listdir() == [_LOCK]:
                self._dir.unlink(_LOCK)
                self._parent.rmdir(self.name)
        except OSError:
            pass  # left for a later recovery
        finally:
            _release(self._lock_fd)
            self._lock_fd = None
            self._dir.close()


def claim_orphans(
    parent: CheckedDir, refuse: Callable[[str], None] = _warn_refused
) -> list[tuple[SpoolFolder, list[Segment]]]:
    """Lock every folder of a logdir left by a dead writer.

    Returns each claimed folder (locked by this process; dispose of it when done)
    with its segments, oldest first. Folders with nothing left are disposed here.
    A folder or file that is not this user's alone, or not what the spool writes,
    is left in place and ``refuse`` gets the reason: a writer opening the logdir
    logs a warning (its own events must still go up); ``upload-spool`` fails.
    """
    claimed = []
    for name in parent.listdir():
        try:
            folder = SpoolFolder.claim(parent, name)
        except UnsafeSpoolError as exc:
            refuse(str(exc.strerror))
            continue
        if folder is None:
            continue
        try:
            segments = folder.recover(refuse)
        except BaseException:
            folder.dispose()
            raise
        if segments:
            claimed.append((folder, segments))
        else:
            folder.dispose()
    return claimed


def open_user_spool(root: str, cache: dict[int, UserSpool]) -> UserSpool:
    """The user spool of ``root`` for this process, opened once (``cache`` by pid)."""
    with _spool_lock:
        spool = cache.get(os.getpid())
        if spool is None:
            spool = UserSpool.open(root)
            assert spool is not None
            cache.clear()  # a parent's, inherited across fork
            cache[os.getpid()] = spool
        return spool
