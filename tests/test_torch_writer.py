"""The torch-style SummaryWriter: snapshots, torch's errors at the call, the deferred
device path, the API surface, and an ``import asyncsummary`` that stays torch-free.

What it writes is compared with torch's own writer in ``test_torch_equivalence.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import asyncsummary
from asyncsummary import InvalidEventError
from asyncsummary._loop import BUILD_WORKERS, build_pool
from asyncsummary.torch import _snapshot
from tests.readers import accumulator
from tests.test_torch_equivalence import _normalised, _run_events

pytestmark = pytest.mark.torch

WAIT = 30.0  # bound of every wait in this file (seconds)


@contextlib.contextmanager
def paused_workers():
    """Hold every build worker until the block ends: nothing is built meanwhile."""
    gate = threading.Event()
    started = threading.Semaphore(0)

    def hold() -> None:
        started.release()
        gate.wait(WAIT)

    try:
        for _ in range(BUILD_WORKERS):  # one at a time, so each takes its own thread
            build_pool().submit(hold)
            assert started.acquire(timeout=WAIT)
        yield
    finally:
        gate.set()


# --------------------------------------------------------------------- snapshots
def _snapshot_calls(step: int) -> list[tuple[str, tuple, dict]]:
    """(method, args, kwargs) of calls whose inputs are changed in place after each call."""
    g = torch.Generator().manual_seed(step)
    rng = np.random.default_rng(step)
    return [
        ("add_scalar", ("s_tensor", torch.tensor(1.5 + step)), {"global_step": step}),
        ("add_scalar", ("s_array", np.array([2.5 + step])), {"global_step": step}),
        ("add_tensor", ("tensor", torch.arange(4.0) + step), {"global_step": step}),
        ("add_histogram", ("hist", torch.randn(300, generator=g)), {"global_step": step}),
        ("add_histogram", ("hist_np", rng.normal(size=200)), {"global_step": step, "bins": np.linspace(-2, 2, 9)}),
        ("add_histogram_raw", ("raw", 0.0, 2.0, 3, 3.0, 5.0, [1.0, 2.0], [1, 2]), {"global_step": step}),
        ("add_image", ("img", torch.rand(3, 8, 8, generator=g)), {"global_step": step}),
        ("add_image", ("img_np", rng.random((6, 5, 3))), {"global_step": step, "dataformats": "HWC"}),
        ("add_images", ("imgs", torch.rand(2, 3, 4, 4, generator=g)), {"global_step": step}),
        ("add_image_with_boxes", ("boxes", torch.rand(3, 16, 16, generator=g), torch.tensor([[1.0, 1.0, 8.0, 9.0]])),
         {"global_step": step, "labels": ["box"]}),
        ("add_video", ("video", torch.rand(1, 2, 3, 4, 4, generator=g)), {"global_step": step}),
        ("add_audio", ("audio", torch.rand(1, 100, generator=g) - 0.5), {"global_step": step}),
        ("add_pr_curve", ("pr", rng.integers(0, 2, size=30), torch.rand(30, generator=g)),
         {"global_step": step, "weights": rng.random(30)}),
        ("add_pr_curve_raw", ("pr_raw", *[np.arange(3.0) + i for i in range(6)]), {"global_step": step, "num_thresholds": 3}),
        ("add_mesh", ("mesh", torch.rand(1, 3, 3, generator=g)),
         {"colors": torch.randint(0, 255, (1, 3, 3), generator=g), "faces": np.array([[[0, 1, 2]]]),
          "config_dict": {"camera": {"fov": 75}}, "global_step": step}),
        ("add_embedding", (torch.rand(4, 3, generator=g),),
         {"metadata": [["a", 1], ["b", 2], ["c", 3], ["d", 4]], "metadata_header": ["name", "id"],
          "label_img": torch.rand(4, 3, 2, 2, generator=g), "global_step": step, "tag": "emb"}),
    ]


def _clobber(value) -> None:
    """Change an input in place, as a training step would."""
    if isinstance(value, torch.Tensor):
        value.fill_(0)
    elif isinstance(value, np.ndarray):
        value[...] = 0
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, list):
                item[:] = ["changed"] * len(item)
            else:
                value[i] = 99
    elif isinstance(value, dict):
        for item in value.values():
            _clobber(item)
        value["changed"] = 1


def _logged(logdir: str) -> list:
    return _normalised(_run_events(logdir))


def test_inputs_changed_in_place_after_each_call_are_logged_as_they_were(tmp_path):
    reference, mutated = str(tmp_path / "reference"), str(tmp_path / "mutated")
    with asyncsummary.SummaryWriter(reference) as writer:
        for step in range(2):
            for method, args, kwargs in _snapshot_calls(step):
                getattr(writer, method)(*args, **kwargs)
    with asyncsummary.SummaryWriter(mutated) as writer:
        with paused_workers():  # nothing is built until every input has been clobbered
            for step in range(2):
                for method, args, kwargs in _snapshot_calls(step):
                    getattr(writer, method)(*args, **kwargs)
                    for value in (*args, *kwargs.values()):
                        _clobber(value)
        writer.flush()
    expected = _logged(reference)
    assert len(expected) > 30 and _logged(mutated) == expected
    for step in range(2):  # the projector files too
        for name in ("tensors.tsv", "metadata.tsv", "sprite.png"):
            path = os.path.join(f"{step:05d}", "emb", name)
            with open(os.path.join(reference, path), "rb") as f, open(os.path.join(mutated, path), "rb") as g:
                assert f.read() == g.read(), path


def test_python_scalars_take_the_fast_path_without_any_worker(tmp_path):
    with asyncsummary.SummaryWriter(str(tmp_path)) as writer:
        with paused_workers():
            for step in range(50):
                writer.add_scalar("loss", 1.0 / (step + 1), step)
                writer.add_scalar("count", step, step)
                writer.add_scalars("pair", {"a": 0.5 * step, "b": step}, step)
            writer.flush()  # nothing waits for a build
        values = [(r[0], r[2]) for r in _logged(str(tmp_path)) if r[1] == "summary"]
        assert values == [(s, t) for s in range(50) for t in ("loss", "count")]


def _builds_done() -> None:
    """Wait until every build submitted so far has run (the pool is FIFO per worker)."""
    done = [build_pool().submit(lambda: None) for _ in range(BUILD_WORKERS)]
    for future in done:
        future.result(WAIT)


def test_histograms_wait_for_the_timer_not_the_loop(tmp_path):
    # A histogram's event is accounted by its snapshot (256 KiB here) until written,
    # though its build frees it at once: counted toward a batch, every second one woke
    # the loop, which took the GIL and a core from the trainer for a few KB. Now the
    # timer (or a flush, or a batch of other events) writes them; a quarter of the bound wakes
    # the loop too, so the bound is never reached by them alone.
    weight = torch.randn(256, 256, generator=torch.Generator().manual_seed(3))
    with asyncsummary.SummaryWriter(str(tmp_path / "timer"), flush_secs=3600) as writer:
        writer.add_scalar("first", 1.0, 0)
        writer.flush()  # the file is open, the loop idle
        file_writer = writer._get_file_writer()
        queue = file_writer._engine._queue
        written = file_writer.stats().written  # the file's header events and "first"
        for step in range(1, 21):  # 5 MiB of snapshots, a 512 KiB batch
            writer.add_histogram("w", weight, step)
        _builds_done()
        assert not queue.wake_sent and queue.deferred > 10 * weight.numel() * 4
        assert file_writer.stats().written == written
        writer.flush()
        assert file_writer.stats().written == written + 20 and queue.deferred == 0
    histograms = accumulator(str(tmp_path / "timer")).Histograms("w")
    assert [h.step for h in histograms] == list(range(1, 21))
    assert histograms[0].histogram_value.num == weight.numel()

    bound = 8 << 20  # a quarter of it: 8 snapshots
    with asyncsummary.SummaryWriter(
        str(tmp_path / "bound"), flush_secs=3600, max_pending_bytes=bound
    ) as writer:
        writer.add_scalar("first", 1.0, 0)
        writer.flush()
        file_writer = writer._get_file_writer()
        written = file_writer.stats().written
        for step in range(1, 11):
            writer.add_histogram("w", weight, step)
        deadline = time.monotonic() + WAIT
        while file_writer.stats().written < written + 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert file_writer.stats().written >= written + 7  # with no flush, no timer


# ------------------------------------------------------------ torch's errors
@pytest.fixture(scope="module")
def torch_writer(tmp_path_factory):
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    writer = TorchWriter(str(tmp_path_factory.mktemp("torch-bad-input")))
    yield writer
    writer.close()


BAD_CALLS = [
    ("add_image", ("i", torch.rand(3, 8, 8)), {"dataformats": "CHWC"}),
    ("add_image", ("i", torch.rand(3, 8, 8)), {"dataformats": "HW"}),
    ("add_image", ("i", torch.rand(6, 8, 8)), {}),  # six channels: Pillow refuses
    ("add_image", ("i", np.zeros((8, 8, 5))), {"dataformats": "HWC"}),
    ("add_image", ("i", [[0.0, 1.0]]), {}),
    ("add_images", ("i", torch.rand(2, 2, 8, 8)), {}),  # make_grid: 1 or 3 channels
    ("add_images", ("i", torch.rand(3, 8, 8)), {}),
    ("add_image_with_boxes", ("i", torch.rand(3, 8, 8), torch.tensor([[1.0, 2.0, 3.0]])), {}),
    ("add_histogram", ("h", torch.tensor([])), {}),
    ("add_histogram", ("h", torch.rand(10)), {"bins": "no-such-rule"}),
    ("add_histogram", ("h", torch.rand(10)), {"bins": -3}),
    ("add_histogram", ("h", torch.rand(10)), {"bins": [3.0, 1.0, 2.0]}),
    ("add_histogram", ("h", [1.0, 2.0]), {}),
    ("add_histogram", ("h", np.array(["a", "b"])), {}),
    ("add_histogram_raw", ("h", 0, 1, 2, 1, 1, [1.0, 2.0], [1]), {}),
    ("add_histogram_raw", ("h", "low", 1, 2, 1, 1, [1.0], [1]), {}),
    ("add_audio", ("a", torch.rand(2, 100)), {}),
    ("add_audio", ("a", torch.rand(0)), {}),
    ("add_video", ("v", torch.rand(4, 3, 8, 8)), {}),
    ("add_scalar", ("s", torch.rand(3)), {}),
    ("add_scalar", ("s", None), {}),
    ("add_scalar", ("s", "abc"), {}),
    ("add_scalar", ("s", [1.0]), {}),
    ("add_scalars", ("m", {"a": torch.rand(2)}), {}),
    ("add_tensor", ("t", np.zeros(3)), {}),
    ("add_text", ("t", 123), {}),
    ("add_pr_curve", ("p", np.ones(10), np.ones(5)), {}),
    ("add_pr_curve", ("p", np.ones(10), np.ones(10)), {"num_thresholds": 0}),
    ("add_pr_curve_raw", ("p", [1, 2], [1, 2], [1, 2], [1, 2], [1, 2], [1]), {}),
    ("add_mesh", ("m", torch.rand(4, 3)), {}),
    ("add_mesh", ("m", torch.rand(1, 4, 3)), {"config_dict": {"bad": object()}}),
    ("add_custom_scalars_marginchart", (["a", "b"],), {}),
    ("add_custom_scalars", ({"c": {"t": ["Margin", ["a"]]}},), {}),
    ("add_embedding", (torch.rand(5, 3),), {"metadata": [1, 2]}),
    ("add_embedding", (torch.rand(5, 3, 1),), {}),
    ("add_embedding", (torch.rand(5, 3),), {"label_img": torch.rand(4, 3, 8, 8)}),
    ("add_embedding", (torch.rand(4, 3),), {"label_img": np.zeros((4, 3, 8, 8))}),
    ("add_embedding", (torch.rand(2, 3),), {"metadata": [[1, 2], [3, 4]], "metadata_header": ["only"]}),
    ("add_hparams", ([], {}), {}),
    ("add_hparams", ({"a": [1]}, {}), {}),
    ("add_hparams", ({"a": 1}, {}), {"hparam_domain_discrete": {"a": "1"}}),
    ("add_onnx_graph", ("no-such-model.onnx",), {}),  # needs onnx, as in torch
]


@pytest.mark.parametrize("method, args, kwargs", BAD_CALLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_input_raises_torchs_error_type_at_the_call(tmp_path, torch_writer, method, args, kwargs, capsys):
    with pytest.raises(Exception) as theirs:  # noqa: B017, PT011 - whatever torch raises
        getattr(torch_writer, method)(*args, **kwargs)
    with asyncsummary.SummaryWriter(str(tmp_path)) as writer:
        queued = writer.file_writer.stats().queued
        with pytest.raises(type(theirs.value)):
            getattr(writer, method)(*args, **kwargs)
        assert writer.file_writer.stats().queued == queued  # nothing was queued


def test_errors_that_depend_on_values_come_back_from_the_worker(tmp_path):
    writer = asyncsummary.SummaryWriter(str(tmp_path))
    writer.add_histogram("nan", np.array([np.nan, 1.0]), 0, bins="auto")  # torch: ValueError here
    with pytest.raises(InvalidEventError) as caught:  # the flush that covers it says so
        writer.flush()
    assert isinstance(caught.value.__cause__, ValueError)
    writer.add_scalar("after", 1.0, 1)
    writer.close()
    assert [r[2] for r in _logged(str(tmp_path)) if r[1] == "summary"] == ["after"]


# ------------------------------------------------------------ the device path
class _FakeStream:
    """A device stream: operations run in order, only when the test lets the "GPU" run."""

    def __init__(self) -> None:
        self.ops: list = []

    def run(self) -> None:
        ops, self.ops = self.ops, []
        for op in ops:
            op()


class _FakeEvent:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.waited = threading.Event()

    def synchronize(self) -> None:
        self.waited.set()
        assert self.done.wait(WAIT), "the fake GPU never ran"


class _FakeDevice:
    """Stands in for CUDA: copies queued on a stream, events, a host buffer pool."""

    def __init__(self) -> None:
        self.stream = _FakeStream()
        self.events: list[_FakeEvent] = []
        self.pool = _snapshot.BufferPool(lambda dtype, n: torch.full((n,), float("nan")).to(dtype))

    def snapshot(self, tensor):
        buffer = self.pool.acquire(tensor.dtype, tensor.numel()).view(tensor.shape)
        buffer.fill_(float("nan"))  # what a read before the copy lands would see
        source = tensor.detach()
        event = _FakeEvent()
        self.stream.ops.append(lambda: buffer.copy_(source))
        self.stream.ops.append(event.done.set)
        self.events.append(event)
        return _snapshot.DeviceCopy(buffer, event, source, self.pool)


@pytest.fixture
def fake_device():
    device = _FakeDevice()
    old = _snapshot.register_backend("cpu", device)  # CPU tensors take the device path
    try:
        yield device
    finally:
        _snapshot.register_backend("cpu", old)


@pytest.fixture
def no_host_reads(monkeypatch):
    """A set of tensors whose values the caller's thread must not read (``.item()``, ...)."""
    guarded: list = []

    def guard(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if any(self is t for t in guarded) and threading.current_thread() is threading.main_thread():
                raise AssertionError(f"the caller read a device tensor with .{name}()")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)

    for name in ("item", "__float__", "tolist", "numpy", "cpu", "__array__"):
        guard(name)
    return guarded


