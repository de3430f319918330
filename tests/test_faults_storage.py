"""Storage faults: a full disk, a file-size limit, a read-only or removed logdir, a hung sink.

What happens to pending events after a storage failure (the engine's contract):

* the failure is kept as a :class:`WriteError` chained to the ``OSError``; the caller's
  next ``add_*`` raises it once, and every ``flush()`` whose events could not be
  written raises it too;
* nothing is dropped: the bytes the storage did not take stay in memory and are
  written again, into the same file from the exact byte where the failure stopped
  (a half-written record is completed, never followed by another record), or into a
  new file when the file could not be created; so once the storage recovers, every
  event is on disk, in order, with no torn record (``stats().lost == 0``);
* ``close(timeout)`` gives up when the storage has not recovered by its timeout: it
  raises a :class:`WriteError` naming the events it could not write, and counts them
  in ``stats().lost`` (``written + lost == queued``); the file ends with at most one
  truncated record;
* a removed logdir loses only what the removed file held since its last flush
  (counted in ``stats().lost``); the writer starts a new file in a new folder;
* a storage that hangs (never returns) makes ``flush(timeout)`` and ``close(timeout)``
  raise :class:`FlushTimeoutError` after their timeout; its events stay queued on the
  background loop and are written if the storage comes back while the process lives.
  A ``block`` add waits at most ``block_timeout``, then raises
  :class:`PendingLimitError`; the drop policies never wait.

Real failures come from the kernel, in child processes: ``RLIMIT_FSIZE`` (``EFBIG``),
a full ``tmpfs`` (``ENOSPC``) and a read-only bind mount (``EROFS``), the last two in
a private mount namespace (``unshare``), which the kernel tears down with the child.
Running as root does not help a writer there: the kernel refuses EROFS and ENOSPC
to root too (file permissions, which root ignores, are not used).
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time

import pytest

from asyncsummary import (
    AsyncSummaryWriter,
    FileSink,
    FlushTimeoutError,
    PendingLimitError,
    WriteError,
)
from asyncsummary.testing import GatedSink

from .procs import Child, read_run
from .readers import event_files

# A private mount namespace; without root, inside a user namespace mapped to root.
MOUNT_NAMESPACE = ["unshare", "--mount", "--propagation", "private"] + (
    [] if os.geteuid() == 0 else ["--map-root-user"]
)


def _scalar_steps(logdir: str) -> tuple[list[int], list[int]]:
    """(steps of every scalar on disk, truncated-tail size of each file)."""
    files = read_run(logdir)
    steps = [e.step for f in files for e in f.events if e.HasField("summary")]
    return steps, [f.tail for f in files]


def _stats(line: str) -> dict[str, int]:
    """``WORD k=v k=v`` -> {k: v}."""
    return {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}


# Every storage failure is raised once, by the caller's next call: an add, a flush or
# a close, whichever comes first. While the storage is down the engine retries (with
# backoff), and each failed retry is one more failure to raise; so after a recovery
# the first calls may still raise failures of retries made while it was down. These
# helpers let a child absorb those (the call raised before doing anything, or, for
# close, after closing); what matters is on disk and in stats().
RECOVERY_HELPERS = """
    from asyncsummary import WriteError

    def add(writer, step):
        try:
            writer.add_scalar("x", step, step)
        except WriteError:  # an earlier failure; this add's own event is queued
            pass

    def flush_and_close(writer):
        for _ in range(4):  # one report per failed retry, then it returns
            try:
                writer.flush(timeout=30)
                break
            except WriteError:
                pass
        try:
            writer.close()
        except WriteError:  # raised after the close completed
            pass
