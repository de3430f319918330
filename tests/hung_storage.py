"""A real hung FUSE mount for tests: every WRITE request blocks until ``release()``.

:mod:`benchmarks.fuse_slowfs` in its own process, with ``hang_while``: the kernel hands
each write to the file system, which holds it while a gate file exists, so the
``write(2)`` that sent it does not return (a dead NFS server, a stuck FUSE daemon).
Writers are the library's defaults (local file sink, no ``sink_factory``): what a
framework makes through ``asyncsummary.patch()`` meets it as users' writers would.

``only``: hold only the writes to files whose name contains it (``"tfevents"``: the
event files), so a framework's own small files (Lightning's ``hparams.yaml``,
accelerate's ``hparams.yml``, which they write on the training thread) go through.

Where FUSE cannot be mounted the caller skips with the reason on a developer's
machine and fails under ``CI=true`` (:func:`tests.must_run.cannot_run_here`).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import fuse_slowfs

from .must_run import cannot_run_here
from .procs import DEADLINE


class HungMount:
    """A mounted hung file system: where it is, what it holds, how to release it."""

    def __init__(self, mountpoint: str, gate: Path, log: Path) -> None:
        self.mountpoint = mountpoint
        self.gate = gate
        self.log = log

    def blocked(self) -> collections.Counter[str]:
        """Writes blocked in the file system so far, counted per top folder of the mount."""
        return collections.Counter(
            path.lstrip("/").split("/", 1)[0] for path in self.blocked_paths()
        )

    def blocked_paths(self) -> list[str]:
        """The path (from the mount's root) of each write that blocked, in order."""
        return fuse_slowfs.blocked_writes(str(self.log))

    def wait_until_blocked(self, expected: dict[str, int]) -> None:
        """The file system holds ``expected`` blocked writes (poll, bounded)."""
        deadline = time.monotonic() + DEADLINE
        while (seen := self.blocked()) != expected:
            assert time.monotonic() < deadline, f"blocked writes: {dict(seen)}, expected {expected}"
            time.sleep(0.01)

    def assert_stalled(self, name_part: str = "tfevents") -> None:
        """A write to a file whose name holds ``name_part`` is held (poll, bounded), and
        nothing released the mount."""
        deadline = time.monotonic() + DEADLINE
        while not any(name_part in os.path.basename(p) for p in self.blocked_paths()):
            assert time.monotonic() < deadline, f"no write to a {name_part} file was held"
            time.sleep(0.01)
        assert self.hung

    @property
    def hung(self) -> bool:
        """True until :meth:`release`."""
        return self.gate.exists()

    def release(self) -> None:
        """Let every held write through, and every later one."""
        self.gate.unlink(missing_ok=True)


@contextlib.contextmanager
def hung_mount(folder: Path, *, only: str | None = None) -> Iterator[HungMount]:
    """Mount hung storage (gate and log files in ``folder``); always released and unmounted."""
    reason = fuse_slowfs.unavailable()
    if reason is not None:
        cannot_run_here(f"FUSE unavailable: {reason}")
    gate = folder / "storage-hangs"
    gate.touch()
    log = folder / "blocked-writes.log"
    with fuse_slowfs.mounted(
        0.0, hang_while=str(gate), blocked_log=str(log), hang_only=only
    ) as mountpoint:
        mount = HungMount(mountpoint, gate, log)
        try:
            yield mount
        finally:
            mount.release()
