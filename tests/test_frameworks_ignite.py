"""ignite: ``AsyncTensorboardLogger`` and ``patch()`` log what ignite's stock logger logs.

ignite's ``TensorboardLogger`` uses tensorboardX whenever it is installed (it is, in
the test extra), so this is also the test of ``patch()`` replacing tensorboardX. A
tiny regression model is trained for 300 iterations with an output handler (loss), an
optimizer-params handler (lr) and a weights-histogram handler; the runs are compared
through TensorBoard's ``EventAccumulator``.
"""

from __future__ import annotations

import os
from functools import partial

import pytest
import tensorboardX
import torch
from ignite.engine import Events, create_supervised_trainer
from ignite.handlers.tensorboard_logger import TensorboardLogger, WeightsHistHandler

import asyncsummary
from asyncsummary.integrations.ignite import AsyncTensorboardLogger

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


def _train(make_logger, before_close=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_supervised_trainer(model, optimizer, torch.nn.MSELoss())
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS * 4, 4, generator=generator)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4
    )
    logger = make_logger()
    logger.attach_output_handler(
        trainer,
        event_name=Events.ITERATION_COMPLETED,
        tag="train",
        output_transform=lambda loss: {"loss": loss},
    )
    logger.attach_opt_params_handler(
        trainer, event_name=Events.ITERATION_STARTED, optimizer=optimizer
    )
    logger.attach(
        trainer,
        log_handler=WeightsHistHandler(model),
        event_name=Events.ITERATION_COMPLETED(every=100),
    )
    trainer.run(data, max_epochs=1)
    if before_close is not None:
        before_close()
    logger.close()
    return logger


@pytest.fixture(scope="module")
def stock_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ignite") / "stock")
    logger = _train(lambda: TensorboardLogger(log_dir=root))
    assert isinstance(logger.writer, tensorboardX.SummaryWriter)  # ignite's choice
    return root


def _assert_like_stock(root, stock_root):
    got = assert_same_runs(root, stock_root)
    assert [s for s, _ in got["."]["scalars"]["train/loss"]] == list(range(1, STEPS + 1))
    assert sorted(got["."]["histograms"]) == ["weights/bias", "weights/weight"]


def test_logger_logs_what_the_stock_logger_logs(tmp_path, monkeypatch, stock_root):
    monkeypatch.chdir(tmp_path)
    logger = _train(lambda: AsyncTensorboardLogger(log_dir="logs"))  # the README's line
    assert isinstance(logger.writer, asyncsummary.SummaryWriter)
    _assert_like_stock(str(tmp_path / "logs"), stock_root)


def test_patch_replaces_the_tensorboardx_writer_ignite_picks(tmp_path, stock_root):
    root = str(tmp_path / "patched")
    with asyncsummary.patch():
        logger = _train(lambda: TensorboardLogger(logdir=root))  # tensorboardX's keyword
    assert isinstance(logger.writer, asyncsummary.SummaryWriter)
    _assert_like_stock(root, stock_root)


def test_logdir_keyword_of_tensorboardx_is_accepted(tmp_path):
    logger = AsyncTensorboardLogger(logdir=str(tmp_path / "x"))
    assert logger.writer.get_logdir() == str(tmp_path / "x")
    logger.close()
    with pytest.raises(TypeError):
        AsyncTensorboardLogger(str(tmp_path / "y"), logdir=str(tmp_path / "y"))


def _assert_every_step_logged(root):
    assert [s for s, t, _ in scalars(root) if t == "train/loss"] == list(range(1, STEPS + 1))


def test_training_does_not_wait_for_stalled_storage(tmp_path):
    storage = GatedStorage()
    root = str(tmp_path / "ours")
    _train(
        lambda: AsyncTensorboardLogger(log_dir=root, sink_factory=storage.factory),
        before_close=partial(release_when_stalled, storage),
    )
    _assert_every_step_logged(root)


@pytest.mark.parametrize("route", ["adapter", "patch"])
def test_training_does_not_wait_for_a_hung_mount(tmp_path, route):
    """The README's lines, default writer options, on a real hung mount."""
    with hung_mount(tmp_path) as mount:
        root = os.path.join(mount.mountpoint, route)
        release = partial(release_when_stalled, mount)
        if route == "adapter":
            _train(lambda: AsyncTensorboardLogger(log_dir=root), before_close=release)
        else:
            with asyncsummary.patch():
                _train(lambda: TensorboardLogger(log_dir=root), before_close=release)
        _assert_every_step_logged(root)