"""


# ----------------------------------------------------------------- RLIMIT_FSIZE: EFBIG
FSIZE_CHILD = RECOVERY_HELPERS + """
    import errno, resource, signal, sys
    from asyncsummary import AsyncSummaryWriter, WriteError

    logdir, mode = sys.argv[1], sys.argv[2]
    # Past the limit the kernel sends SIGXFSZ (which kills); ignored, write() fails
    # with EFBIG instead. Only the soft limit is lowered, so it can be raised back.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, resource.RLIM_INFINITY))
    writer = AsyncSummaryWriter(logdir, flush_secs=0.05)

    def report(word):
        s = writer.stats()
        print(word, f"queued={s.queued} written={s.written} lost={s.lost} "
              f"pending={s.pending_events} errors={s.write_errors}", flush=True)

    step = 0
    for _ in range(10_000_000):  # the timer writes; the limit is hit within ~700 events
        try:
            writer.add_scalar("x", step, step)
        except WriteError as exc:  # an earlier failure; this add's own event is queued
            print("ADD_ERROR", exc.__cause__.errno, flush=True)
            step += 1
            break
        step += 1
    try:
        writer.flush(timeout=30)
    except WriteError as exc:
        print("FLUSH_ERROR", exc.__cause__.errno, flush=True)
    report("FAILING")
    if mode == "recover":
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        for _ in range(1000):
            add(writer, step)
            step += 1
        flush_and_close(writer)
    else:
        try:
            writer.close(timeout=1)
        except WriteError as exc:
            print("CLOSE_ERROR", str(exc).replace(chr(10), " "), flush=True)
    report("DONE")
    print("STEPS", step, flush=True)
"""


def test_file_size_limit_events_kept_and_rewritten_from_the_exact_byte(logdir):
    """EFBIG from the kernel: next add and flush raise it; after the limit is raised
    the same file is completed, every event on disk, no torn record."""
    with Child(FSIZE_CHILD, logdir, "recover") as child:
        assert child.expect("ADD_ERROR") == f"ADD_ERROR {errno.EFBIG}"
        assert child.expect("FLUSH_ERROR") == f"FLUSH_ERROR {errno.EFBIG}"
        failing = _stats(child.expect("FAILING"))
        done = _stats(child.expect("DONE"))
        steps = int(child.expect("STEPS").split()[1])
        assert child.wait() == 0, child.stderr()
    # While failing: some events unwritten, none lost (kept in memory for the retry).
    assert failing["lost"] == 0 and failing["errors"] >= 1
    assert failing["written"] < failing["queued"]
    assert done == dict(done, queued=steps, written=steps, lost=0, pending=0)
    on_disk, tails = _scalar_steps(logdir)
    assert len(event_files(logdir)) == 1 and tails == [0]  # the same file, completed
    assert on_disk == list(range(steps))


def test_file_size_limit_close_gives_up_and_counts_lost(logdir):
    """Storage that never recovers: close(timeout) raises a WriteError naming the lost
    events; they are counted; the file holds the rest, at most one truncated record."""
    with Child(FSIZE_CHILD, logdir, "give_up") as child:
        child.expect("ADD_ERROR")
        close_error = child.expect("CLOSE_ERROR")
        done = _stats(child.expect("DONE"))
        steps = int(child.expect("STEPS").split()[1])
        assert child.wait() == 0, child.stderr()
    assert done["lost"] > 0 and f"{done['lost']} events" in close_error
    assert done["written"] + done["lost"] == done["queued"] == steps
    (path,) = event_files(logdir)
    assert os.path.getsize(path) == 30_000  # the kernel wrote up to the limit
    on_disk, tails = _scalar_steps(logdir)
    assert on_disk == list(range(len(on_disk))) and len(on_disk) >= done["written"]
    assert len(on_disk) < steps


# --------------------------------------------------------------------- tmpfs full: ENOSPC
ENOSPC_CHILD = RECOVERY_HELPERS + """
    import os, shutil, subprocess, sys
    from asyncsummary import AsyncSummaryWriter, WriteError

    logdir, out = sys.argv[1], sys.argv[2]
    os.makedirs(logdir)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", logdir], check=True)
    filler = os.path.join(logdir, "filler")
    with open(filler, "wb") as f:
        f.write(bytes(200 << 10))  # leaves about 56 kB
    writer = AsyncSummaryWriter(logdir, flush_secs=3600)
    for step in range(3000):  # about 130 kB of events
        writer.add_scalar("x", step, step)
    try:
        writer.flush(timeout=30)
    except WriteError as exc:
        print("FLUSH_ERROR", exc.__cause__.errno, flush=True)
    s = writer.stats()
    print("FULL", f"lost={s.lost} written={s.written}", flush=True)
    os.remove(filler)  # space comes back
    flush_and_close(writer)
    s = writer.stats()
    print("DONE", f"lost={s.lost} written={s.written}", flush=True)
    shutil.copytree(logdir, out)  # the tmpfs goes away with this namespace
