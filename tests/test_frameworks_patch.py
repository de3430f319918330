"""``asyncsummary.patch()``: swaps torch's and tensorboardX's SummaryWriter, and puts them back."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings

import pytest
import tensorboardX
import tensorboardX.writer
import torch
import torch.utils.tensorboard
import torch.utils.tensorboard.writer

import asyncsummary

from .framework_runs import assert_same_runs, one_torch_thread  # noqa: F401
from .readers import scalars

TORCH_ORIGINAL = torch.utils.tensorboard.SummaryWriter
TBX_ORIGINAL = tensorboardX.SummaryWriter


def _classes():
    return (
        torch.utils.tensorboard.SummaryWriter,
        torch.utils.tensorboard.writer.SummaryWriter,
        tensorboardX.SummaryWriter,
        tensorboardX.writer.SummaryWriter,
    )


def _assert_original():
    assert _classes() == (TORCH_ORIGINAL, TORCH_ORIGINAL, TBX_ORIGINAL, TBX_ORIGINAL)


def _assert_ours():
    for cls in _classes():
        assert issubclass(cls, asyncsummary.SummaryWriter)


def test_with_patch_swaps_and_restores_every_attribute(tmp_path):
    _assert_original()
    with asyncsummary.patch() as handle:
        assert handle.active
        _assert_ours()
        from torch.utils.tensorboard import SummaryWriter  # as frameworks do, at use time

        with SummaryWriter(str(tmp_path / "torch")) as writer:
            assert isinstance(writer, asyncsummary.SummaryWriter)
            writer.add_scalar("x", 1.0, 1)
        from tensorboardX import SummaryWriter as XWriter

        with XWriter(logdir=str(tmp_path / "tbx")) as writer:  # tensorboardX's keyword
            assert isinstance(writer, asyncsummary.SummaryWriter)
            assert writer.logdir == str(tmp_path / "tbx")
            writer.add_scalar("x", 2.0, 2)
    assert not handle.active
    _assert_original()
    assert scalars(str(tmp_path / "torch")) == [(1, "x", 1.0)]
    assert scalars(str(tmp_path / "tbx")) == [(2, "x", 2.0)]


def test_tensorboardx_positional_and_log_dir_arguments(tmp_path):
    with asyncsummary.patch():
        first = tensorboardX.SummaryWriter(str(tmp_path / "a"), "", None, 10, 30)
        second = tensorboardX.SummaryWriter(
            log_dir=str(tmp_path / "b"), comet_config={"disabled": True}
        )
        assert first.log_dir == str(tmp_path / "a") and first.flush_secs == 30
        assert second.log_dir == str(tmp_path / "b")
        for w in (first, second):
            w.add_scalar("x", 3.0, 3)
            w.close()
    assert scalars(str(tmp_path / "a")) == scalars(str(tmp_path / "b")) == [(3, "x", 3.0)]


def test_nested_handles_restore_only_when_the_last_is_undone():
    outer = asyncsummary.patch()
    inner = asyncsummary.patch()  # idempotent: nothing is patched twice
    _assert_ours()
    outer.undo()  # out of order is fine
    _assert_ours()
    inner.undo()
    _assert_original()
    inner.undo()  # a second undo does nothing
    _assert_original()


def test_patch_is_thread_safe():
    errors = []
    barrier = threading.Barrier(8)

    def worker():
        try:
            barrier.wait(10)
            for _ in range(200):
                with asyncsummary.patch():
                    _assert_ours()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    _assert_original()


def test_flush_waits_default_is_false_and_passed_to_the_writers(tmp_path):
    with asyncsummary.patch():
        writer = torch.utils.tensorboard.SummaryWriter(str(tmp_path / "a"))
        assert writer.flush_waits is False and writer.file_writer.flush_waits is False
        own = torch.utils.tensorboard.SummaryWriter(str(tmp_path / "b"), flush_waits=True)
        assert own.file_writer.flush_waits is True  # a writer's own argument wins
        with pytest.raises(ValueError):
            asyncsummary.patch(flush_waits=True)  # another option while one is active
        writer.close()
        own.close()
    with asyncsummary.patch(flush_waits=True):
        writer = torch.utils.tensorboard.SummaryWriter(str(tmp_path / "c"))
        assert writer.file_writer.flush_waits is True
        writer.close()


def test_arguments_we_cannot_honour_get_tensorboardx_itself(tmp_path):
    with asyncsummary.patch():
        with pytest.warns(UserWarning, match="write_to_disk=False"):
            writer = tensorboardX.SummaryWriter(str(tmp_path / "a"), write_to_disk=False)
        assert type(writer) is TBX_ORIGINAL
        writer.close()
        with pytest.warns(UserWarning, match="comet_config"):
            writer = tensorboardX.SummaryWriter(
                str(tmp_path / "b"), comet_config={"disabled": False, "api_key": "x"}
            )
        assert type(writer) is TBX_ORIGINAL
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the supported arguments: no warning
            ours = tensorboardX.SummaryWriter(str(tmp_path / "c"), flush_secs=5)
        assert isinstance(ours, asyncsummary.SummaryWriter)
        ours.close()


def test_someone_elses_later_replacement_is_left_alone():
    class Theirs:
        pass

    handle = asyncsummary.patch()
    torch.utils.tensorboard.SummaryWriter = Theirs
    try:
        handle.undo()
        assert torch.utils.tensorboard.SummaryWriter is Theirs
        assert torch.utils.tensorboard.writer.SummaryWriter is TORCH_ORIGINAL
    finally:
        torch.utils.tensorboard.SummaryWriter = TORCH_ORIGINAL
    _assert_original()


def _train(writer_cls, logdir):
    """A plain torch loop logging through torch's SummaryWriter API, 300 steps."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    writer = writer_cls(logdir)
    writer.add_graph(model, torch.zeros(2, 4))
    for step in range(300):
        x = torch.randn(8, 4, generator=generator)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        writer.add_scalar("train/loss", loss, step)
        if step % 50 == 0:
            writer.add_histogram("weights", model[0].weight, step)
            writer.add_text("note", f"step {step}", step)
        writer.flush()  # as the frameworks do, every step
    writer.add_hparams({"lr": 0.05, "layers": 2}, {"hp/loss": loss.item()}, run_name="hp")
    writer.close()


@pytest.mark.usefixtures("one_torch_thread")
def test_training_through_the_patched_class_logs_what_torchs_writer_logs(tmp_path):
    _train(torch.utils.tensorboard.SummaryWriter, str(tmp_path / "stock"))
    with asyncsummary.patch():
        _train(torch.utils.tensorboard.SummaryWriter, str(tmp_path / "ours"))
    runs = assert_same_runs(str(tmp_path / "ours"), str(tmp_path / "stock"))
    assert len(runs["."]["scalars"]["train/loss"]) == 300
    assert runs["."]["graph"] and runs["hp"]["hparams"]


def test_importing_asyncsummary_and_its_integrations_loads_no_framework():
    code = (
        "import sys, asyncsummary, asyncsummary.integrations\n"
        "assert callable(asyncsummary.patch)\n"
        "roots = ('torch', 'tensorflow', 'tensorboardX', 'lightning', 'transformers', 'accelerate', 'ignite')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(roots)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