def test_device_scalars_are_read_on_a_worker_after_their_event(tmp_path, fake_device, no_host_reads):
    writer = asyncsummary.SummaryWriter(str(tmp_path))
    loss, weights = torch.tensor(0.25), torch.arange(10.0)
    no_host_reads.extend([loss, weights])
    for step in range(3):
        writer.add_scalar("loss", loss, step)  # never .item() on the caller
        fake_device.stream.ops.append(lambda: loss.add_(1.0))  # the next step, same stream
    writer.add_histogram("weights", weights, 3)
    no_host_reads.clear()
    assert len(fake_device.events) == 4 and fake_device.stream.ops  # nothing has run on the "GPU"
    assert fake_device.events[0].waited.wait(WAIT)  # a worker waits for the first copy
    fake_device.stream.run()  # the GPU catches up
    writer.flush()
    rows = [r for r in _logged(str(tmp_path)) if r[1] == "summary"]
    scalars = [(r[0], r[2]) for r in rows][:3]
    assert scalars == [(0, "loss"), (1, "loss"), (2, "loss")]
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    values = [
        v.tensor.float_val[0]
        for path in sorted(os.listdir(str(tmp_path))) if "tfevents" in path
        for e in EventFileLoader(os.path.join(str(tmp_path), path)).Load()
        for v in e.summary.value if v.tag == "loss"
    ]
    assert values == [0.25, 1.25, 2.25]  # each value as it was when its copy was queued
    # The staging buffers went back to the pool and are reused by the next call.
    allocations = fake_device.pool.allocations
    assert fake_device.pool.free_bytes > 0
    writer.add_scalar("loss", loss, 9)
    fake_device.stream.run()
    writer.close()
    assert fake_device.pool.allocations == allocations


