"""SIGTERM/SIGINT with and without ``install_shutdown_handlers``, and exit without close().

Every scenario runs in a child process. The child adds events with a writer that
writes nothing on its own (``flush_secs`` an hour, the batch threshold far away), so
what reaches the disk is decided only by ``flush()``, the signal handler or ``atexit``:

* with the handler, SIGTERM and SIGINT first flush every writer, then the signal does
  what it did before: the exit status is still the signal's;
* without it, SIGTERM kills the process the default way: only what was flushed is on
  disk, the rest is lost (the handler exists for this). SIGINT raises
  ``KeyboardInterrupt``, the interpreter unwinds and ``atexit`` writes everything;
* a process whose main thread ends without ``close()`` writes everything at exit,
  also while other threads are still adding, and exits within the writers'
  ``close_timeout`` even when the storage hangs.
"""

from __future__ import annotations

import json
import random
import signal

import pytest

from .procs import Child, read_run, run

FLUSHED, ADDED = 1000, 3000

# Adds FLUSHED events and flushes them, adds more, then waits for a signal. Nothing
# but a flush or a close writes the rest: the batch that wakes the loop early is larger
# than all of them (2000 events of about 270 counted bytes each passed the default
# 512 KiB, so the loop sometimes wrote them before the signal came).
WAITING_CHILD = f"""
    import signal, sys
    from asyncsummary import AsyncSummaryWriter, install_shutdown_handlers

    logdir, handler = sys.argv[1], sys.argv[2] == "handler"
    if handler:
        install_shutdown_handlers(timeout=30)
    writer = AsyncSummaryWriter(logdir, flush_secs=3600, batch_bytes=64 << 20)
    for step in range({FLUSHED}):
        writer.add_scalar("x", step, step)
    writer.flush()
    for step in range({FLUSHED}, {ADDED}):
        writer.add_scalar("x", step, step)
    print("WAITING", flush=True)
    while True:
        signal.pause()
"""


def _steps(logdir: str, torn_tail_ok: bool = False) -> list[int]:
    """Steps of every event on disk, after checking each file reads whole."""
    steps = []
    for f in read_run(logdir):
        assert torn_tail_ok or f.tail == 0, f"{f.path} ends in a torn record"
        steps.extend(e.step for e in f.events if e.HasField("summary"))
    return steps


@pytest.mark.parametrize(
    "signum, handler, status, on_disk",
    [
        # The handler flushes, then the default action: killed by the signal.
        (signal.SIGTERM, "handler", -signal.SIGTERM, ADDED),
        # The handler flushes, then Python's KeyboardInterrupt; uncaught, it ends the
        # process "by SIGINT" (status -2) after atexit, as Python always does.
        (signal.SIGINT, "handler", -signal.SIGINT, ADDED),
        # Documented: without the handler SIGTERM skips atexit; unflushed events are lost.
        (signal.SIGTERM, "none", -signal.SIGTERM, FLUSHED),
        # KeyboardInterrupt unwinds the interpreter normally, so atexit writes everything.
        (signal.SIGINT, "none", -signal.SIGINT, ADDED),
    ],
)
def test_signal_while_waiting(logdir, signum, handler, status, on_disk):
    with Child(WAITING_CHILD, logdir, handler) as child:
        child.expect("WAITING")
        child.signal(signum)
        assert child.wait() == status, child.stderr()
    assert _steps(logdir) == list(range(on_disk))


