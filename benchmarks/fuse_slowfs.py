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
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["mounted", "slow_passthrough", "unavailable"]

_MOUNT_TIMEOUT = 20.0


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


def slow_passthrough(root: str, delay: float) -> Any:
    """The fusepy ``Operations`` mirroring ``root``, sleeping ``delay`` s in each write.

    Defined on call: importing fusepy fails where libfuse2 is missing.
    """
    from fuse import FuseOSError, Operations

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


def serve(root: str, mountpoint: str, delay: float) -> None:
    """Mount and serve until unmounted (blocks; run it in its own process)."""
    from fuse import FUSE

    FUSE(slow_passthrough(root, delay), mountpoint, foreground=True, nothreads=False,
         big_writes=True, max_write=128 << 10)


def _unmount(mountpoint: str) -> None:
    subprocess.run(["fusermount", "-u", "-z", mountpoint], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


@contextlib.contextmanager
def mounted(delay: float) -> Iterator[str]:
    """Mount a slow passthrough (own process) over a temp folder; yield the mount point.

    Always unmounts and stops the server, also when the body fails. Raises
    ``RuntimeError`` when the mount does not appear within a bound.
    """
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    base = tempfile.mkdtemp(prefix="asb-fuse-")
    root, mountpoint = os.path.join(base, "backing"), os.path.join(base, "mnt")
    os.mkdir(root)
    os.mkdir(mountpoint)
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.fuse_slowfs", root, mountpoint, "--delay", str(delay)],
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
    args = parser.parse_args(argv)
    serve(args.root, args.mountpoint, args.delay)


if __name__ == "__main__":
    main(sys.argv[1:])
