"""Child processes that end without ``close()`` keep every event, whatever their start
method and wherever the library was imported.

A ``multiprocessing`` child ends with ``os._exit`` (fork, forkserver) or after its own
bootstrap (spawn), so ``atexit`` may never run in it; the library closes its writers
from multiprocessing's exit finalizers instead, installed on the first writer of every
process. The parent is a real script file (a spawned child re-imports it as
``__mp_main__``), run for each start method (fork, forkserver, spawn) and each place
the library is imported:

* ``task``: only inside the child's task (the parent never imports it), which is how
  forkserver children (Python 3.14's default on Linux) and spawned DataLoader or Pool
  workers get it. Every child starts without it.
* ``parent``: by the parent, in its ``if __name__ == "__main__":`` block, before it
  starts the children. A fork child inherits it; a spawn or forkserver child does not
  run that block and imports it in the task.
* ``main-module``: at the top of the parent's script. A fork child inherits it; a spawn
  child imports it again while loading the script as ``__mp_main__``, before the task;
  so does a forkserver child where the server's preload of ``__main__`` is dead code
  (CPython gh-126631: Python 3.11.7, 3.12.1 and 3.13.0 here); where that preload works,
  the server imports it and its children inherit it.
* ``preload`` (forkserver only): ``set_forkserver_preload(["asyncsummary"])``, the
  parent never imports it: every child inherits it from the server process.

Each child reports, from its first task or pool initializer, whether the library was
already imported and which process's main module imported it; the test asserts the
placement above really happened. Then, for each combination:

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
import json
import os
import subprocess
import sys

import pytest

from .procs import child_env, pid_in_name, read_run, run_argv, script

#: The parent: a script file, so that spawn and forkserver children can load it as their
#: ``__mp_main__``. MAIN_MODULE_IMPORTS is set per placement before it is written.
PARENT = """
    import json, multiprocessing, multiprocessing.forkserver, os, sys

    MAIN_MODULE_IMPORTS = False
    if MAIN_MODULE_IMPORTS:  # at the module's top level: spawned children run this too
        import asyncsummary  # noqa: F401
        IMPORTED_BY = os.getpid()

    from tests.mp_tasks import add_and_exit, add_and_report, install_flush_on_sigterm


    def main(method, root, placement):
        context = multiprocessing.get_context(method)
        if placement == "preload":
            context.set_forkserver_preload(["asyncsummary"])
        out = {"parent": os.getpid()}

        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=add_and_report, args=(writer, os.path.join(root, "process"), "process", 1000)
        )
        process.start()
        writer.close()
        assert reader.poll(60), "the Process child reported nothing"
        out["process"] = [reader.recv()]
        process.join(60)
        out["exitcode"] = process.exitcode

        tasks = [(os.path.join(root, "pool"), f"task{i}", 500) for i in range(4)]
        pool = context.Pool(2)
        out["pool"] = pool.starmap(add_and_exit, tasks, chunksize=1)
        pool.close()
        pool.join()

        tasks = [(os.path.join(root, "terminated"), f"task{i}", 500) for i in range(4)]
        with context.Pool(2, initializer=install_flush_on_sigterm) as pool:
            out["terminated"] = pool.starmap(add_and_exit, tasks, chunksize=1)
        # Leaving the block terminated the workers with SIGTERM and joined them.

        if method == "forkserver":
            out["server"] = multiprocessing.forkserver._forkserver._forkserver_pid
        imported = placement in ("parent", "main-module")
        assert ("asyncsummary" in sys.modules) == imported, "the parent's own import"
        print(json.dumps(out), flush=True)


    if __name__ == "__main__":
        method, root, placement = sys.argv[1:4]
        if placement == "parent":
            import asyncsummary  # noqa: F401
            IMPORTED_BY = os.getpid()
        main(method, root, placement)
"""

#: The repository root, where a script outside it finds ``tests.mp_tasks``.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMBINATIONS = [
    *((method, placement) for placement in ("task", "parent", "main-module")
      for method in ("fork", "forkserver", "spawn")),
    ("forkserver", "preload"),
]


def _run_parent(path: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """:func:`tests.procs.run`, for a script file outside the repository."""
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return run_argv([sys.executable, path, *args], timeout=timeout, env=env)


def _expected_origins(method: str, placement: str, out: dict, child: int) -> list[list]:
    """What ``child`` may report: [library imported before its first task, the pid whose
    main module imported it]."""
    parent = out["parent"]
    if placement == "task":
        return [[False, None]]
    if placement == "parent":
        return [[True, parent]] if method == "fork" else [[False, None]]
    if placement == "preload":
        return [[True, None]]  # in the child's modules, and not from any main module
    if method == "fork":
        return [[True, parent]]
    if method == "spawn":
        return [[True, child]]
    # forkserver: the child loads the script itself where the server's ``__main__`` preload
    # is dead code (CPython gh-126631; 3.11.7, 3.12.1 and 3.13.0 here), or inherits it from
    # the server where that preload works.
    return [[True, child], [True, out["server"]]]


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


@pytest.mark.parametrize(("method", "placement"), COMBINATIONS,
                         ids=[f"{m}-import-in-{p}" for m, p in COMBINATIONS])
def test_children_that_exit_without_close_keep_every_event(tmp_path, method, placement):
    root = str(tmp_path)
    parent = tmp_path / "parent.py"
    code = script(PARENT)
    if placement == "main-module":
        code = code.replace("MAIN_MODULE_IMPORTS = False", "MAIN_MODULE_IMPORTS = True", 1)
    parent.write_text(code)
    done = _run_parent(str(parent), method, root, placement, timeout=120)
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["exitcode"] == 0

    for case, tags, count in (("process", ["process"], 1000),
                              ("pool", [f"task{i}" for i in range(4)], 500),
                              ("terminated", [f"task{i}" for i in range(4)], 500)):
        reports = out[case]
        for pid, *origin in reports:
            assert pid != out["parent"], case
            assert origin in _expected_origins(method, placement, out, pid), (case, pid, origin)
        logdir = os.path.join(root, case)
        assert _events_by_tag(logdir) == {tag: list(range(count)) for tag in tags}, case
        assert {pid_in_name(f.path) for f in read_run(logdir)} == {r[0] for r in reports}, case
    assert len(read_run(os.path.join(root, "process"))) == 1
