"""Ctrl-C and a user's own signal handlers at random moments of heavy adding.

A KeyboardInterrupt used to be able to land between ``add``'s ``lock.acquire()`` and
its ``try``: the lock stayed held, the loop blocked on it, every writer of the process
stopped and the exit waited out the close timeout with the events lost. And a user's
SIGTERM handler that calls ``writer.close()`` runs on the main thread, maybe while
that thread is inside ``add`` holding the lock, so the close waited for itself.

Each child adds in a tight loop and records which step an interrupt hit (that one
event may or may not have been queued); every other step it added must be on disk
exactly once, nothing else, and each exit must come within the writer's close bound.
"""

from __future__ import annotations

import concurrent.futures
import functools
import random
import signal
import time

import pytest

from .procs import Child, read_run

#: The children's writers' close_timeout: the documented bound of their exit's close.
CLOSE_TIMEOUT = 5.0
#: Children run at once by a trial (see :func:`_in_parallel`).
PARALLEL = 3
#: Beyond the bound: the interpreter's own shutdown (TensorBoard's protos loaded etc).
EXIT_SLACK = 5.0

# Adds in a tight loop. The first SIGINTs are caught (the step they hit is noted as
# unsure), then the child checks that its writer still works (a flush must return)
# and goes on; the last SIGINT ends it with an uncaught KeyboardInterrupt: atexit
# closes the writer. stdout says which steps are unsure and where the adding stopped.
INTERRUPTED_CHILD = f"""
    import atexit, sys

    def report():  # registered before asyncsummary's own: runs after its close
        s = writer.stats()
        print("STATS", s.queued, s.written, s.lost, s.dropped, s.rejected, flush=True)

    atexit.register(report)
    from asyncsummary import AsyncSummaryWriter, install_shutdown_handlers

    logdir, caught, handlers = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "handlers"
    if handlers:
        install_shutdown_handlers(timeout=30)
    writer = AsyncSummaryWriter(logdir, flush_secs=0.2, close_timeout={CLOSE_TIMEOUT})
    step = 0
    print("READY", flush=True)
    while True:
        try:
            while True:
                writer.add_scalar("x", step, step)
                step += 1
        except KeyboardInterrupt:
            print("UNSURE", step, flush=True)
            step += 1
            if caught == 0:
                print("END", step, flush=True)
                raise
            caught -= 1
            writer.flush(timeout=10)  # the lock is free, the loop alive
            print("FLUSHED", step, flush=True)
"""


def _check_run(logdir: str, unsure: set[int], end: int, stats: str) -> None:
    """Every step below ``end`` but the ``unsure`` ones on disk once, nothing else, and
    the writer's own counts (``STATS queued written lost dropped rejected``, after its
    close) exact: an interrupted add was counted if and only if it was written."""
    steps = [e.step for f in read_run(logdir) for e in f.events if e.HasField("summary")]
    assert len(steps) == len(set(steps)), "an event was written twice"
    missing = set(range(end)) - unsure - set(steps)
    assert not missing, f"{len(missing)} added events not on disk, e.g. {sorted(missing)[:5]}"
    assert set(steps) <= set(range(end)), "an event that was never added"
    queued, written, lost, dropped, rejected = map(int, stats.split()[1:])
    assert (lost, dropped, rejected) == (0, 0, 0), stats
    assert queued == written == len(steps), f"{stats}; {len(steps)} on disk"


def _in_parallel(trial, count: int) -> None:
    """``trial(n)`` for n < count, :data:`PARALLEL` children at a time (each trial waits
    mostly on its child; one at a time the suite would spend minutes here). The first
    failure is raised."""
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        for future in [pool.submit(trial, n) for n in range(count)]:
            future.result()


def _interrupted_child(tmp_path, handlers: str, per_child: int, n: int) -> None:
    rng = random.Random(14_1 * 1000 + n)
    logdir = str(tmp_path / f"run{n}")
    with Child(INTERRUPTED_CHILD, logdir, str(per_child - 1), handlers) as child:
        child.expect("READY")
        unsure: set[int] = set()
        for _ in range(per_child - 1):
            time.sleep(rng.uniform(0.02, 0.25))
            child.signal(signal.SIGINT)
            unsure.add(int(child.expect("UNSURE").split()[1]))
            child.expect("FLUSHED", timeout=15)
        time.sleep(rng.uniform(0.02, 0.25))
        child.signal(signal.SIGINT)
        unsure.add(int(child.expect("UNSURE").split()[1]))
        end = int(child.expect("END").split()[1])
        stats = child.expect("STATS", timeout=CLOSE_TIMEOUT + EXIT_SLACK + 30)
        start = time.monotonic()
        status = child.wait(timeout=CLOSE_TIMEOUT + EXIT_SLACK + 30)
        took = time.monotonic() - start
        assert status == -signal.SIGINT, child.stderr()
        assert took < CLOSE_TIMEOUT + EXIT_SLACK, f"exit took {took:.1f} s"
    _check_run(logdir, unsure, end, stats)


