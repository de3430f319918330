"""Event file names: never equal to another writer's, always sorting in time order.

torch's writer (tensorboard's ``EventFileWriter``) and tensorboardX name their files
``events.out.tfevents.<secs>.<host>.<pid>.<n>`` with their own counter from 0 and open
them truncating; when ours used the same shape, a torch writer opened in the same folder
and second destroyed our file (or ours failed with FileExistsError). The clock is frozen
here so that every writer of a test picks the same second, the worst case.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from asyncsummary import AsyncSummaryWriter, _engine

from .procs import Child
from .readers import accumulator, event_files, scalars, tb_events

FROZEN = 1_800_000_000.0


@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: FROZEN)
    # Names never go back in time within a process: restore, so later tests see now.
    monkeypatch.setattr(_engine, "_last_stem", _engine._last_stem)


def _tags(logdir):
    acc = accumulator(logdir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_every_writer_kept_its_steps(logdir, tags, steps):
    """One file per writer, and each tag's ``steps`` values (step, float(step)) read back
    by TensorBoard's ``EventAccumulator``: nothing truncated, nothing mixed."""
    assert len(event_files(logdir)) == len(tags)
    expected = [(s, float(s)) for s in range(steps)]
    assert _tags(logdir) == {tag: expected for tag in tags}


def _torch_writer(logdir):
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    return TorchWriter(logdir)


def _tbx_writer(logdir):
    from tensorboardX import SummaryWriter as TbxWriter

    return TbxWriter(logdir)


@pytest.mark.torch
@pytest.mark.parametrize("theirs", [_torch_writer, _tbx_writer], ids=["torch", "tensorboardX"])
def test_their_writer_open_then_ours(logdir, frozen_clock, theirs):
    other = theirs(logdir)
    other.add_scalar("theirs", 0.0, 0)
    other.flush()
    with AsyncSummaryWriter(logdir) as ours:
        for step in range(50):
            ours.add_scalar("ours", float(step), step)
        ours.flush()  # raised WriteError(FileExistsError) when the names were equal
    for step in range(1, 50):
        other.add_scalar("theirs", float(step), step)
    other.close()
    _assert_every_writer_kept_its_steps(logdir, ("ours", "theirs"), 50)


@pytest.mark.torch
@pytest.mark.parametrize("theirs", [_torch_writer, _tbx_writer], ids=["torch", "tensorboardX"])
def test_ours_closed_then_their_writer(logdir, frozen_clock, theirs):
    from asyncsummary import SummaryWriter  # needs torch

    with SummaryWriter(logdir) as ours:
        for step in range(50):
            ours.add_scalar("ours", float(step), step)
    other = theirs(logdir)  # truncated our file when the names were equal
    for step in range(50):
        other.add_scalar("theirs", float(step), step)
    other.close()
    _assert_every_writer_kept_its_steps(logdir, ("ours", "theirs"), 50)


@pytest.mark.tf
def test_tf_file_writer_in_the_same_folder(logdir):
    import tensorflow as tf

    with tf.Graph().as_default():  # FileWriter refuses eager mode
        tf_writer = tf.compat.v1.summary.FileWriter(logdir)
        with AsyncSummaryWriter(logdir) as ours:
            ours.add_scalar("ours", 1.0, 1)
        summary = tf.compat.v1.Summary(
            value=[tf.compat.v1.Summary.Value(tag="tf", simple_value=2.0)]
        )
        tf_writer.add_summary(summary, 2)
        tf_writer.close()
    got = _tags(logdir)
    assert got["ours"] == [(1, 1.0)] and got["tf"] == [(2, 2.0)]


def test_an_existing_name_is_skipped_never_truncated(logdir, frozen_clock):
    os.makedirs(logdir)
    seq = next(_engine._file_counter) + 1  # the next name a writer will choose...
    host, pid = socket.gethostname(), os.getpid()
    planted = []
    for n in range(seq, seq + 3):  # ...and the two after it exist already
        path = os.path.join(
            logdir, f"events.out.tfevents.{int(FROZEN):010d}.{host}.{pid}.as{n:06d}"
        )
        with open(path, "wb") as f:
            f.write(b"someone else's bytes")
        planted.append(path)
    with AsyncSummaryWriter(logdir) as writer:
        writer.add_scalar("ours", 1.0, 1)
        writer.flush()  # no error for the caller
        (ours,) = writer.stats().files
    for path in planted:
        with open(path, "rb") as f:
            assert f.read() == b"someone else's bytes"
    assert ours not in planted
    assert [(e.step, e.summary.value[0].simple_value) for e in tb_events(ours)[1:]] == [(1, 1.0)]


def test_reopen_sorts_after_the_old_file_across_counter_digits(logdir, frozen_clock, monkeypatch):
    # The counter passing 9 -> 10 in one second made "...10" sort before "...9".
    import itertools

    monkeypatch.setattr(_engine, "_file_counter", itertools.count(9))
    writer = AsyncSummaryWriter(logdir)
    writer.add_scalar("x", 0.0, 0)
    writer.close()
    writer.reopen()
    writer.add_scalar("x", 1.0, 1)
    writer.close()
    files = event_files(logdir)  # name order: the order TensorBoard reads them
    assert len(files) == 2
    assert [e.step for f in files for e in tb_events(f)[1:]] == [0, 1]
    assert scalars(logdir) == [(0, "x", 0.0), (1, "x", 1.0)]


def test_names_sort_in_creation_order_when_the_clock_goes_back(logdir, monkeypatch):
    monkeypatch.setattr(_engine, "_last_stem", _engine._last_stem)
    clock = iter([FROZEN, FROZEN - 100, FROZEN - 200])
    monkeypatch.setattr(_engine.time, "time", lambda: next(clock, FROZEN - 300))
    names = [_engine._event_file_name("") for _ in range(3)]
    assert names == sorted(names) and len(set(names)) == 3


TWO_WRITERS_AND_A_FORK = """
    import os, sys, time
    time.time = lambda: 1_800_000_000.0  # every writer of this test picks one second
    from asyncsummary import AsyncSummaryWriter

    logdir = sys.argv[1]
    first, second = AsyncSummaryWriter(logdir), AsyncSummaryWriter(logdir)
    for step in range(100):
        first.add_scalar("first", float(step), step)
        second.add_scalar("second", float(step), step)
    first.flush()
    second.flush()
    pid = os.fork()
    if pid == 0:  # the child: the same second, the parent's counter, its own writer
        with AsyncSummaryWriter(logdir) as child:
            for step in range(100):
                child.add_scalar("child", float(step), step)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    first.close()
    second.close()
    print("DONE", os.waitstatus_to_exitcode(status), flush=True)
"""


def test_two_of_ours_and_a_forked_child_in_one_folder_and_second(logdir):
    # In a child process, so that the fork never copies pytest and TensorFlow's threads.
    with Child(TWO_WRITERS_AND_A_FORK, logdir) as child:
        assert child.expect("DONE") == "DONE 0", child.stderr()
        assert child.wait() == 0, child.stderr()
    assert all(f".{int(FROZEN):010d}." in f for f in event_files(logdir))
    _assert_every_writer_kept_its_steps(logdir, ("first", "second", "child"), 100)
