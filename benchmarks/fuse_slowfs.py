"""A FUSE passthrough file system that sleeps in every write: slow storage for any writer.

Network and FUSE file systems (NFS, gcsfuse, s3fs mounts) make each ``write(2)`` wait
for a round trip. This file system mirrors a local folder and sleeps ``delay`` seconds
before every WRITE request the kernel sends it, so every writer (TensorFlow's C++
``EventsWriter``, tensorboard's, tensorboardX's, asyncsummary's) meets the same slow
storage through the kernel, whatever its own buffering.

The kernel splits one large ``write(2)`` into requests of at most ``max_write`` bytes
(128 KiB here, with ``big_writes``); each request sleeps once. Nothing else sleeps
(open, fsync, metadata). It needs ``/dev/fuse``, the right to mount, libfuse2 (e.g.
``apt-get install fuse libfuse2``) and ``fusepy``; :func:`unavailable` says what is
missing.

Run it as its own process (``python -m benchmarks.fuse_slowfs ROOT MOUNT --delay S``):
its Python callbacks then never compete for the benchmark's GIL. :func:`mounted`
does that, waits for the mount and always unmounts.

It can also be *hung* storage (a dead NFS server, a stuck FUSE daemon), for the tests:
with ``--hang-while PATH`` (``mounted(..., hang_while=PATH)``) every WRITE request
blocks, without polling per request, while the file ``PATH`` (outside the mount)
exists, so the ``write(2)`` that sent it does not return; removing ``PATH`` releases
every blocked write and lets new ones through. With ``--blocked-log LOG`` each write
that starts waiting first appends a line to ``LOG`` (:func:`blocked_writes` reads it),
so a test can wait until the kernel has really handed the hung writes over. With
``--hang-only PART`` (``hang_only=PART``) only writes to files whose name contains
``PART`` hang (``tfevents``: the event files), so a framework's own small files, which
it writes on its training thread, go through.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["blocked_writes", "mount_points", "mounted", "slow_passthrough", "unavailable"]

_MOUNT_TIMEOUT = 20.0
#: How often the hang's watcher looks for the release (only while a write waits).
_HANG_POLL = 0.02


def unavailable() -> str | None:
    """Why a FUSE mount cannot be made here, or None when it can be tried."""
    if not sys.platform.startswith("linux"):
        return f"FUSE benchmark is written for Linux, not {sys.platform}"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    if shutil.which("fusermount") is None:
        return "fusermount not found (apt-get install fuse libfuse2)"
    try:
        import fuse  # noqa: F401  (fusepy; loads libfuse2 at import)
    except (ImportError, OSError) as exc:
        return f"fusepy/libfuse2 not usable: {exc}"
    return None


class _Hang:
    """Holds WRITE requests while the file ``path`` exists (see the module docstring).

    A waiting request blocks on a condition, costing no CPU; one watcher thread looks
    for ``path`` every ``_HANG_POLL`` s, only while some request waits, and wakes them
    all once it is gone (each then looks again itself: creating ``path`` anew hangs
    the next writes again).
    """

    def __init__(self, path: str, log: str | None, only: str | None = None) -> None:
        self.path = path
        self.log = log
        self.only = only
        self._cond = threading.Condition()
        self._waiting = 0
        threading.Thread(target=self._watch, name="hang-watcher", daemon=True).start()

    def _watch(self) -> None:
        while True:
            with self._cond:
                while self._waiting == 0:
                    self._cond.wait()
            time.sleep(_HANG_POLL)
            if not os.path.exists(self.path):
                with self._cond:
                    self._cond.notify_all()

    def wait(self, path: str, offset: int, size: int) -> None:
        if self.only is not None and self.only not in os.path.basename(path):
            return
        if not os.path.exists(self.path):
            return
        if self.log is not None:  # one short O_APPEND write: whole lines, never interleaved
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{path}\t{offset}\t{size}\n".encode())
            finally:
                os.close(fd)
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()  # wakes the watcher
            try:
                while os.path.exists(self.path):
                    self._cond.wait()
            finally:
                self._waiting -= 1


def mount_points() -> set[str]:
    """Every mount point of this process's mount namespace (``/proc/self/mountinfo``;
    empty where there is none: not Linux)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
    return {line.split()[4].encode().decode("unicode_escape") for line in lines if line.strip()}


def blocked_writes(log: str) -> list[str]:
    """The path (inside the mount, from its root) of each WRITE request that started
    waiting on the hang, in order, from the ``blocked_log`` of :func:`mounted`."""
    try:
        with open(log, encoding="utf-8") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return [line.split("\t", 1)[0] for line in data.split("\n")[:-1]]  # whole lines only


