"""``add_embedding``'s projector files: when they are visible, and how their failures come back.

The files are formatted and written on a build worker (formatting them costs the
caller up to seconds, see ``asyncsummary/torch/_projector.py``), so:

* ``flush()`` makes them visible: a logdir copied after ``flush()`` holds every file
  of every call before it (and readers load them: the projector config names them);
* a logdir removed after its writer saw it is never re-created by a pending job: the
  job writes nothing and its failure is raised by the next ``flush()``;
* a write that fails is tried again (a transient failure costs nothing); one that
  keeps failing comes back as a :class:`WriteError` chained to the ``OSError``.

Storage failures here are real ones (a file where a folder must go, a removed
folder), except the transient one, injected through the module's ``write_file`` seam.
"""

from __future__ import annotations

import errno
import os
import shutil

import pytest
import torch

import asyncsummary
from asyncsummary import InvalidEventError, WriteError
from asyncsummary.torch import _projector
from tests.test_torch_writer import paused_workers

pytestmark = pytest.mark.torch

FILES = ("tensors.tsv", "metadata.tsv", "sprite.png")


def _embed(writer, tag: str, step: int = 0) -> None:
    writer.add_embedding(
        torch.rand(4, 3), metadata=list("abcd"), label_img=torch.rand(4, 3, 2, 2), global_step=step, tag=tag
    )


def _job_error(error: BaseException) -> WriteError:
    """The failed embedding job's error as the writer raised it: the job's own
    ``WriteError`` (a storage failure, retried by the caller's next call, not an
    ``InvalidEventError``), chained to the ``OSError``."""
    assert isinstance(error, WriteError), repr(error)
    assert not isinstance(error, InvalidEventError), repr(error)
    assert isinstance(error.__cause__, OSError), repr(error.__cause__)
    return error


def test_flush_makes_every_file_visible_to_a_copy(tmp_path):
    logdir, copy = str(tmp_path / "run"), str(tmp_path / "copy")
    with asyncsummary.SummaryWriter(logdir) as writer:
        with paused_workers():  # the jobs wait: nothing is on disk when the calls return
            for i in range(3):
                _embed(writer, f"e{i}", step=i)
            assert not os.path.exists(os.path.join(logdir, "projector_config.pbtxt"))
        writer.flush()
        shutil.copytree(logdir, copy)
    for i in range(3):
        folder = os.path.join(copy, f"{i:05d}", f"e{i}")
        assert sorted(os.listdir(folder)) == sorted(FILES)
        with open(os.path.join(folder, "tensors.tsv")) as f:
            assert len(f.read().splitlines()) == 4
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    with open(os.path.join(copy, "projector_config.pbtxt")) as f:
        config = text_format.Parse(f.read(), ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == [f"e{i}:{i:05d}" for i in range(3)]
    for embedding in config.embeddings:  # every path the config names is in the copy
        for path in (embedding.tensor_path, embedding.metadata_path, embedding.sprite.image_path):
            assert os.path.isfile(os.path.join(copy, path)), path


@pytest.mark.parametrize("first_job", [False, True], ids=["after-a-flush", "the-first-job"])
def test_a_removed_logdir_is_not_created_again(tmp_path, first_job):
    logdir = str(tmp_path / "run")
    if first_job:
        os.makedirs(logdir)  # there when the call is made, as a framework's run folder is
    writer = asyncsummary.SummaryWriter(logdir)
    try:
        if not first_job:
            _embed(writer, "first")
            writer.flush()  # the logdir exists now, and the writer has seen it
        with paused_workers():
            _embed(writer, "second")
            shutil.rmtree(logdir)  # right after the call, before its job ran
        with pytest.raises(WriteError) as raised:
            writer.flush()
        error = _job_error(raised.value)
        assert error.__cause__.errno == errno.ENOENT
        assert not os.path.exists(logdir), "the job brought the removed logdir back"
    finally:
        writer.close()
    assert not os.path.exists(logdir)


def test_a_write_that_keeps_failing_is_a_write_error_chained_to_the_os_error(tmp_path):
    logdir = str(tmp_path / "run")
    with asyncsummary.SummaryWriter(logdir) as writer:
        writer.add_scalar("loss", 1.0, 0)
        writer.flush()
        with open(os.path.join(logdir, "00007"), "w"):  # a file where the step's folder goes
            pass
        _embed(writer, "blocked", step=7)
        with pytest.raises(WriteError) as raised:
            writer.flush()
        error = _job_error(raised.value)
        assert isinstance(error.__cause__, FileExistsError)
        assert f"failed {_projector.RETRIES} times" in str(error)
        writer.add_scalar("loss", 2.0, 1)  # the writer goes on
        writer.flush()


def test_a_transient_failure_is_retried_and_costs_nothing(tmp_path, monkeypatch):
    logdir = str(tmp_path / "run")
    real_write = _projector.write_file
    failures = []

    def flaky(path, data, storage_options):
        if len(failures) < _projector.RETRIES - 1:
            failures.append(path)
            raise OSError(errno.EIO, "injected transient failure", path)
        real_write(path, data, storage_options)

    monkeypatch.setattr(_projector, "write_file", flaky)
    with asyncsummary.SummaryWriter(logdir) as writer:
        _embed(writer, "flaky")
        writer.flush()  # no error: the third attempt wrote everything
    assert len(failures) == _projector.RETRIES - 1
    assert sorted(os.listdir(os.path.join(logdir, "00000", "flaky"))) == sorted(FILES)
    assert os.path.isfile(os.path.join(logdir, "projector_config.pbtxt"))