# For every line the parent sends, the main thread says so and adds 20 000 events
# in a tight loop; a signal sent then lands in that loop, most often inside add().
BUSY_CHILD = """
    import sys
    from asyncsummary import AsyncSummaryWriter, install_shutdown_handlers

    install_shutdown_handlers(timeout=30)
    writer = AsyncSummaryWriter(sys.argv[1], flush_secs=3600)
    step = 0
    for line in sys.stdin:
        print("ADDING", step, flush=True)
        for _ in range(20_000):
            writer.add_scalar("x", step, step)
            step += 1
        print("ADDED", step, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(5))
def test_sigterm_during_adds_flushes_every_event_added_before_it(logdir, trial):
    """A signal that interrupts ``add()`` (its lock held) must not stall the flush.

    Python runs the handler on the main thread between two bytecodes, possibly inside
    ``add`` with the writer's lock held; the flush must still complete, not wait out
    its timeout and lose the events.
    """
    with Child(BUSY_CHILD, logdir) as child:
        for _ in range(random.Random(trial).randint(0, 2)):
            child.send("go")
            child.expect("ADDED")
        child.send("go")
        added = int(child.expect("ADDING").split()[1])  # all added before the signal
        child.signal(signal.SIGTERM)
        assert child.wait() == -signal.SIGTERM, child.stderr()
        assert "asyncsummary" not in child.stderr(), child.stderr()
    # The main thread went on adding while the flush ran, and the loop writing them
    # when the signal ended the process: the file may end in one truncated record.
    steps = _steps(logdir, torn_tail_ok=True)
    assert steps == list(range(len(steps)))
    assert len(steps) >= added


# Many signals in one process: SIGUSR1 gets the shutdown handler chained to a Python
# handler that installs it again. Storage writes only when flushed (batch threshold
# and timer out of reach), so what ``written`` shows after a batch is the signal's.
REPEATED_SIGNAL_CHILD = """
    import signal, sys, time
    from asyncsummary import AsyncSummaryWriter, install_shutdown_handlers

    signals = []

    def user_handler(signum, frame):
        signals.append(signum)  # nothing that takes a writer's lock: we may be inside add()
        install_shutdown_handlers([signal.SIGUSR1], timeout=2)

    signal.signal(signal.SIGUSR1, user_handler)
    install_shutdown_handlers([signal.SIGUSR1], timeout=2)
    writer = AsyncSummaryWriter(sys.argv[1], flush_secs=3600, batch_bytes=64 << 20)
    step = 0
    for line in sys.stdin:
        print("ADDING", step, flush=True)
        for _ in range(5000):
            writer.add_scalar("x", step, step)
            step += 1
        for _ in range(12_000):  # the user's handler runs after the flush: wait (at most 60 s)
            if signals:
                break
            time.sleep(0.005)
        signals.clear()
        print("WRITTEN", writer.stats().written, flush=True)
    writer.close()
"""


@pytest.mark.slow
def test_repeated_signals_inside_adds_always_complete_their_flush(logdir):
    """30 signals, each sent while the main thread adds: every flush completes in time
    and covers every event added before its signal (no "did not finish" message)."""
    rounds = 30
    with Child(REPEATED_SIGNAL_CHILD, logdir) as child:
        for _ in range(rounds):
            child.send("go")
            added = int(child.expect("ADDING").split()[1])
            child.signal(signal.SIGUSR1)
            written = int(child.expect("WRITTEN").split()[1])
            assert written >= added
        child.proc.stdin.close()
        assert child.wait() == 0, child.stderr()
        assert "did not finish" not in child.stderr(), child.stderr()
    steps = _steps(logdir)
    assert steps == list(range(rounds * 5000))


PREVIOUS_HANDLER_CHILD = """
    import signal, sys, time
    from asyncsummary import AsyncSummaryWriter, install_shutdown_handlers

    def user_handler(signum, frame):
        print("USER HANDLER", flush=True)
        sys.exit(3)

    if sys.argv[2] == "user":
        signal.signal(signal.SIGTERM, user_handler)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    install_shutdown_handlers([signal.SIGTERM], timeout=30)
    writer = AsyncSummaryWriter(sys.argv[1], flush_secs=3600)
    for step in range(500):
        writer.add_scalar("x", step, step)
    print("WAITING", flush=True)
    # The handler puts the previous one back first: poll for that (a plain pause()
    # would wait forever if the signal came before it), at most a minute.
    for _ in range(6000):
        if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
            break
        time.sleep(0.01)
    print("STILL RUNNING", flush=True)
    writer.close()
