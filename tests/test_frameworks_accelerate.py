"""accelerate: ``AsyncTensorBoardTracker`` and ``patch()`` log what the stock tracker logs, without waiting.

A tiny regression model is trained for 300 steps; ``accelerator.log`` (a ``flush()``
in the stock tracker) is called on every step with a scalar, a text-free number and a
dict (``add_scalars``: one run per key), and ``init_trackers(config=...)`` writes the
hparams run. Read back through TensorBoard's ``EventAccumulator`` and compared with
the stock ``"tensorboard"`` tracker's run.
"""

from __future__ import annotations

import os
from functools import partial

import pytest
import torch
from accelerate import Accelerator

import asyncsummary
from asyncsummary.integrations.accelerate import AsyncTensorBoardTracker

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


def _train(accelerator, steps=STEPS, before_end=None):
    accelerator.init_trackers("run", config={"lr": 0.1, "batch_size": 4})
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(4, 4, generator=generator)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log(
            {"train/loss": loss.item(), "lr": 0.1, "pair": {"a": step, "b": -step}}, step=step
        )
    if before_end is not None:
        before_end()
    accelerator.end_training()


@pytest.fixture(scope="module")
def stock_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("accelerate") / "stock")
    _train(Accelerator(log_with="tensorboard", project_dir=root, cpu=True))
    return root


def _assert_like_stock(root, stock_root):
    got = assert_same_runs(root, stock_root)
    assert sorted(got) == ["run", "run/<time>", "run/pair_a", "run/pair_b"]
    assert [s for s, _ in got["run"]["scalars"]["train/loss"]] == list(range(STEPS))
    assert got["run/<time>"]["hparams"]


def test_tracker_logs_what_the_stock_tracker_logs(tmp_path, monkeypatch, stock_root):
    monkeypatch.chdir(tmp_path)
    # The README's line (and cpu=True):
    accelerator = Accelerator(log_with=AsyncTensorBoardTracker("run", "logs"), cpu=True)
    _train(accelerator)
    assert isinstance(
        accelerator.get_tracker("tensorboard", unwrap=True), asyncsummary.SummaryWriter
    )
    _assert_like_stock(str(tmp_path / "logs"), stock_root)


def test_patch_makes_the_stock_tracker_ours(tmp_path, stock_root):
    root = str(tmp_path / "patched")
    with asyncsummary.patch():
        accelerator = Accelerator(log_with="tensorboard", project_dir=root, cpu=True)
        _train(accelerator)
    assert isinstance(
        accelerator.get_tracker("tensorboard", unwrap=True), asyncsummary.SummaryWriter
    )
    _assert_like_stock(root, stock_root)


def _assert_every_step_logged(root, steps):
    logged = [s for s, t, _ in scalars(os.path.join(root, "run")) if t == "train/loss"]
    assert logged == list(range(steps))


def test_training_does_not_wait_for_stalled_storage(tmp_path):
    storage = GatedStorage()
    root = str(tmp_path / "ours")
    tracker = AsyncTensorBoardTracker("run", root, sink_factory=storage.factory)
    accelerator = Accelerator(log_with=tracker, cpu=True)
    _train(accelerator, steps=200, before_end=partial(release_when_stalled, storage))
    _assert_every_step_logged(root, 200)


def test_patch_does_not_wait_for_a_hung_mount(tmp_path):
    """The README's line, the stock tracker, on a real hung mount (its hparams.yml,
    written on the training thread, goes through)."""
    with hung_mount(tmp_path, only="tfevents") as mount:
        root = os.path.join(mount.mountpoint, "logs")
        with asyncsummary.patch():
            accelerator = Accelerator(log_with="tensorboard", project_dir=root, cpu=True)
            _train(accelerator, steps=200, before_end=partial(release_when_stalled, mount))
        _assert_every_step_logged(root, 200)