def test_buffer_pool_reuses_by_shape_class_and_caps_what_it_keeps():
    pool = _snapshot.BufferPool(lambda dtype, n: torch.empty(n, dtype=dtype), max_bytes=64)
    a = pool.acquire(torch.float32, 8)
    pool.release(a.view(2, 4))
    assert pool.acquire(torch.float32, 8).data_ptr() == a.data_ptr()
    assert pool.allocations == 1
    pool.acquire(torch.float64, 8)
    assert pool.allocations == 2
    pool.release(torch.empty(32, dtype=torch.float32))  # 128 bytes: over the cap, freed
    assert pool.free_bytes == 0


def test_a_refused_event_hands_its_buffers_back(tmp_path, fake_device):
    writer = asyncsummary.SummaryWriter(str(tmp_path))
    writer.file_writer.close()  # the run's writer now refuses events
    with pytest.raises(asyncsummary.WriterClosedError):
        writer.add_scalar("x", torch.tensor(1.0), 0)
    fake_device.stream.run()  # the copy lands; a worker may now recycle the buffer
    pause = threading.Event()
    for _ in range(int(WAIT * 100)):  # bounded polling: the release runs on a worker
        if fake_device.pool.free_bytes:
            break
        pause.wait(0.01)
    assert fake_device.pool.free_bytes == 4
    writer.close()