"""


@pytest.mark.parametrize("previous", ["user", "ignore"])
def test_handler_chains_to_the_previous_one(logdir, previous):
    """After the flush, a previous Python handler runs; an ignored signal stays ignored."""
    with Child(PREVIOUS_HANDLER_CHILD, logdir, previous) as child:
        child.expect("WAITING")
        child.signal(signal.SIGTERM)
        if previous == "user":
            child.expect("USER HANDLER")
            assert child.wait() == 3
        else:
            child.expect("STILL RUNNING")
            assert child.wait() == 0
    assert _steps(logdir) == list(range(500))


HUNG_STORAGE_CHILD = """
    import signal, sys, threading
    from asyncsummary import AsyncSummaryWriter, FileSink, install_shutdown_handlers
    from asyncsummary.testing import GatedSink

    gate = threading.Event()  # never set: the storage hangs for good
    sink = lambda path: GatedSink(FileSink(path), gate)
    mode = sys.argv[2]
    if mode == "signal":
        install_shutdown_handlers([signal.SIGTERM], timeout=0.5)
    writer = AsyncSummaryWriter(sys.argv[1], sink_factory=sink, close_timeout=0.5)
    for step in range(100):
        writer.add_scalar("x", step, step)
    if mode == "signal":
        print("WAITING", flush=True)
        signal.pause()
    print("EXITING", flush=True)
"""


@pytest.mark.parametrize("mode", ["signal", "exit"])
def test_hung_storage_never_hangs_shutdown(logdir, mode):
    """A signal's flush and atexit's close give up after their timeouts; the process ends.

    The bound checked is far below ``EXIT_TIMEOUT`` (30 s), so it proves that the
    writer's own ``close_timeout`` (0.5 s) bounds the exit.
    """
    with Child(HUNG_STORAGE_CHILD, logdir, mode) as child:
        if mode == "signal":
            child.expect("WAITING")
            child.signal(signal.SIGTERM)
            assert child.wait(timeout=20) == -signal.SIGTERM
            assert "flush on SIGTERM" in child.stderr()
        else:
            child.expect("EXITING")
            assert child.wait(timeout=20) == 0
            assert "asyncsummary: at exit" in child.stderr()


EXIT_CHILD = """
    import atexit, sys, threading

    def report():  # registered before asyncsummary's own: runs after its close
        s = writer.stats()
        print("STATS", s.queued, s.written, s.lost, s.dropped, s.rejected, flush=True)

    atexit.register(report)
    from asyncsummary import AsyncSummaryWriter, WriterClosedError

    logdir, mode = sys.argv[1], sys.argv[2]
    writer = AsyncSummaryWriter(logdir, flush_secs=3600)

    def other_thread():
        step = 0
        try:
            while mode == "daemon" or step < 10_000:
                writer.add_scalar("other", step, step)
                step += 1
                if step == 1000:
                    started.set()
        except WriterClosedError:
            pass  # closed by atexit while this daemon thread was still adding

    if mode == "unopened":  # too few events to open the file before the exit's close
        for step in range(5):
            writer.add_scalar("main", step, step)
        print("MAIN DONE", flush=True)
        sys.exit(0)
    started = threading.Event()
    if mode not in ("main", "unopened"):
        threading.Thread(target=other_thread, daemon=(mode == "daemon")).start()
        started.wait()
    for step in range(5_000):
        writer.add_scalar("main", step, step)
    print("MAIN DONE", flush=True)
    # no close(): the interpreter exits here
