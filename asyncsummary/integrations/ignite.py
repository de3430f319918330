"""An ignite ``TensorboardLogger`` that logs through :class:`asyncsummary.SummaryWriter`.

``AsyncTensorboardLogger`` is ignite's own logger (the same ``attach``,
``attach_output_handler``, ``attach_opt_params_handler``, weight/grad handlers) whose
writer is asyncsummary's instead of tensorboardX's (which ignite prefers whenever it
is installed, so patching torch's class alone would not reach it; patch() replaces
both). Importing this module imports ``ignite``.

The writer takes tensorboardX's ``logdir=`` as well as torch's ``log_dir=``.
"""

from __future__ import annotations

from typing import Any

from ignite.handlers.tensorboard_logger import TensorboardLogger

from ..torch import SummaryWriter
from . import DEFAULT_FLUSH_WAITS

__all__ = ["AsyncTensorboardLogger"]


class AsyncTensorboardLogger(TensorboardLogger):
    """ignite's ``TensorboardLogger`` writing through asyncsummary.

    Args:
        *args: The writer's positional arguments (``log_dir`` first).
        logdir: tensorboardX's name of ``log_dir``.
        flush_waits: Passed to the writer (default False).
        **kwargs: Passed to :class:`asyncsummary.SummaryWriter`.
    """

    def __init__(
        self, *args: Any, logdir: Any = None, flush_waits: bool = DEFAULT_FLUSH_WAITS, **kwargs: Any
    ) -> None:
        if logdir is not None:
            if args or "log_dir" in kwargs:
                raise TypeError("pass the folder once: logdir= or log_dir=")
            kwargs["log_dir"] = logdir
        self.writer = SummaryWriter(*args, flush_waits=flush_waits, **kwargs)
