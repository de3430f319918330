"""Child processes that end without ``close()`` keep every event, whatever their start method.

A ``multiprocessing`` child ends with ``os._exit`` (fork, forkserver) or after its own
bootstrap (spawn), so ``atexit`` may never run in it; the library closes its writers
from multiprocessing's exit finalizers instead, installed on the first writer of every
process. Here the library is imported *inside the child's task* (the parent never
imports it), which is how forkserver children (Python 3.14's default on Linux) and
spawned DataLoader or Pool workers get it; and once more after the parent imported it
before forking. For each start method:

* a ``Process`` adds 1000 scalars and returns: all 1000 are on disk;
* a ``Pool`` of 2 runs 4 tasks of 500 scalars each, then ``close()`` + ``join()``:
  every task's 500 are on disk, in the file of the worker that ran it;
* a ``with Pool(...)`` block, which *terminates* its workers (SIGTERM) on leaving:
  with ``install_shutdown_handlers`` as the pool's initializer every event is on disk
  (without it SIGTERM kills a worker the default way and its writers are not flushed;
  that is the signal's default, documented, not this library's choice).

The writers are made with an hour's ``flush_secs`` and a 64 MiB ``batch_bytes``, so
nothing is written before the exit: what is on disk was written by the exit path.
Read back with TensorBoard's loader and ``tf.data`` (every CRC), counts exact.
"""

from __future__ import annotations

import collections
import os

import pytest

from .procs import pid_in_name, read_run, run

PARENT = """
    import multiprocessing, os, sys
    from tests.mp_tasks import add_and_exit, install_flush_on_sigterm

    method, root, import_in_parent = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    if import_in_parent:
        import asyncsummary  # noqa: F401
    context = multiprocessing.get_context(method)

    process = context.Process(target=add_and_exit, args=(os.path.join(root, "process"), "process", 1000))
    process.start()
    process.join(60)
    print("PROCESS", process.pid, process.exitcode, flush=True)

    tasks = [(os.path.join(root, "pool"), f"task{i}", 500) for i in range(4)]
    pool = context.Pool(2)
    pids = pool.starmap(add_and_exit, tasks, chunksize=1)
    pool.close()
    pool.join()
    print("POOL", *pids, flush=True)

    tasks = [(os.path.join(root, "terminated"), f"task{i}", 500) for i in range(4)]
    with context.Pool(2, initializer=install_flush_on_sigterm) as pool:
        pids = pool.starmap(add_and_exit, tasks, chunksize=1)
    # Leaving the block terminated the workers with SIGTERM and joined them.
    print("TERMINATED", *pids, flush=True)
    assert ("asyncsummary" in sys.modules) == import_in_parent, "the parent imported the library"
"""


def _events_by_tag(logdir: str) -> dict[str, list[int]]:
    steps: dict[str, list[int]] = collections.defaultdict(list)
    for f in read_run(logdir):
        assert f.tail == 0, f"{f.path} ends in a torn record"
        assert f.events[0].file_version == "brain.Event:2"
        for event in f.events[1:]:
            (value,) = event.summary.value
            assert value.simple_value == event.step
            steps[value.tag].append(event.step)
    return dict(steps)


@pytest.mark.parametrize(
    ("method", "import_in_parent"),
    [("fork", False), ("forkserver", False), ("spawn", False), ("fork", True)],
    ids=["fork", "forkserver", "spawn", "fork-imported-by-parent"],
)
def test_children_that_exit_without_close_keep_every_event(tmp_path, method, import_in_parent):
    root = str(tmp_path)
    done = run(PARENT, method, root, "1" if import_in_parent else "0", timeout=120)
    lines = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()}

    pid, exitcode = map(int, lines["PROCESS"])
    assert exitcode == 0
    assert [pid_in_name(f.path) for f in read_run(os.path.join(root, "process"))] == [pid]
    assert _events_by_tag(os.path.join(root, "process")) == {"process": list(range(1000))}

    for case in ("pool", "terminated"):
        logdir = os.path.join(root, case)
        assert _events_by_tag(logdir) == {f"task{i}": list(range(500)) for i in range(4)}, case
        worker_pids = {pid_in_name(f.path) for f in read_run(logdir)}
        assert worker_pids == set(map(int, lines[case.upper()])), case
