"""Lightning: ``AsyncTensorBoardLogger`` and ``patch()`` log what the stock logger logs, without waiting.

A tiny regression model (random data, seeded) is trained for 300 steps with
``log_every_n_steps=1``, so Lightning calls ``logger.save()`` (a ``flush()``) after
every step. The run is read back through TensorBoard's ``EventAccumulator`` and
compared with the stock ``TensorBoardLogger``'s: tags, steps, values, hparams, graph.
"""

from __future__ import annotations

import os
import threading

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

import asyncsummary
from asyncsummary import FileSink, FlushTimeoutError
from asyncsummary.integrations.lightning import AsyncTensorBoardLogger
from asyncsummary.testing import GatedSink

from .framework_runs import assert_same_runs, one_torch_thread  # noqa: F401
from .readers import scalars

STEPS = 300

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Regression(pl.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )
        self.example_input_array = torch.zeros(2, 4)  # log_graph=True traces it

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _fit(logger, steps=STEPS, callbacks=()):
    pl.seed_everything(0, verbose=False)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(steps * 4, 4, generator=generator)
    y = x.sum(1, keepdim=True)
    trainer = pl.Trainer(
        max_epochs=1,
        logger=logger,
        log_every_n_steps=1,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(
        Regression(),
        DataLoader(TensorDataset(x, y), batch_size=4),
        DataLoader(TensorDataset(x[:16], y[:16]), batch_size=4),
    )
    return trainer


@pytest.fixture(scope="module")
def stock_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("lightning") / "stock")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit(TensorBoardLogger(root, name="", version=0, log_graph=True))
    finally:
        torch.set_num_threads(before)
    return root


def _assert_like_stock(root, stock_root):
    runs = assert_same_runs(root, stock_root)
    run = runs["version_0"]
    assert [s for s, _ in run["scalars"]["train/loss"]] == list(range(STEPS))
    assert run["graph"] and set(run["hparams"]) == {
        "_hparams_/experiment",
        "_hparams_/session_start_info",
        "_hparams_/session_end_info",
    }
    assert os.path.isfile(os.path.join(root, "version_0", "hparams.yaml"))


def test_adapter_logs_what_the_stock_logger_logs(tmp_path, stock_root):
    root = str(tmp_path / "ours")
    # The exact line of the README:
    logger = AsyncTensorBoardLogger(root, name="", version=0, log_graph=True)
    _fit(logger)
    assert isinstance(logger.experiment, asyncsummary.SummaryWriter)
    _assert_like_stock(root, stock_root)


def test_patch_makes_the_stock_logger_ours(tmp_path, stock_root):
    root = str(tmp_path / "patched")
    with asyncsummary.patch():
        logger = TensorBoardLogger(root, name="", version=0, log_graph=True)
        _fit(logger)
        assert isinstance(logger.experiment, asyncsummary.SummaryWriter)
    _assert_like_stock(root, stock_root)


class _ReleaseAtTrainEnd(pl.Callback):
    """At the end of training (before the logger's close): note what happened, open the gate."""

    def __init__(self, gate, sinks):
        self.gate, self.sinks = gate, sinks
        self.steps_done = None

    def on_train_end(self, trainer, pl_module):
        # Every step ran, and storage has not taken a byte: it is stalled on a write.
        assert self.sinks and self.sinks[0].entered.is_set() and not self.gate.is_set()
        self.steps_done = trainer.global_step
        self.gate.set()


def _gated_factory(gate):
    sinks = []

    def factory(path):
        sinks.append(GatedSink(FileSink(path), gate))
        return sinks[-1]

    return factory, sinks


@pytest.mark.parametrize("route", ["adapter", "patch"])
def test_training_does_not_wait_for_stalled_storage(tmp_path, route):
    gate = threading.Event()
    factory, sinks = _gated_factory(gate)
    release = _ReleaseAtTrainEnd(gate, sinks)
    root = str(tmp_path / route)
    if route == "adapter":
        _fit(AsyncTensorBoardLogger(root, name="", version=0, sink_factory=factory), 200, [release])
    else:
        with asyncsummary.patch():
            _fit(TensorBoardLogger(root, name="", version=0, sink_factory=factory), 200, [release])
    assert release.steps_done == 200
    # finalize() closed the writer after the release: everything is on disk.
    logged = [s for s, tag, _ in scalars(os.path.join(root, "version_0")) if tag == "train/loss"]
    assert logged == list(range(200))


def test_a_waiting_flush_would_stall_the_first_step(tmp_path):
    """The contrast: with flush_waits=True, Lightning's per-step save() waits for the storage."""
    gate = threading.Event()
    factory, sinks = _gated_factory(gate)
    logger = AsyncTensorBoardLogger(
        str(tmp_path / "waits"),
        name="",
        version=0,
        flush_waits=True,
        flush_timeout=0.5,
        close_timeout=0.5,
        sink_factory=factory,
    )
    try:
        with pytest.raises(FlushTimeoutError):
            _fit(logger, 20)
    finally:
        gate.set()
        logger.experiment.close()