"""


def test_disk_full_then_freed_loses_nothing(tmp_path):
    """ENOSPC from a real full file system; once space is freed, every event is written."""
    out = str(tmp_path / "out")
    with Child(ENOSPC_CHILD, str(tmp_path / "mnt"), out, prefix=MOUNT_NAMESPACE) as child:
        assert child.expect("FLUSH_ERROR") == f"FLUSH_ERROR {errno.ENOSPC}"
        full = _stats(child.expect("FULL"))
        done = _stats(child.expect("DONE"))
        assert child.wait() == 0, child.stderr()
    assert full["lost"] == 0 and full["written"] < 3000
    assert done == {"lost": 0, "written": 3000}
    on_disk, tails = _scalar_steps(out)
    assert on_disk == list(range(3000)) and tails == [0]


# ------------------------------------------------------------ read-only logdir: EROFS
READ_ONLY_CHILD = RECOVERY_HELPERS + """
    import os, subprocess, sys
    from asyncsummary import AsyncSummaryWriter, WriteError

    logdir, mode = sys.argv[1], sys.argv[2]
    os.makedirs(logdir)
    read_only = lambda: subprocess.run(["mount", "--bind", "-o", "ro", logdir, logdir], check=True)
    writable = lambda: subprocess.run(["umount", logdir], check=True)
    # "rotate": a file is open when the folder turns read-only; the next file fails.
    writer = AsyncSummaryWriter(logdir, flush_secs=3600, max_file_bytes=2000)
    step = 0
    if mode == "rotate":
        for _ in range(100):
            writer.add_scalar("x", step, step)
            step += 1
        writer.flush()
    read_only()
    for _ in range(100):
        writer.add_scalar("x", step, step)
        step += 1
    try:
        writer.flush(timeout=30)
    except WriteError as exc:
        print("FLUSH_ERROR", exc.__cause__.errno, flush=True)
    add(writer, step)  # events are still accepted meanwhile
    step += 1
    writable()
    flush_and_close(writer)
    s = writer.stats()
    print("DONE", f"lost={s.lost} written={s.written} steps={step}", flush=True)
