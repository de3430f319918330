"""An accelerate tracker that logs through :class:`asyncsummary.SummaryWriter`.

``AsyncTensorBoardTracker`` is accelerate's own ``TensorBoardTracker`` (same folder
``<logging_dir>/<run_name>``, ``hparams.yml``, hparams, scalars, texts, images) whose
writer is asyncsummary's. Its ``log()`` calls ``flush()`` after every call; with the
default ``flush_waits=False`` that flush returns at once, and ``end_training()`` still
waits for the close. Pass it instead of ``"tensorboard"``::

    tracker = AsyncTensorBoardTracker("my_run", "logs")
    accelerator = Accelerator(log_with=tracker)
    accelerator.init_trackers("my_run", config={"lr": 0.1})

Its ``name`` stays ``"tensorboard"``, so ``accelerator.get_tracker("tensorboard")``
finds it. Importing this module imports ``accelerate``.
"""

from __future__ import annotations

import os
from typing import Any

from accelerate.tracking import TensorBoardTracker, on_main_process

from ..torch import SummaryWriter
from . import DEFAULT_FLUSH_WAITS

__all__ = ["AsyncTensorBoardTracker"]


class AsyncTensorBoardTracker(TensorBoardTracker):
    """accelerate's ``TensorBoardTracker`` writing through asyncsummary.

    Args:
        run_name: Name of the run (its folder under ``logging_dir``).
        logging_dir: Folder of the runs.
        flush_waits: Passed to the writer (default False: ``log()``'s flush does not
            wait for storage).
        **kwargs: Passed to :class:`asyncsummary.SummaryWriter` (torch's writer
            arguments and asyncsummary's options), as accelerate's ``init_kwargs``.
    """

    def __init__(
        self,
        run_name: str,
        logging_dir: str | os.PathLike[str],
        *,
        flush_waits: bool = DEFAULT_FLUSH_WAITS,
        **kwargs: Any,
    ) -> None:
        super().__init__(run_name, logging_dir, **kwargs)
        self._flush_waits = flush_waits

    @on_main_process
    def start(self) -> None:
        self.logging_dir = os.path.join(self.logging_dir_param, self.run_name)
        self.writer = SummaryWriter(
            self.logging_dir, flush_waits=self._flush_waits, **self.init_kwargs
        )