"""


@pytest.mark.parametrize("mode", ["main", "thread", "daemon", "unopened"])
def test_exit_without_close_writes_everything(logdir, mode):
    """``main``: only the main thread adds; ``thread``: a non-daemon thread is still
    adding when the main thread ends (Python waits for it, then runs atexit);
    ``daemon``: a daemon thread adds until atexit closes the writer under it;
    ``unopened``: the exit's close must open the file itself.

    On Python 3.12 ``atexit`` cannot start a thread: the close of every writer, and
    the file's own I/O, must not need one (the core suite runs this on 3.12 and 3.13).
    """
    with Child(EXIT_CHILD, logdir, mode) as child:
        child.expect("MAIN DONE")
        stats = child.expect("STATS")
        assert child.wait() == 0, child.stderr()
    by_tag: dict[str, list[int]] = {}
    for f in read_run(logdir):
        assert f.tail == 0
        for event in f.events[1:]:
            by_tag.setdefault(event.summary.value[0].tag, []).append(event.step)
    queued, written, lost, dropped, rejected = map(int, stats.split()[1:])
    on_disk = sum(len(steps) for steps in by_tag.values())
    assert (lost, dropped, rejected) == (0, 0, 0) and queued == written == on_disk, stats
    assert by_tag["main"] == list(range(5 if mode == "unopened" else 5_000))
    if mode == "thread":
        assert by_tag["other"] == list(range(10_000))
    if mode == "daemon":  # everything it added before the close, nothing after
        other = by_tag["other"]
        assert other == list(range(len(other))) and len(other) >= 1000


# Signals sent to the process while its main thread is not ready for them: they must wait
# for a thread that runs Python handlers, never be taken by one of the library's.
LIBRARY_THREADS_CHILD = """
    import json, os, signal, sys, threading, time
    from asyncsummary import AsyncSummaryWriter
    from asyncsummary._loop import DaemonThreadPoolExecutor

    def blocked(thread):
        with open(f"/proc/self/task/{thread.native_id}/status") as f:
            mask = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
        return [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1) if mask >> (s - 1) & 1]

    taken_by = []
    signal.signal(signal.SIGUSR1, lambda *_: taken_by.append(threading.current_thread().name))
    writer = AsyncSummaryWriter(sys.argv[1])
    writer.add_scalar("x", 1.0, 0)
    writer.flush()  # the loop's thread and the file's
    DaemonThreadPoolExecutor(1, "asyncsummary-from-main").submit(int).result()
    masks = {t.name: blocked(t) for t in threading.enumerate()}

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # main is busy: not now
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(0.2)
    pending = signal.SIGUSR1 in signal.sigpending()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})  # delivered here, handled
    time.sleep(0.01)
    writer.close()
    print(json.dumps({"masks": masks, "pending": pending, "taken_by": taken_by}))