"""


@pytest.mark.parametrize("mode", ["start", "rotate"])
def test_read_only_logdir_reported_then_written_when_writable(logdir, mode):
    """EROFS when the event file is created (at start, or at a rotation): flush raises
    it once, the events wait, and are all written once the folder is writable."""
    with Child(READ_ONLY_CHILD, logdir, mode, prefix=MOUNT_NAMESPACE) as child:
        assert child.expect("FLUSH_ERROR") == f"FLUSH_ERROR {errno.EROFS}"
        done = _stats(child.expect("DONE"))
        assert child.wait() == 0, child.stderr()
    assert done == dict(done, lost=0, written=done["steps"])
    on_disk, tails = _scalar_steps(logdir)
    assert on_disk == list(range(done["steps"])) and set(tails) == {0}
    if mode == "rotate":
        assert len(event_files(logdir)) > 1


# ---------------------------------------------------------------- logdir removed
def test_logdir_removed_while_the_timer_writes(tmp_path):
    """Only what the removed file got since its last flush is lost, and counted; the
    caller hears of it once; later events go to a new file in a re-created folder."""
    logdir = str(tmp_path / "run")
    writer = AsyncSummaryWriter(logdir, flush_secs=0.02)
    for step in range(500):
        writer.add_scalar("x", step, step)
    writer.flush()
    shutil.rmtree(logdir)
    errors, step = [], 500
    deadline = time.monotonic() + 60
    while not errors or step < 3000:  # add, as a trainer does, until the failure is reported
        assert time.monotonic() < deadline, "the removal was never reported"
        try:
            writer.add_scalar("x", step, step)
            step += 1
        except WriteError as exc:
            errors.append(exc)  # raised once, after queueing this add's own event
            step += 1
        if step % 50 == 0:
            time.sleep(0.001)  # a trainer's step takes time; the timer flushes meanwhile
    writer.close()
    stats = writer.stats()
    assert len(errors) == 1 and isinstance(errors[0].__cause__, FileNotFoundError)
    assert stats.lost > 0 and stats.written == step  # lost ones had been written
    on_disk, tails = _scalar_steps(logdir)
    assert len(event_files(logdir)) == 1 and tails == [0]
    assert on_disk == list(range(500 + stats.lost, step))


# ------------------------------------------------------------------------- hung sink
@pytest.fixture
def hung(logdir):
    """A writer whose storage never returns from a write (until the test lets it go)."""
    gate = threading.Event()
    sinks: list[GatedSink] = []

    def factory(path: str) -> GatedSink:
        sinks.append(GatedSink(FileSink(path), gate))
        return sinks[-1]

    def make(**options):
        return AsyncSummaryWriter(logdir, sink_factory=factory, **options)

    make.gate, make.sinks = gate, sinks  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        gate.set()  # release the executor thread


def _returns_within(call, bound: float):
    """Run ``call`` on a thread; fail unless it returns (or raises) within ``bound`` s.

    The bound is generous (several times the timeout under test): it checks "bounded",
    not speed.
    """
    outcome: list = []

    def target():
        try:
            outcome.append(("ok", call()))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(("raised", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"call still blocked after {bound} s"
    return outcome[0]


def test_hung_storage_flush_times_out_and_keeps_events(hung, logdir):
    writer = hung(flush_secs=3600)
    for step in range(100):
        writer.add_scalar("x", step, step)
    kind, error = _returns_within(lambda: writer.flush(timeout=0.3), bound=10)
    assert kind == "raised" and isinstance(error, FlushTimeoutError)
    assert "100 events not yet written" in str(error)
    writer.add_scalar("x", 100, 100)  # a timeout is not a failure: adds go on
    hung.gate.set()
    writer.flush(timeout=30)
    writer.close()
    assert _scalar_steps(logdir)[0] == list(range(101))
    assert writer.stats().lost == 0


@pytest.mark.parametrize("policy", ["block", "drop_newest", "drop_oldest", "raise"])
def test_hung_storage_never_blocks_the_training_thread_beyond_the_bound(hung, logdir, policy):
    """At the pending bound: ``block`` waits ``block_timeout`` then PendingLimitError,
    ``raise`` raises at once, the drop policies drop and count; memory stays bounded."""
    bound = 64 << 10
    writer = hung(flush_secs=3600, max_pending_bytes=bound, batch_bytes=4096,
                  policy=policy, block_timeout=0.3)

    def train():
        for step in range(5000):  # far more than the bound holds
            writer.add_scalar("x", step, step)

    kind, error = _returns_within(train, bound=30)
    stats = writer.stats()
    if policy in ("block", "raise"):
        assert kind == "raised" and isinstance(error, PendingLimitError)
    else:
        assert kind == "ok" and stats.dropped > 0
    assert stats.peak_pending_bytes <= bound
    kind, error = _returns_within(lambda: writer.close(timeout=0.3), bound=10)
    assert isinstance(error, FlushTimeoutError)


def test_hung_storage_close_times_out_then_finishes_if_storage_returns(hung, logdir):
    """close() on a hung storage raises FlushTimeoutError after its timeout and the
    writer is closed; the background loop still holds the events and writes them if
    the storage comes back (here: the gate opens) while the process lives."""
    writer = hung(flush_secs=3600)
    for step in range(100):
        writer.add_scalar("x", step, step)
    kind, error = _returns_within(lambda: writer.close(timeout=0.3), bound=10)
    assert kind == "raised" and isinstance(error, FlushTimeoutError)
    assert writer.closed
    writer.close()  # idempotent
    hung.gate.set()
    deadline = time.monotonic() + 30
    while writer.stats().written < 100:
        assert time.monotonic() < deadline, "events not written after the storage returned"
        time.sleep(0.01)
    sink = hung.sinks[0]
    while sink.inner._file is not None:  # closed once everything is written
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert _scalar_steps(logdir)[0] == list(range(100))
    assert writer.stats().lost == 0

