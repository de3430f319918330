"""Hung storage stalls only the writers on it; every other writer of the process goes on.

A hung mount (a dead NFS server, a stuck FUSE daemon) makes ``write(2)`` never return:
the thread that called it is stuck until the storage answers. Each file sink runs its
storage calls on a thread of its own, so a hung file holds that thread only. Proved
here, with a healthy writer on local disk beside ``HUNG_WRITERS`` (8) hung ones:

* a :class:`GatedSink` per hung writer (blocking the thread of its own file, as a hung
  write does): the healthy writer writes all its 2000 events and its
  ``flush(timeout=DEADLINE)`` returns while all 8 are stuck; once the storage comes
  back every event of every writer is on disk, counts exact, nothing lost or dropped;
* a real hung FUSE mount (:mod:`benchmarks.fuse_slowfs` in its own process, every WRITE
  request blocked in the file system while a gate file exists): 8 default writers
  (local file sink, no ``sink_factory``), each in its own folder of the mount, until
  the file system has received exactly one blocked write from each (the kernel holds
  their ``write(2)``); then the same as above for the healthy writer. While hung, the 8
  hold one ``asyncsummary-file`` thread and one descriptor (their event file on the
  mount) each: no other descriptor is opened, and any other new thread is one of the
  shared loop's process-wide pool; the file system still holds exactly one blocked
  write per writer, a hung writer's ``flush`` times out (``FlushTimeoutError``) and
  none of their events is written. After release every event of every writer is read
  back exactly. Where FUSE cannot be mounted the test skips with the reason, and fails
  instead when ``CI`` is set: CI must run it;
* ``flush_all`` flushes every writer at once: a hung writer opened first times out
  (``FlushTimeoutError``, raised after all), and the healthy one's events are on disk
  when ``flush_all`` returns.

No test leaves a thread or a mount behind (:func:`no_leftovers`, every test here): once
its writers are closed each per-file thread ends, and the FUSE mount is gone from
``/proc/self/mountinfo``. Read back with TensorBoard's loader and ``tf.data`` (TensorBoard's
alone in the core suite), counts exact.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field

import pytest

from asyncsummary import AsyncSummaryWriter, FileSink, FlushTimeoutError, flush_all
from asyncsummary._loop import get_loop
from asyncsummary.testing import GatedSink
from benchmarks import fuse_slowfs

from .hung_storage import HungMount
from .hung_storage import hung_mount as mount_hung_storage
from .procs import DEADLINE, read_run

HUNG_WRITERS = 8
HEALTHY_EVENTS = 2000
HUNG_EVENTS = 300
#: Seconds a per-file thread may take to end once its writer is closed.
THREAD_GRACE = 10.0
#: The thread each local event file runs its storage calls on (``_sinks.FileSink``).
FILE_THREAD = "asyncsummary-file"
#: Process-wide threads of the shared background loop (``_loop.py``), see no_leftovers.
LOOP_THREAD = "asyncsummary-loop"
IO_POOL_THREAD = "asyncsummary-io-"
IO_POOL_WORKERS = 4  # DaemonThreadPoolExecutor's default max_workers


def _steps(logdir: str) -> list[int]:
    files = read_run(logdir)
    assert all(f.tail == 0 for f in files)
    return [e.step for f in files for e in f.events if e.HasField("summary")]


def _fds() -> dict[int, str]:
    """This process's open descriptors and what each points to."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listdir's own descriptor, gone by now
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


