"""Hugging Face ``Trainer``: ``AsyncTensorBoardCallback`` and ``patch()`` log what the stock callback logs.

A tiny BERT classifier built from a config (no hub download: ``HF_HUB_OFFLINE=1``) is
trained on random tokens for 200 steps with ``logging_steps=1``, so the stock callback's
``on_log`` flushes after every step, then evaluated once more after training. The run
is read back through TensorBoard's ``EventAccumulator`` and compared with the stock
``TensorBoardCallback``'s: tags, steps, values (but timings), texts.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import threading  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.integrations import TensorBoardCallback  # noqa: E402

import asyncsummary  # noqa: E402
from asyncsummary import FileSink  # noqa: E402
from asyncsummary.integrations.huggingface import AsyncTensorBoardCallback  # noqa: E402
from asyncsummary.testing import GatedSink  # noqa: E402

from .framework_runs import assert_same_runs, one_torch_thread, runs  # noqa: E402, F401
from .readers import scalars  # noqa: E402

STEPS = 200

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 32, (n, 8), generator=generator)
        self.y = self.x.sum(1) % 2

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.y[i]}


def _trainer(root, callbacks, steps=STEPS, report_to="none", **args):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=32,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=2,
    )
    arguments = TrainingArguments(
        output_dir=os.path.join(root, "out"),
        max_steps=steps,
        logging_steps=1,
        per_device_train_batch_size=4,
        report_to=report_to,
        save_strategy="no",
        eval_strategy="steps",
        eval_steps=100,
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        **args,
    )
    return Trainer(
        model=BertForSequenceClassification(config),
        args=arguments,
        train_dataset=RandomTokens(steps * 4),
        eval_dataset=RandomTokens(8),
        callbacks=callbacks,
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
    # The exact line of the README: report_to="none", and the callback.
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
    """Listed before the TensorBoard callback: runs before its close at the end of training."""

    def __init__(self, gate, sinks):
        self.gate, self.sinks = gate, sinks
        self.steps_done = None

    def on_train_end(self, args, state, control, **kwargs):
        assert self.sinks and self.sinks[0].entered.is_set() and not self.gate.is_set()
        self.steps_done = state.global_step
        self.gate.set()


def test_training_does_not_wait_for_stalled_storage(tmp_path):
    gate = threading.Event()
    sinks = []

    def factory(path):
        sinks.append(GatedSink(FileSink(path), gate))
        return sinks[-1]

    release = _ReleaseAtTrainEnd(gate, sinks)
    logdir = str(tmp_path / "tb")
    callback = AsyncTensorBoardCallback(logging_dir=logdir, sink_factory=factory)
    _trainer(str(tmp_path), [release, callback], steps=100).train()
    assert release.steps_done == 100
    assert [s for s, t, _ in scalars(logdir) if t == "train/loss"] == list(range(1, 101))
