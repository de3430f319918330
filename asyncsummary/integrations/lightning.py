"""A Lightning logger whose writer is :class:`asyncsummary.SummaryWriter`.

``AsyncTensorBoardLogger`` is Lightning's own ``TensorBoardLogger`` (same folders,
versions, ``hparams.yaml``, hparams, graph, metrics) with one change: its
``experiment`` is asyncsummary's writer. Lightning calls ``logger.save()``, hence
``flush()``, after every ``log_metrics``; with the default ``flush_waits=False`` that
flush returns at once, and ``finalize()`` (end of ``fit``) still waits for the close.

Why a subclass and not a patch of Lightning's module: Lightning imports the
``SummaryWriter`` class inside the ``experiment`` property, so replacing a module
attribute of Lightning does nothing. (``asyncsummary.patch()``, which replaces
torch's class itself, works too.) Importing this module imports ``lightning``.
"""

from __future__ import annotations

from typing import Any, cast

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import TensorBoardLogger

from ..torch import SummaryWriter
from . import DEFAULT_FLUSH_WAITS

__all__ = ["AsyncTensorBoardLogger"]


class AsyncTensorBoardLogger(TensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` writing through asyncsummary.

    Args:
        *args: Lightning's ``TensorBoardLogger`` arguments (``save_dir``, ``name``,
            ``version``, ``log_graph``, ``default_hp_metric``, ``prefix``, ``sub_dir``).
        flush_waits: Passed to the writer (default False: Lightning's per-step
            ``save()`` does not wait for storage).
        **kwargs: Passed to :class:`asyncsummary.SummaryWriter`: torch's writer
            arguments (``flush_secs``, ...) and asyncsummary's options
            (``max_pending_bytes``, ``fsync``, ``storage_options``, ...).
    """

    def __init__(self, *args: Any, flush_waits: bool = DEFAULT_FLUSH_WAITS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flush_waits = flush_waits

    @property
    @rank_zero_experiment
    def experiment(self) -> SummaryWriter:
        """The run's :class:`asyncsummary.SummaryWriter` (made on first use)."""
        # Lightning types _experiment as torch's class; ours stands in for it (duck-typed).
        if self._experiment is not None:
            return cast(SummaryWriter, self._experiment)
        assert rank_zero_only.rank == 0, "tried to init log dirs in non global_rank=0"  # type: ignore[attr-defined]
        if self.root_dir:
            self._fs.makedirs(self.root_dir, exist_ok=True)
        writer = SummaryWriter(log_dir=self.log_dir, flush_waits=self._flush_waits, **self._kwargs)
        self._experiment = cast(Any, writer)
        return writer
