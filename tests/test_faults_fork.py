"""Fork while a writer is busy: ``os.fork`` and ``multiprocessing``'s fork start method.

The parent keeps a thread adding events (the background loop writing every few
milliseconds) while it forks children of every kind: one that never touches the
writer, one that only calls ``flush()``, one that adds and closes, one that adds and
just exits. Then:

* the parent's file holds exactly the parent's events, all of them, in order: no
  child ever wrote into it;
* a child that adds gets its own file, with its own pid in the name, holding exactly
  its events; a child that adds nothing creates no file;
* a child that ends without ``close()`` keeps its events too: ``os.fork`` children
  through ``atexit``, ``multiprocessing`` children (which end with ``os._exit`` and
  skip ``atexit``) through multiprocessing's exit finalizers.

It runs in a child process of the test, so that forking never copies pytest (and
TensorFlow's threads) and every child can exit the normal way.
"""

from __future__ import annotations

import os

import pytest

from .procs import Child, pid_in_name, read_run

FORKING_CHILD = """
    import multiprocessing, os, sys, threading
    from asyncsummary import AsyncSummaryWriter

    logdir = sys.argv[1]
    writer = AsyncSummaryWriter(logdir, flush_secs=0.01, batch_bytes=4096)
    stop, busy_started = threading.Event(), threading.Event()
    added = []

    def busy():  # the parent's training thread: 50 events per 1 ms "step"
        step = 0
        while not stop.is_set():
            writer.add_scalar("parent", step, step)
            step += 1
            if step == 2000:
                busy_started.set()
            if step % 50 == 0:
                stop.wait(0.001)
        added.append(step)

    def child(kind):
        if kind.endswith("silent"):
            return
        if kind.endswith("flush"):
            writer.flush()  # nothing added here: nothing to write
            return
        for step in range(1000):
            writer.add_scalar(kind, step, step)
        if kind.endswith("closes"):
            writer.close()
        # "exits": no close(); the process ends

    def worker_pid(_):
        return os.getpid()

    thread = threading.Thread(target=busy)
    thread.start()
    busy_started.wait()
    kinds = ["silent", "flush", "closes", "exits"]
    for kind in kinds:
        pid = os.fork()
        if pid == 0:
            child(kind)
            sys.exit(0)  # a normal exit: atexit runs in the child
        _, status = os.waitpid(pid, 0)
        print("CHILD", kind, pid, os.waitstatus_to_exitcode(status), flush=True)
    context = multiprocessing.get_context("fork")
    for kind in kinds:
        process = context.Process(target=child, args=("mp_" + kind,))
        process.start()
        process.join()
        print("CHILD", "mp_" + kind, process.pid, process.exitcode, flush=True)
    # Pool workers that never touch the writer, as DataLoader workers: no file at all.
    pool = context.Pool(2)
    pids = pool.map(worker_pid, range(8))
    pool.close()
    pool.join()
    for pid in sorted(set(pids)):
        print("CHILD", "pool_silent", pid, 0, flush=True)
    stop.set()
    thread.join()
    writer.close()
    print("PARENT", os.getpid(), added[0], flush=True)
"""


@pytest.mark.slow
def test_children_of_a_busy_writer_never_touch_its_file(logdir):
    with Child(FORKING_CHILD, logdir) as child:
        lines = child.rest()
        assert child.wait() == 0, child.stderr()
    children = []
    for line in lines:
        if line.startswith("CHILD"):
            _, kind, pid, code = line.split()
            assert code == "0", f"child {kind} failed"
            children.append((kind, int(pid)))
    (parent_line,) = [line for line in lines if line.startswith("PARENT")]
    parent_pid, parent_added = map(int, parent_line.split()[1:])

    by_pid: dict[int, list[tuple[str, int]]] = {}
    for f in read_run(logdir):
        assert f.tail == 0, f"{f.path} ends in a torn record"
        assert f.events[0].file_version == "brain.Event:2"
        by_pid.setdefault(pid_in_name(f.path), []).extend(
            (e.summary.value[0].tag, e.step) for e in f.events[1:]
        )
    assert by_pid.pop(parent_pid) == [("parent", s) for s in range(parent_added)]
    for kind, pid in children:
        assert pid != parent_pid and pid != os.getpid()
        if kind.endswith(("silent", "flush")):
            assert pid not in by_pid, f"child {kind!r} added nothing, yet made a file"
        else:
            assert by_pid.pop(pid, None) == [(kind, s) for s in range(1000)], kind
    assert not by_pid, f"files of unknown processes: {sorted(by_pid)}"
