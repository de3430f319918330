"""What a framework wrote, as TensorBoard reads it: for comparing a run with the stock writer's.

:func:`run_contents` reads every run (folder holding event files) under a root through
TensorBoard's ``EventAccumulator`` and returns plain data: per run, the scalars
(tag -> [(step, value)]), the tensors (tag -> plugin, [(step, content)]: texts, hparams,
new-style scalars), histograms, images, the hparams plugin's data (tag -> content)
and the graph's nodes. Two runs of one training
(seeded alike), one with the stock writer and one with ours, must give equal contents.

Made equal before comparing, since they differ by nature, not by writer:

* run folders named after the time (torch's ``add_hparams`` run, accelerate's
  ``store_init_configuration``): ``<time>``;
* the root folder's path inside texts (HF logs its ``TrainingArguments``): ``<root>``;
* values of tags that measure time (``*runtime``, ``*per_second``): steps only.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

import pytest

from asyncsummary import FileSink
from asyncsummary.testing import GatedSink

from .procs import DEADLINE
from .readers import accumulator, event_files

_TIME_NAME = re.compile(r"^\d{9,}(\.\d+)?$")
_TIMED_TAG = re.compile(r"(runtime|per_second)$")


def runs(root: str) -> list[str]:
    """Every folder under ``root`` that holds an event file, sorted."""
    found = []
    for folder, _, _ in os.walk(root):
        if event_files(folder):
            found.append(folder)
    return sorted(found)


def _run_name(root: str, folder: str) -> str:
    parts = os.path.relpath(folder, root).split(os.sep)
    return "/".join("<time>" if _TIME_NAME.match(p) else p for p in parts)


def _tensor_value(tensor: Any, root: str) -> Any:
    if tensor.string_val:
        return tuple(s.replace(root.encode(), b"<root>") for s in tensor.string_val)
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(tensor).tolist()


def run_contents(root: str) -> dict[str, dict[str, Any]]:
    """Contents of every run under ``root`` (see the module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    for folder in runs(root):
        acc = accumulator(folder)
        tags = acc.Tags()
        run: dict[str, Any] = {"scalars": {}, "tensors": {}, "histograms": {}, "images": {}}
        for tag in tags["scalars"]:
            timed = bool(_TIMED_TAG.search(tag))
            run["scalars"][tag] = [(e.step, None if timed else e.value) for e in acc.Scalars(tag)]
        for tag in tags["tensors"]:
            plugin = acc.SummaryMetadata(tag).plugin_data
            timed = bool(_TIMED_TAG.search(tag))
            run["tensors"][tag] = (
                plugin.plugin_name,
                plugin.content,
                [
                    (e.step, None if timed else _tensor_value(e.tensor_proto, root))
                    for e in acc.Tensors(tag)
                ],
            )
        for tag in tags["histograms"]:
            run["histograms"][tag] = [
                (e.step, tuple(e.histogram_value.bucket)) for e in acc.Histograms(tag)
            ]
        for tag in tags["images"]:
            run["images"][tag] = [(e.step, e.width, e.height) for e in acc.Images(tag)]
        try:
            run["hparams"] = dict(acc.PluginTagToContent("hparams"))
        except KeyError:
            run["hparams"] = {}
        run["graph"] = sorted((n.name, n.op) for n in acc.Graph().node) if tags["graph"] else None
        out[_run_name(root, folder)] = run
    return out


def assert_same_runs(
    ours: str, stock: str, ignore: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """Assert that the runs under ``ours`` hold what the stock writer's under ``stock`` do.

    ``ignore``: tags whose content may differ (their presence is still compared).
    """
    got, expected = run_contents(ours), run_contents(stock)
    assert sorted(got) == sorted(expected)
    for name in expected:
        for kind in ("scalars", "tensors", "histograms", "images", "hparams", "graph"):
            mine, theirs = got[name][kind], expected[name][kind]
            if isinstance(theirs, dict) and ignore:
                assert sorted(mine) == sorted(theirs), (name, kind)
                mine = {k: v for k, v in mine.items() if k not in ignore}
                theirs = {k: v for k, v in theirs.items() if k not in ignore}
            assert mine == theirs, (name, kind)
    return got


@pytest.fixture
def one_torch_thread():
    """Train with one intra-op thread (restored after): the suite shares 2 cores, and
    torch's default of one thread per core made a tiny model's step 10x slower here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class GatedStorage:
    """A ``sink_factory`` whose sinks hold every write until :meth:`release`: stalled storage.

    A framework test passes :meth:`factory` to the writer, trains, and at the end of
    training (before the framework closes the writer) calls :meth:`assert_stalled`:
    every step ran while the storage has taken no byte. Same methods as
    :class:`tests.hung_storage.HungMount`, the stalled storage of a real mount.
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.sinks: list[GatedSink] = []

    def factory(self, path: str) -> GatedSink:
        self.sinks.append(GatedSink(FileSink(path), self.gate))
        return self.sinks[-1]

    def assert_stalled(self) -> None:
        """A write is held in the storage (poll, bounded), and nothing released it."""
        deadline = time.monotonic() + DEADLINE
        while not any(s.entered.is_set() for s in self.sinks):
            assert time.monotonic() < deadline, "no write reached the stalled storage"
            time.sleep(0.01)
        assert not self.gate.is_set()

    def release(self) -> None:
        self.gate.set()


def release_when_stalled(storage: Any) -> None:
    """At the end of training, before the framework closes its writer: assert that the
    storage (:class:`GatedStorage` or :class:`tests.hung_storage.HungMount`) still holds
    a write, so every step ran without it; then let the storage go."""
    storage.assert_stalled()
    storage.release()