# ----------------------------------------------------------------- API surface
def test_every_public_method_of_torchs_writer_with_the_same_signature():
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    names = [n for n in dir(TorchWriter) if not n.startswith("_") and callable(getattr(TorchWriter, n))]
    assert len(names) > 20
    for name in names + ["__enter__", "__exit__"]:
        theirs = inspect.signature(getattr(TorchWriter, name))
        ours = inspect.signature(getattr(asyncsummary.SummaryWriter, name))
        shape = [(p.name, p.kind, p.default) for p in theirs.parameters.values()]
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == shape, name


def test_constructor_matches_torchs_except_flush_secs_and_writer_options():
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    theirs = inspect.signature(TorchWriter.__init__).parameters
    ours = inspect.signature(asyncsummary.SummaryWriter.__init__).parameters
    assert list(ours)[: len(theirs)] == list(theirs) and list(ours)[-1] == "writer_options"
    for name in theirs:
        if name != "flush_secs":
            assert ours[name].default == theirs[name].default, name
    assert ours["flush_secs"].default == 2.0 and theirs["flush_secs"].default == 120


def test_default_log_dir_close_reopen_and_writer_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writer = asyncsummary.SummaryWriter(comment="_lr0.1", max_pending_bytes=1 << 20, fsync=True)
    logdir = writer.get_logdir()
    assert logdir.startswith("runs" + os.sep) and logdir.endswith("_lr0.1")
    writer.add_scalar("a", 1.0, 0)
    writer.close()
    writer.close()  # idempotent
    writer.flush()  # after close: nothing to do, as in torch
    writer.add_scalar("a", 2.0, 1)  # like torch: a new event file
    writer.close()
    assert len([f for f in os.listdir(logdir) if "tfevents" in f]) == 2
    assert [r[0] for r in _logged(logdir) if r[1] == "summary"] == [0, 1]
    with pytest.raises(TypeError):
        asyncsummary.SummaryWriter(str(tmp_path / "x"), no_such_option=1)