@pytest.mark.slow
@pytest.mark.parametrize("handlers", ["plain", "handlers"])
def test_100_sigints_during_heavy_adding(tmp_path, handlers):
    """50 SIGINTs per variant: 10 children, each interrupted 5 times (the 5th ends it)."""
    _in_parallel(functools.partial(_interrupted_child, tmp_path, handlers, 5), 10)


# The user's own SIGTERM handler closes the writer and exits, the common service idiom.
CLOSING_HANDLER_CHILD = f"""
    import signal, sys
    from asyncsummary import AsyncSummaryWriter

    writer = AsyncSummaryWriter(sys.argv[1], flush_secs=3600, close_timeout={CLOSE_TIMEOUT})
    step = 0

    def on_term(signum, frame):
        writer.close()  # may run while the main thread is inside add()
        s = writer.stats()
        print("CLOSED", step, flush=True)
        print("STATS", s.queued, s.written, s.lost, s.dropped, s.rejected, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    print("READY", flush=True)
    while True:
        writer.add_scalar("x", step, step)
        step += 1
"""


def _sigterm_child(tmp_path, n: int) -> None:
    rng = random.Random(14_12 * 1000 + n)
    logdir = str(tmp_path / f"run{n}")
    with Child(CLOSING_HANDLER_CHILD, logdir) as child:
        child.expect("READY")
        time.sleep(rng.uniform(0.05, 0.4))
        start = time.monotonic()
        child.signal(signal.SIGTERM)
        step = int(child.expect("CLOSED", timeout=CLOSE_TIMEOUT + 30).split()[1])
        stats = child.expect("STATS")
        assert child.wait(timeout=30) == 0, child.stderr()
        took = time.monotonic() - start
        assert took < CLOSE_TIMEOUT + EXIT_SLACK, f"close and exit took {took:.1f} s"
    # The add the handler interrupted (step) may or may not be in; all before are.
    _check_run(logdir, {step}, step + 1, stats)


@pytest.mark.slow
def test_user_sigterm_handler_that_closes_the_writer(tmp_path):
    _in_parallel(functools.partial(_sigterm_child, tmp_path), 15)


# The main thread calls flush_all() in a tight loop (with no writer open, it mostly
# holds the registry's lock); each SIGTERM's handler opens, writes and closes a writer,
# which takes that lock again on the same thread.
REGISTRY_CHILD = """
    import signal, sys
    import asyncsummary
    from asyncsummary import AsyncSummaryWriter

    logdir, handled = sys.argv[1], 0

    def on_term(signum, frame):
        global handled
        with AsyncSummaryWriter(logdir, filename_suffix=f".h{handled}") as writer:
            writer.add_scalar("handled", handled, handled)
        handled += 1
        print("HANDLED", handled, flush=True)

    signal.signal(signal.SIGTERM, on_term)
    print("READY", flush=True)
    while True:
        asyncsummary.flush_all(timeout=5)
"""


def test_signal_handler_that_opens_a_writer_while_the_registry_is_held(tmp_path):
    """Every lock a caller can hold is reentrant: with the registry's plain lock, a
    handler that opened a writer while the main thread was inside ``flush_all`` waited
    for itself forever."""
    logdir = str(tmp_path / "run")
    with Child(REGISTRY_CHILD, logdir) as child:
        child.expect("READY")
        for n in range(1, 31):
            time.sleep(random.uniform(0.005, 0.03))
            child.signal(signal.SIGTERM)
            child.expect(f"HANDLED {n}", timeout=15)
    steps = sorted(e.step for f in read_run(logdir) for e in f.events if e.HasField("summary"))
    assert steps == list(range(30))


# close() waits for a stalled storage (it comes back 2 s later); Ctrl-C interrupts that
# wait. The close already under way must still write everything before the exit.
CLOSE_INTERRUPTED_CHILD = """
    import sys, threading, time
    from asyncsummary import AsyncSummaryWriter
    from asyncsummary._sinks import FileSink
    from asyncsummary.testing import GatedSink

    gate = threading.Event()
    writer = AsyncSummaryWriter(
        sys.argv[1], sink_factory=lambda path: GatedSink(FileSink(path), gate), close_timeout=30
    )
    for step in range(1000):
        writer.add_scalar("x", step, step)
    threading.Thread(target=lambda: (time.sleep(2), gate.set()), daemon=True).start()
    print("CLOSING", flush=True)
    writer.close()
"""


def test_ctrl_c_during_close_still_writes_everything(tmp_path):
    """A KeyboardInterrupt in ``close()``'s wait ends the program; the exit waits for
    that close (it is no longer an open writer, but its events are not written yet)."""
    logdir = str(tmp_path / "run")
    with Child(CLOSE_INTERRUPTED_CHILD, logdir) as child:
        child.expect("CLOSING")
        time.sleep(0.5)
        child.signal(signal.SIGINT)
        assert child.wait(timeout=40) == -signal.SIGINT, child.stderr()
    steps = [e.step for f in read_run(logdir) for e in f.events if e.HasField("summary")]
    assert steps == list(range(1000))