"""


def test_library_threads_never_take_a_signal_sent_to_the_process(logdir):
    """A signal the main thread is not ready for waits for it. Taken by a library thread,
    it only set a flag that a main thread asleep in a lock never read: a SIGTERM handler
    never ran and a terminated Pool worker never ended (its parent hung)."""
    out = json.loads(run(LIBRARY_THREADS_CHILD, logdir).stdout.splitlines()[-1])
    library = {name: mask for name, mask in out["masks"].items() if name.startswith("asyncsummary-")}
    assert {"asyncsummary-loop", "asyncsummary-from-main-1"} <= set(library)
    assert any(name.startswith("asyncsummary-file") for name in library)
    every = [int(signal.SIGINT), int(signal.SIGTERM), int(signal.SIGUSR1)]
    assert all(mask == every for mask in library.values()), library
    assert out["masks"]["MainThread"] == []  # the caller's own mask is put back
    assert out["pending"] is True, "a library thread took the signal"
    assert out["taken_by"] == ["MainThread"]


# A signal that sets the interpreter's flag but never wakes the main thread, asleep in C.
# CPython's C handler only sets a flag and writes the wake-up fd; the main thread checks
# the flag when a system call fails with EINTR. A signal that lands on the main thread
# just before it blocks (the race that hung a terminated Pool worker, idle in
# ``sem_wait`` on its task queue's lock) or on another thread leaves it asleep for good.
# Here a thread of the child's own takes SIGTERM once the main thread sleeps: the same
# state, every time.
TAKE_SIGNAL_ELSEWHERE = """
    import os, signal, threading, time

    def main_thread_asleep():  # its thread id is the pid (also in a child forked by a thread)
        with open(f"/proc/self/task/{os.getpid()}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "S"

    def take_sigterm_once_main_sleeps():
        asleep = 0  # sampled with this thread asleep: the main thread has the GIL if it runs
        while asleep < 10:
            time.sleep(0.02)
            asleep = asleep + 1 if main_thread_asleep() else 0
        print("SIGNALLED", flush=True)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    def block_main_thread(how):
        threading.Thread(target=take_sigterm_once_main_sleeps, daemon=True).start()
        if how == "semaphore":  # a Pool worker, idle on its task queue's lock
            import multiprocessing
            multiprocessing.Semaphore(0).acquire()
        else:  # a Pool worker reading its task queue's pipe
            os.read(os.pipe()[0], 1)
        os._exit(99)  # never: the signal ends the process
"""

LOST_WAKEUP_CHILD = TAKE_SIGNAL_ELSEWHERE + f"""
    import sys
    from asyncsummary import AsyncSummaryWriter, install_shutdown_handlers

    install_shutdown_handlers(timeout=30)
    writer = AsyncSummaryWriter(sys.argv[1], flush_secs=3600, batch_bytes=64 << 20)
    for step in range({ADDED}):
        writer.add_scalar("x", step, step)
    block_main_thread(sys.argv[2])
"""


@pytest.mark.parametrize("how", ["semaphore", "read"])
def test_signal_that_never_wakes_the_main_thread_still_flushes_and_ends_it(logdir, how):
    """The flag is set, the main thread sleeps on: the handler still runs, flushes every
    event and ends the process by the signal (before the fix it hung until killed)."""
    with Child(LOST_WAKEUP_CHILD, logdir, how) as child:
        child.expect("SIGNALLED")
        assert child.wait(timeout=30) == -signal.SIGTERM, child.stderr()
        assert "asyncsummary" not in child.stderr(), child.stderr()
    assert _steps(logdir) == list(range(ADDED))


# The parent installs the handlers, then forks (from its main thread or another one).
# The child must wake its own main thread, never its parent's: the wake-up socket
# inherited across fork is the parent's, read by the parent's watcher.
FORK_CHILD = TAKE_SIGNAL_ELSEWHERE + """
    import json, sys
    import asyncsummary._shutdown
    from asyncsummary import AsyncSummaryWriter, install_shutdown_handlers

    def wakeup_socket():
        fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
        return os.fstat(fd).st_ino if fd != -1 else None

    def child():
        watchers = [t.name for t in threading.enumerate() if t.name == "asyncsummary-signals"]
        print("CHILD", json.dumps([wakeup_socket(), watchers]), flush=True)
        writer = AsyncSummaryWriter(logdir, flush_secs=3600, batch_bytes=64 << 20)
        for step in range(1000):
            writer.add_scalar("child", step, step)
        block_main_thread("semaphore")

    def fork():
        pid = os.fork()
        if pid == 0:
            child()
        forked.append(pid)

    logdir, where = sys.argv[1], sys.argv[2]
    install_shutdown_handlers(timeout=30)
    print("PARENT", json.dumps(wakeup_socket()), flush=True)
    forked = []
    if where == "main":
        fork()
    else:
        thread = threading.Thread(target=fork)
        thread.start()
        thread.join()
    _, status = os.waitpid(forked[0], 0)  # the parent's main thread asleep meanwhile
    ours = signal.getsignal(signal.SIGTERM) is asyncsummary._shutdown._installed.get(signal.SIGTERM)
    print("CHILD ENDED", os.waitstatus_to_exitcode(status), ours, flush=True)
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_forked_child_wakes_its_own_main_thread_never_its_parents(logdir, where):
    """A child forked after the install has a wake-up socket and a watcher of its own: a
    SIGTERM that never woke its main thread still flushes it and ends it, and its
    parent gets no signal (its handler is still in place, unused)."""
    with Child(FORK_CHILD, logdir, where) as child:
        parent_socket = json.loads(child.expect("PARENT").split(" ", 1)[1])
        child_socket, watchers = json.loads(child.expect("CHILD").split(" ", 1)[1])
        assert parent_socket is not None and child_socket is not None
        assert child_socket != parent_socket
        assert watchers == ["asyncsummary-signals"]
        child.expect("SIGNALLED")
        assert child.expect("CHILD ENDED").split()[2:] == [str(-signal.SIGTERM), "True"]
        assert child.wait() == 0, child.stderr()
    assert _steps(logdir) == list(range(1000))