def test_flush_returns_once_embedding_files_are_written(tmp_path):
    with asyncsummary.SummaryWriter(str(tmp_path)) as writer:
        with paused_workers():
            writer.add_embedding(torch.rand(3, 2), metadata=["a", "b", "c"], tag="e")
            assert not os.path.exists(tmp_path / "00000" / "e" / "tensors.tsv")
        writer.flush()
        for name in ("tensors.tsv", "metadata.tsv"):
            assert os.path.exists(tmp_path / "00000" / "e" / name)
        assert os.path.exists(tmp_path / "projector_config.pbtxt")


def test_hparams_runs_are_closed_in_the_background_and_flushed(tmp_path):
    writer = asyncsummary.SummaryWriter(str(tmp_path))
    writer.add_hparams({"lr": 0.1}, {"m": torch.tensor(0.5)}, run_name="one")
    writer.add_hparams({"lr": 0.2}, {"m": 0.25}, run_name="two")
    writer.flush()  # waits for both runs to be written and closed
    for run in ("one", "two"):
        rows = [r for r in _logged(str(tmp_path / run)) if r[1] == "summary"]
        assert [r[2] for r in rows] == ["_hparams_/experiment", "_hparams_/session_start_info",
                                        "_hparams_/session_end_info", "m"]
    writer.close()