def slow_passthrough(root: str, delay: float, hang_while: str | None = None,
                     blocked_log: str | None = None, hang_only: str | None = None) -> Any:
    """The fusepy ``Operations`` mirroring ``root``, sleeping ``delay`` s in each write.

    With ``hang_while``, each write first waits while that file exists, and with
    ``blocked_log`` notes it there; ``hang_only`` limits that to files whose name
    contains it (see the module docstring).
    Defined on call: importing fusepy fails where libfuse2 is missing.
    """
    from fuse import FuseOSError, Operations

    hang = _Hang(hang_while, blocked_log, hang_only) if hang_while is not None else None

    class SlowPassthrough(Operations):  # type: ignore[misc]
        """Every operation forwards to ``root``; ``write`` sleeps ``delay`` first."""

        use_ns = True

        def __init__(self) -> None:
            self.root = os.path.realpath(root)
            self.writes = 0

        def _full(self, path: str) -> str:
            return os.path.join(self.root, path.lstrip("/"))

        def __call__(self, op: str, *args: Any) -> Any:
            try:
                return super().__call__(op, *args)
            except OSError as exc:  # turn every OS error into the errno FUSE expects
                if isinstance(exc, FuseOSError):
                    raise
                raise FuseOSError(exc.errno or errno.EIO) from exc

        # metadata
        def access(self, path: str, amode: int) -> int:
            if not os.access(self._full(path), amode):
                raise FuseOSError(errno.EACCES)
            return 0

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            st = os.lstat(self._full(path))
            keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
            attrs = {key: getattr(st, key) for key in keys}
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._full(path))]

        def statfs(self, path: str) -> dict[str, Any]:
            st = os.statvfs(self._full(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                    "f_files", "f_flag", "f_frsize", "f_namemax")
            return {key: getattr(st, key) for key in keys}

        def chmod(self, path: str, mode: int) -> None:
            os.chmod(self._full(path), mode)

        def chown(self, path: str, uid: int, gid: int) -> None:
            os.chown(self._full(path), uid, gid)

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
            if times is None:
                os.utime(self._full(path))
            else:
                os.utime(self._full(path), ns=times)

        def mkdir(self, path: str, mode: int) -> None:
            os.mkdir(self._full(path), mode)

        def rmdir(self, path: str) -> None:
            os.rmdir(self._full(path))

        def unlink(self, path: str) -> None:
            os.unlink(self._full(path))

        def rename(self, old: str, new: str) -> None:
            os.rename(self._full(old), self._full(new))

        # files
        def create(self, path: str, mode: int, fi: Any = None) -> int:
            return os.open(self._full(path), os.O_RDWR | os.O_CREAT, mode)

        def open(self, path: str, flags: int) -> int:
            return os.open(self._full(path), flags & ~(os.O_CREAT | os.O_EXCL))

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            if hang is not None:
                hang.wait(path, offset, len(data))  # the hung storage, until released
            time.sleep(delay)  # the storage's round trip
            self.writes += 1
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> None:
            if fh is None:
                os.truncate(self._full(path), length)
            else:
                os.ftruncate(fh, length)

        def flush(self, path: str, fh: int) -> int:
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> None:
            if datasync:
                os.fdatasync(fh)
            else:
                os.fsync(fh)

        def release(self, path: str, fh: int) -> None:
            os.close(fh)

    return SlowPassthrough()


def serve(root: str, mountpoint: str, delay: float, hang_while: str | None = None,
          blocked_log: str | None = None, hang_only: str | None = None) -> None:
    """Mount and serve until unmounted (blocks; run it in its own process)."""
    from fuse import FUSE

    FUSE(slow_passthrough(root, delay, hang_while, blocked_log, hang_only), mountpoint, foreground=True, nothreads=False,
         big_writes=True, max_write=128 << 10)


def _unmount(mountpoint: str) -> None:
    subprocess.run(["fusermount", "-u", "-z", mountpoint], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


@contextlib.contextmanager
def mounted(delay: float, *, hang_while: str | None = None,
            blocked_log: str | None = None, hang_only: str | None = None) -> Iterator[str]:
    """Mount a slow passthrough (own process) over a temp folder; yield the mount point.

    Always unmounts and stops the server, also when the body fails. Raises
    ``RuntimeError`` when the mount does not appear within a bound. ``hang_while``,
    ``blocked_log`` and ``hang_only`` make it hung storage (see the module docstring); on the way
    out ``hang_while`` is removed first, so that no write stays blocked on it.
    """
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    base = tempfile.mkdtemp(prefix="asb-fuse-")
    root, mountpoint = os.path.join(base, "backing"), os.path.join(base, "mnt")
    os.mkdir(root)
    os.mkdir(mountpoint)
    command = [sys.executable, "-m", "benchmarks.fuse_slowfs", root, mountpoint, "--delay", str(delay)]
    if hang_while is not None:
        command += ["--hang-while", os.path.abspath(hang_while)]
    if blocked_log is not None:
        command += ["--blocked-log", os.path.abspath(blocked_log)]
    if hang_only is not None:
        command += ["--hang-only", hang_only]
    server = subprocess.Popen(
        command,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + _MOUNT_TIMEOUT
        while not os.path.ismount(mountpoint):
            if server.poll() is not None:
                err = server.stderr.read().decode(errors="replace") if server.stderr else ""
                raise RuntimeError(f"FUSE server exited with {server.returncode}: {err.strip()[-500:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"FUSE mount did not appear within {_MOUNT_TIMEOUT:g} s")
            time.sleep(0.05)
        yield mountpoint
    finally:
        if hang_while is not None:  # release the writes still blocked, if any
            with contextlib.suppress(FileNotFoundError):
                os.remove(hang_while)
        _unmount(mountpoint)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        if server.stderr:
            server.stderr.close()
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the folder to mirror")
    parser.add_argument("mountpoint")
    parser.add_argument("--delay", type=float, default=0.005, help="seconds each write sleeps")
    parser.add_argument("--hang-while", metavar="PATH",
                        help="every write blocks while this file (outside the mount) exists")
    parser.add_argument("--blocked-log", metavar="LOG",
                        help="append a line here for each write that starts blocking")
    parser.add_argument("--hang-only", metavar="PART",
                        help="only writes to files whose name contains PART hang")
    args = parser.parse_args(argv)
    serve(args.root, args.mountpoint, args.delay, args.hang_while, args.blocked_log, args.hang_only)


if __name__ == "__main__":
    main(sys.argv[1:])
