"""Hugging Face ``Trainer``: ``AsyncTensorBoardCallback`` and ``patch()`` log what the stock callback logs.

A tiny BERT classifier built from a config (``benchmarks.tiny_models``; no hub download) is
trained on random tokens for 200 steps with ``logging_steps=1``, so the stock callback's
``on_log`` flushes after every step, then evaluated once more after training. The run
is read back through TensorBoard's ``EventAccumulator`` and compared with the stock
``TensorBoardCallback``'s: tags, steps, values (but timings), texts.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers.integrations import TensorBoardCallback  # noqa: E402

import asyncsummary  # noqa: E402
from asyncsummary.integrations.huggingface import AsyncTensorBoardCallback  # noqa: E402
from benchmarks.tiny_models import hf_trainer  # noqa: E402

from .framework_runs import (  # noqa: E402, F401
    GatedStorage,
    assert_same_runs,
    one_torch_thread,
    release_when_stalled,
    runs,
)
from .hung_storage import hung_mount  # noqa: E402
from .readers import scalars  # noqa: E402

STEPS = 200

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trainer(root, callbacks, steps=STEPS, report_to="none", **arguments):
    return hf_trainer(
        os.path.join(root, "out"),
        callbacks,
        steps,
        report_to=report_to,
        eval_steps=100,
        **arguments,
    )


def _train_and_evaluate(trainer):
    trainer.train()
    trainer.evaluate()  # after training: the callback makes a writer again


@pytest.fixture(scope="module")
def stock_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hf") / "stock")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        os.environ["TENSORBOARD_LOGGING_DIR"] = os.path.join(root, "tb")
        _train_and_evaluate(_trainer(root, [TensorBoardCallback()]))
    finally:
        del os.environ["TENSORBOARD_LOGGING_DIR"]
        torch.set_num_threads(before)
    return root


def _assert_like_stock(root, stock_root):
    got = assert_same_runs(root, stock_root)
    run = got["tb"]
    assert [s for s, _ in run["scalars"]["train/loss"]] == list(range(1, STEPS + 1))
    assert len(run["scalars"]["eval/loss"]) == 3  # steps 100 and 200, and the evaluate() after
    assert {"args/text_summary", "model_config/text_summary"} <= set(run["tensors"])


def test_callback_logs_what_the_stock_callback_logs(tmp_path, monkeypatch, stock_root):
    root = str(tmp_path / "ours")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", os.path.join(root, "tb"))
    # The README's lines: report_to="none", and the callback.
    trainer = _trainer(root, callbacks=[AsyncTensorBoardCallback()], report_to="none")
    _train_and_evaluate(trainer)
    _assert_like_stock(root, stock_root)


def test_patch_makes_the_stock_callback_ours(tmp_path, monkeypatch, stock_root):
    root = str(tmp_path / "patched")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", os.path.join(root, "tb"))
    with asyncsummary.patch():  # before Trainer(...): its callback looks the class up then
        trainer = _trainer(root, callbacks=[], report_to=["tensorboard"])
        _train_and_evaluate(trainer)
    [callback] = [
        c for c in trainer.callback_handler.callbacks if isinstance(c, TensorBoardCallback)
    ]
    assert issubclass(callback._SummaryWriter, asyncsummary.SummaryWriter)
    # Same data as the stock run, but the logged TrainingArguments, which say report_to.
    got = assert_same_runs(root, stock_root, ignore=("args/text_summary",))
    assert len(got["tb"]["scalars"]["train/loss"]) == STEPS


def test_report_to_tensorboard_as_well_is_refused(tmp_path):
    trainer = _trainer(
        str(tmp_path), [AsyncTensorBoardCallback()], steps=2, report_to=["tensorboard"]
    )
    with pytest.raises(ValueError, match="report_to"):
        trainer.train()


def _evals(logdir):
    return [t for _, t, _ in scalars(logdir)].count("eval/loss")


def test_tb_writer_pitfall_post_train_evaluate_stays_in_the_writers_folder(tmp_path):
    # Stock: tb_writer= alone. evaluate() after training goes to a torch writer
    # in <output_dir>/runs/<date>, not to the given writer's folder.
    stock_dir = str(tmp_path / "stock_writer")
    writer = asyncsummary.SummaryWriter(stock_dir)
    _train_and_evaluate(
        _trainer(str(tmp_path / "stock"), [TensorBoardCallback(tb_writer=writer)], steps=4)
    )
    elsewhere = runs(str(tmp_path / "stock" / "out" / "runs"))
    assert len(elsewhere) == 1 and _evals(elsewhere[0]) == 1  # the post-train evaluate()
    assert _evals(stock_dir) == 1  # only the one at the end of training
    # Ours: the post-train evaluate() lands in the writer's folder, with our writer.
    ours_dir = str(tmp_path / "our_writer")
    callback = AsyncTensorBoardCallback(tb_writer=asyncsummary.SummaryWriter(ours_dir))
    _train_and_evaluate(_trainer(str(tmp_path / "ours"), [callback], steps=4))
    assert isinstance(callback.tb_writer, asyncsummary.SummaryWriter)
    callback.tb_writer.close()
    assert _evals(ours_dir) == 2  # both
    assert not os.path.exists(str(tmp_path / "ours" / "out" / "runs"))


class _ReleaseAtTrainEnd(TrainerCallback):
    """Runs before the TensorBoard callback's ``on_train_end`` (which closes its writer):
    the storage still holds its first write, every step ran; then let the storage go."""

    def __init__(self, storage):
        self.storage = storage
        self.steps_done = None

    def on_train_end(self, args, state, control, **kwargs):
        self.steps_done = state.global_step
        release_when_stalled(self.storage)


def _train_steps(logdir):
    return [s for s, t, _ in scalars(logdir) if t == "train/loss"]


def test_training_does_not_wait_for_stalled_storage(tmp_path):
    storage = GatedStorage()
    release = _ReleaseAtTrainEnd(storage)
    logdir = str(tmp_path / "tb")
    callback = AsyncTensorBoardCallback(logging_dir=logdir, sink_factory=storage.factory)
    _trainer(str(tmp_path), [release, callback], steps=100).train()
    assert release.steps_done == 100
    assert _train_steps(logdir) == list(range(1, 101))


def test_patch_does_not_wait_for_a_hung_mount(tmp_path, monkeypatch):
    """The README's line, the stock callback (report_to), on a real hung mount."""
    with hung_mount(tmp_path, only="tfevents") as mount:
        logdir = os.path.join(mount.mountpoint, "tb")
        monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", logdir)
        release = _ReleaseAtTrainEnd(mount)
        with asyncsummary.patch():
            trainer = _trainer(str(tmp_path), [], steps=100, report_to=["tensorboard"])
            stock = trainer.pop_callback(TensorBoardCallback)  # the release runs first
            trainer.add_callback(release)
            trainer.add_callback(stock)
            trainer.train()
        assert release.steps_done == 100
        assert _train_steps(logdir) == list(range(1, 101))