@dataclass
class Leftovers:
    """What a test registers for :func:`no_leftovers` to check after its cleanup."""

    mounts: list[str] = field(default_factory=list)


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail a test that leaves a per-file thread or a mount behind.

    Threads: every thread started during the test whose name starts with
    ``asyncsummary-file`` (the one-thread executor each local event file runs its
    storage calls on, ``_sinks.FileSink``; let go by the sink's close, it ends once
    idle) must have ended, polled up to ``THREAD_GRACE`` s after the test's own cleanup
    (this fixture is set up first, so torn down last). Only the shared background
    loop's threads are process-wide and may stay, as ``_loop.py`` makes them: the one
    ``asyncsummary-loop`` thread running the loop (started on first use, never stopped;
    a forked child starts its own) and the loop's default executor, a
    ``DaemonThreadPoolExecutor`` of at most ``IO_POOL_WORKERS`` ``asyncsummary-io-N``
    workers, started on demand and idle forever after (it is never shut down); both
    serve every writer of the process. Any other thread the test started must have
    ended too; process-wide ones must stay within those counts.

    Mounts: every mount point a test registers in ``Leftovers.mounts`` must be gone
    from ``/proc/self/mountinfo`` (only those: other processes of the machine may mount
    and unmount FUSE file systems of their own meanwhile).
    """
    before = set(threading.enumerate())
    leftovers = Leftovers()
    yield leftovers

    def started_here() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and t.is_alive()]

    def process_wide(thread: threading.Thread) -> bool:
        return thread.name == LOOP_THREAD or thread.name.startswith(IO_POOL_THREAD)

    deadline = time.monotonic() + THREAD_GRACE
    while (left := [t for t in started_here() if not process_wide(t)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not left, f"threads left running {THREAD_GRACE:g} s after the test: {sorted(t.name for t in left)}"
    alive = threading.enumerate()
    assert sum(t.name == LOOP_THREAD for t in alive) <= 1, [t.name for t in alive]
    assert sum(t.name.startswith(IO_POOL_THREAD) for t in alive) <= IO_POOL_WORKERS, [t.name for t in alive]
    mounted = fuse_slowfs.mount_points()
    assert not [m for m in leftovers.mounts if m in mounted], f"left mounted: {leftovers.mounts}"


# ------------------------------------------------------------------ gated sinks
class _HungWriters:
    """Writers whose every write blocks its file's thread until ``release()``."""

    def __init__(self, root, count: int, events: int, **options) -> None:
        self.gates = [threading.Event() for _ in range(count)]
        self.sinks: list[GatedSink] = []
        self.logdirs = [str(root / f"hung{i}") for i in range(count)]
        self.writers = []
        for logdir, gate in zip(self.logdirs, self.gates, strict=True):

            def factory(path: str, gate: threading.Event = gate) -> GatedSink:
                sink = GatedSink(FileSink(path), gate)
                self.sinks.append(sink)
                return sink

            writer = AsyncSummaryWriter(logdir, sink_factory=factory, **options)
            self.writers.append(writer)
            for step in range(events):
                writer.add_scalar("hung", step, step)

    def wait_until_stuck(self) -> None:
        """Every writer has a write stuck in its storage (made on the loop: poll, bounded)."""
        deadline = time.monotonic() + DEADLINE
        while len(self.sinks) < len(self.writers) or not all(
            s.entered.is_set() for s in self.sinks
        ):
            assert time.monotonic() < deadline, "the hung writers never started writing"
            time.sleep(0.01)

    def release(self) -> None:
        for gate in self.gates:
            gate.set()


def _let_go(group: _HungWriters | _HungMount) -> None:
    """Release the hung storage and close every writer, whatever the test did (its own
    assertions said what went wrong)."""
    group.release()
    for writer in group.writers:
        with contextlib.suppress(Exception):
            writer.close(timeout=DEADLINE)


def _released_writers_write_everything(group: _HungWriters | _HungMount, events: int) -> None:
    """Once the storage is back, every hung writer closes with each of its events on disk."""
    group.release()
    for writer, logdir in zip(group.writers, group.logdirs, strict=True):
        writer.close(timeout=DEADLINE)
        assert writer.stats().lost == writer.stats().dropped == 0
        assert _steps(logdir) == list(range(events))


@pytest.fixture
def hung_writers(tmp_path):
    made: list[_HungWriters] = []

    def make(count: int, events: int, **options) -> _HungWriters:
        made.append(_HungWriters(tmp_path, count, events, **options))
        return made[-1]

    try:
        yield make
    finally:
        for group in made:
            _let_go(group)


def _healthy_writer_goes_on(tmp_path) -> None:
    """A writer on local disk writes all its events; its flush returns in its bound."""
    healthy_dir = str(tmp_path / "healthy")
    healthy = AsyncSummaryWriter(healthy_dir, flush_secs=3600)
    try:
        for step in range(HEALTHY_EVENTS):
            healthy.add_scalar("healthy", step, step)
        healthy.flush(timeout=DEADLINE)  # raises FlushTimeoutError if stalled
        assert _steps(healthy_dir) == list(range(HEALTHY_EVENTS))
    finally:
        healthy.close(timeout=DEADLINE)
    assert healthy.stats().lost == healthy.stats().dropped == 0


