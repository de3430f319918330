"""Lightning: ``AsyncTensorBoardLogger`` and ``patch()`` log what the stock logger logs, without waiting.

A tiny regression model (``benchmarks.tiny_models``: random data, seeded) is trained for 300 steps with
``log_every_n_steps=1``, so Lightning calls ``logger.save()`` (a ``flush()``) after
every step. The run is read back through TensorBoard's ``EventAccumulator`` and
compared with the stock ``TensorBoardLogger``'s: tags, steps, values, hparams, graph.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

import asyncsummary
from asyncsummary import FlushTimeoutError
from asyncsummary.integrations.lightning import AsyncTensorBoardLogger
from benchmarks.tiny_models import lightning_fit

from .framework_runs import (  # noqa: F401
    GatedStorage,
    assert_same_runs,
    one_torch_thread,
    release_when_stalled,
)
from .hung_storage import hung_mount
from .readers import scalars

STEPS = 300

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fit(logger, steps=STEPS, callbacks=()):
    return lightning_fit(logger, steps, callbacks=callbacks)


@pytest.fixture(scope="module")
def stock_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("lightning") / "stock")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit(TensorBoardLogger(root, log_graph=True))
    finally:
        torch.set_num_threads(before)
    return root


def _assert_like_stock(root, stock_root):
    runs = assert_same_runs(root, stock_root)
    run = runs["lightning_logs/version_0"]
    assert [s for s, _ in run["scalars"]["train/loss"]] == list(range(STEPS))
    assert run["graph"] and set(run["hparams"]) == {
        "_hparams_/experiment",
        "_hparams_/session_start_info",
        "_hparams_/session_end_info",
    }
    assert os.path.isfile(os.path.join(root, "lightning_logs", "version_0", "hparams.yaml"))


def test_adapter_logs_what_the_stock_logger_logs(tmp_path, monkeypatch, stock_root):
    monkeypatch.chdir(tmp_path)
    logger = AsyncTensorBoardLogger("logs", log_graph=True)  # the README's line
    _fit(logger)
    assert isinstance(logger.experiment, asyncsummary.SummaryWriter)
    _assert_like_stock(str(tmp_path / "logs"), stock_root)


def test_patch_makes_the_stock_logger_ours(tmp_path, stock_root):
    root = str(tmp_path / "patched")
    with asyncsummary.patch():
        logger = TensorBoardLogger(root, log_graph=True)
        _fit(logger)
        assert isinstance(logger.experiment, asyncsummary.SummaryWriter)
    _assert_like_stock(root, stock_root)


class _ReleaseAtTrainEnd(pl.Callback):
    """At the end of training (before the logger's close): the storage still holds its
    first write, every step ran; then let the storage go."""

    def __init__(self, storage):
        self.storage = storage
        self.steps_done = None

    def on_train_end(self, trainer, pl_module):
        self.steps_done = trainer.global_step
        release_when_stalled(self.storage)


def _assert_every_step_logged(root, steps):
    # finalize() closed the writer after the release: everything is on disk.
    logged = [s for s, tag, _ in scalars(os.path.join(root, "version_0")) if tag == "train/loss"]
    assert logged == list(range(steps))


@pytest.mark.parametrize("route", ["adapter", "patch"])
def test_training_does_not_wait_for_stalled_storage(tmp_path, route):
    storage = GatedStorage()
    release = _ReleaseAtTrainEnd(storage)
    root = str(tmp_path / route)
    options = {"name": "", "version": 0, "sink_factory": storage.factory}
    if route == "adapter":
        _fit(AsyncTensorBoardLogger(root, **options), 200, [release])
    else:
        with asyncsummary.patch():
            _fit(TensorBoardLogger(root, **options), 200, [release])
    assert release.steps_done == 200
    _assert_every_step_logged(root, 200)


def test_patch_does_not_wait_for_a_hung_mount(tmp_path):
    """The README's line, stock logger, default writer options, on a real hung mount."""
    with hung_mount(tmp_path, only="tfevents") as mount:
        release = _ReleaseAtTrainEnd(mount)
        root = os.path.join(mount.mountpoint, "logs")
        with asyncsummary.patch():
            _fit(TensorBoardLogger(root, name="", version=0), 200, [release])
        assert release.steps_done == 200
        _assert_every_step_logged(root, 200)


def test_a_waiting_flush_would_stall_the_first_step(tmp_path):
    """The contrast: with flush_waits=True, Lightning's per-step save() waits for the storage."""
    storage = GatedStorage()
    logger = AsyncTensorBoardLogger(
        str(tmp_path / "waits"),
        name="",
        version=0,
        flush_waits=True,
        flush_timeout=0.5,
        close_timeout=0.5,
        sink_factory=storage.factory,
    )
    try:
        with pytest.raises(FlushTimeoutError):
            _fit(logger, 20)
    finally:
        storage.release()
        logger.experiment.close()
