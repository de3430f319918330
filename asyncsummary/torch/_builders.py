"""Background side: torch's own summary builders, and the jobs that run them on workers.

The summaries are built by the functions of ``torch.utils.tensorboard.summary``
(histogram binning, colour conversion, PNG and WAV encoding, PR curves, meshes, ...),
so what TensorBoard shows is what torch's writer would have written: the code that
runs is torch's own.

They are loaded without importing ``torch.utils.tensorboard`` itself: that package's
``__init__`` imports torch's ``SummaryWriter``, whose embedding helpers touch
``tensorboard.compat.tf``, which imports all of TensorFlow when it is installed (about
5 s and hundreds of MB here) for ``tf.io.gfile``, which the builders never use. So
:func:`load` executes torch's builder files (``summary``, ``_utils``, ``_convert_np``)
as modules of a private package whose ``__init__`` is empty. If torch has already been
imported the ordinary way, or if that ever fails (a torch that moved its files), the
ordinary import is used instead.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from .._event import SUMMARY
from ._snapshot import Snapshot

__all__ = ["Job", "convert_np", "default_bins", "load", "load_module", "summary", "utils"]

_PRIVATE_PACKAGE = __name__.rpartition(".")[0] + "._torch_tb"
_PUBLIC_PACKAGE = "torch.utils.tensorboard"
_lock = threading.RLock()  # reentrant: see _engine.add
_modules: dict[str, types.ModuleType] = {}


def _load(name: str) -> types.ModuleType:
    module = _modules.get(name)
    if module is not None:
        return module
    with _lock:
        module = _modules.get(name)
        if module is None:
            module = sys.modules.get(f"{_PUBLIC_PACKAGE}.{name}") or _load_private(name)
            _modules[name] = module
        return module


def _load_private(name: str) -> types.ModuleType:
    import torch

    folder = os.path.join(os.path.dirname(torch.__file__), "utils", "tensorboard")
    try:
        if _PRIVATE_PACKAGE not in sys.modules:
            package = types.ModuleType(_PRIVATE_PACKAGE, "torch.utils.tensorboard's builders, without its __init__")
            package.__path__ = [folder]
            package.__package__ = _PRIVATE_PACKAGE
            sys.modules[_PRIVATE_PACKAGE] = package
        return importlib.import_module(f"{_PRIVATE_PACKAGE}.{name}")
    except Exception:  # noqa: BLE001 - any failure: fall back to torch's own import
        return importlib.import_module(f"{_PUBLIC_PACKAGE}.{name}")


def summary() -> types.ModuleType:
    """``torch.utils.tensorboard.summary``."""
    return _load("summary")


def utils() -> types.ModuleType:
    """``torch.utils.tensorboard._utils`` (``convert_to_HWC``, ``make_grid``, ...)."""
    return _load("_utils")


def convert_np() -> types.ModuleType:
    """``torch.utils.tensorboard._convert_np`` (``make_np``)."""
    return _load("_convert_np")


def load_module(name: str) -> types.ModuleType:
    """Another module of ``torch.utils.tensorboard`` (``_pytorch_graph``, ``_onnx_graph``)."""
    return _load(name)


def load() -> None:
    """Load torch's builder modules now, on the caller, rather than on a worker mid-run."""
    summary()
    utils()
    convert_np()


_default_bins: list[float] | None = None


def default_bins() -> list[float]:
    """The bucket edges of ``bins='tensorflow'``, as torch's ``SummaryWriter`` makes them.

    (``tensorboard``'s ``generate_testdata.py`` rule: ±1e-12 growing by 1.1 up to 1e20.)
    """
    global _default_bins
    if _default_bins is None:
        positive = []
        edge = 1e-12
        while edge < 1e20:
            positive.append(edge)
            edge *= 1.1
        _default_bins = [-e for e in reversed(positive)] + [0] + positive
    return _default_bins


class Job:
    """One deferred build: ``build(*args)`` on a worker, snapshots resolved first.

    ``build`` returns a ``Summary`` proto or its bytes (the event's payload), or None
    for a job that only writes files (embeddings). Snapshots are released once it is done,
    whatever happens, so staging buffers go back to their pool.
    """

    __slots__ = ("_build", "_args")

    def __init__(self, build: Callable[..., Any], *args: Any) -> None:
        self._build = build
        self._args = args

    def run(self) -> list[tuple[int, bytes]]:
        try:
            args = [a.result() if isinstance(a, Snapshot) else a for a in self._args]
            built = self._build(*args)
        finally:
            for a in self._args:
                if isinstance(a, Snapshot):
                    a.release()
            self._args = ()
        if built is None:
            return []
        return [(SUMMARY, built if isinstance(built, bytes) else built.SerializeToString())]

    def discard(self) -> None:
        """Release the snapshots without building (the event was refused)."""
        for a in self._args:
            if isinstance(a, Snapshot):
                a.release()
        self._args = ()