def test_hung_writers_stall_nothing_but_themselves(tmp_path, hung_writers):
    hung = hung_writers(HUNG_WRITERS, HUNG_EVENTS, flush_secs=0.02)
    hung.wait_until_stuck()

    _healthy_writer_goes_on(tmp_path)
    assert all(writer.stats().written == 0 for writer in hung.writers), "storage was not hung"

    _released_writers_write_everything(hung, HUNG_EVENTS)


# ------------------------------------------------------------------ a real hung mount
class _HungMount(HungMount):
    """The hung mount, and the writers a test made on it."""

    def __init__(self, mount: HungMount) -> None:
        super().__init__(mount.mountpoint, mount.gate, mount.log)
        self.logdirs: list[str] = []
        self.writers: list[AsyncSummaryWriter] = []

    def writer(self, name: str, **options) -> AsyncSummaryWriter:
        """A default writer (local file sink) in its own folder of the mount."""
        self.logdirs.append(os.path.join(self.mountpoint, name))
        self.writers.append(AsyncSummaryWriter(self.logdirs[-1], **options))
        return self.writers[-1]


@pytest.fixture
def hung_mount(tmp_path, no_leftovers):
    """A hung FUSE mount (writes block until ``release()``); writers closed, unmounted after."""
    with mount_hung_storage(tmp_path) as mounted:
        no_leftovers.mounts.append(mounted.mountpoint)
        mount = _HungMount(mounted)
        try:
            yield mount
        finally:  # then unmounted
            _let_go(mount)


def test_hung_fuse_mount_stalls_nothing_but_its_writers(tmp_path, hung_mount):
    # The process-wide loop (and the pool threads a writer's life starts) exist before
    # the baseline: what grows after it is what the hung writers hold.
    get_loop()
    with AsyncSummaryWriter(str(tmp_path / "warm-up")) as warm:
        warm.add_scalar("warm", 0, 0)
    threads_before = set(threading.enumerate())
    fds_before = _fds()

    names = [f"hung{i}" for i in range(HUNG_WRITERS)]
    for name in names:
        writer = hung_mount.writer(name, flush_secs=0.02)
        for step in range(HUNG_EVENTS):
            writer.add_scalar("hung", step, step)
    # One write per writer reaches the file system and blocks there; each writer's
    # file thread is stuck in it, so no second one comes.
    hung_mount.wait_until_blocked(dict.fromkeys(names, 1))

    new_threads = [t for t in threading.enumerate() if t not in threads_before]
    file_threads = [t for t in new_threads if t.name.startswith(FILE_THREAD)]
    assert len(file_threads) == HUNG_WRITERS, [t.name for t in new_threads]
    assert all(t.name.startswith(IO_POOL_THREAD) for t in new_threads if t not in file_threads)
    fds = _fds()
    new_fds = {fd: target for fd, target in fds.items() if fds_before.get(fd) != target}
    on_mount = [t for t in new_fds.values() if t.startswith(hung_mount.mountpoint + os.sep)]
    assert len(on_mount) == HUNG_WRITERS, new_fds
    assert len(new_fds) <= HUNG_WRITERS, new_fds

    _healthy_writer_goes_on(tmp_path)

    with pytest.raises(FlushTimeoutError):
        hung_mount.writers[0].flush(timeout=0.2)
    assert all(writer.stats().written == 0 for writer in hung_mount.writers), "storage was not hung"
    assert hung_mount.blocked() == dict.fromkeys(names, 1)

    _released_writers_write_everything(hung_mount, HUNG_EVENTS)


# ------------------------------------------------------------------ flush_all
def test_flush_all_flushes_the_others_while_one_writer_hangs(tmp_path, hung_writers):
    hung = hung_writers(1, 10, flush_secs=0.02)  # opened first: flushed first in order
    hung.wait_until_stuck()
    healthy_dir = str(tmp_path / "healthy")
    # Nothing is written before a flush asks: no timer, no batch wake-up.
    healthy = AsyncSummaryWriter(healthy_dir, flush_secs=3600, batch_bytes=64 << 20)
    for step in range(500):
        healthy.add_scalar("healthy", step, step)

    with pytest.raises(FlushTimeoutError):
        flush_all(timeout=1.0)
    assert _steps(healthy_dir) == list(range(500))
    healthy.close(timeout=DEADLINE)

    _released_writers_write_everything(hung, 10)