def test_a_remote_logdir_gets_the_same_runs_and_projector_files(tmp_path):
    import uuid

    import fsspec

    def calls(writer):
        writer.add_scalar("loss", 0.5, 1)
        writer.add_image("img", torch.ones(3, 4, 4) * 0.5, 1)
        writer.add_scalars("pair", {"a": 1.0, "b": 2.0}, 1)
        writer.add_embedding(torch.eye(3), metadata=["x", "y", "z"], label_img=torch.zeros(3, 3, 2, 2))
        writer.add_hparams({"lr": 0.1}, {"m": 1.0}, run_name="hp")

    url = f"memory://asyncsummary-test-{uuid.uuid4().hex}/run"
    with asyncsummary.SummaryWriter(url) as writer:
        calls(writer)
    with asyncsummary.SummaryWriter(str(tmp_path / "local")) as writer:
        calls(writer)
    fs = fsspec.filesystem("memory")
    root = url[len("memory://"):]
    copied = tmp_path / "copied"
    for path in fs.find(root):
        target = copied / os.path.relpath(path.lstrip("/"), root.lstrip("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fs.cat(path))
    fs.rm(root, recursive=True)
    for run in (".", "pair_a", "pair_b", "hp"):
        assert _logged(str(copied / run)) == _logged(str(tmp_path / "local" / run)), run
    for name in ("projector_config.pbtxt", "00000/default/tensors.tsv", "00000/default/sprite.png"):
        assert (copied / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


# ------------------------------------------------------------- light imports
def test_import_asyncsummary_imports_neither_torch_nor_tensorflow(tmp_path):
    code = (
        "import sys, asyncsummary\n"
        "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'tensorflow', 'keras'})\n"
        "print(heavy())\n"
        "import numpy as np\n"
        "w = asyncsummary.SummaryWriter(sys.argv[1])\n"
        "w.add_histogram('h', np.arange(10.0), 0); w.add_image('i', np.zeros((3, 4, 4)), 0)\n"
        "w.add_embedding(np.eye(3), metadata=['a', 'b', 'c']); w.close()\n"
        "print(heavy())\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.stdout.split("\n")[:2] == ["[]", "['torch']"]  # and never TensorFlow
