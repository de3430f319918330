"""A Hugging Face ``Trainer`` callback that logs through :class:`asyncsummary.SummaryWriter`.

``AsyncTensorBoardCallback`` is transformers' own ``TensorBoardCallback`` (same
folder, ``args``/``model_config`` texts, tags rewritten the same way) whose writers
are asyncsummary's. ``on_log`` calls ``flush()`` after every log; with the default
``flush_waits=False`` it returns at once, and ``on_train_end`` still waits for the
close. Use it *instead of* the stock callback::

    trainer = Trainer(..., args=TrainingArguments(..., report_to="none"),
                      callbacks=[AsyncTensorBoardCallback()])

Pitfalls this avoids, or refuses:

* ``report_to`` must not include ``"tensorboard"`` (or ``"all"``): the stock callback
  would log everything a second time, with torch's writer. ``on_train_begin`` raises
  ``ValueError`` if it does.
* The stock callback given only ``tb_writer=<our writer>`` is not enough: it closes
  that writer at the end of training, and the ``trainer.evaluate()`` after it makes a
  *torch* writer in ``<output_dir>/runs/<date>`` (another folder). This callback makes
  its post-training writers with asyncsummary too, in the same folder as training.

Importing this module imports ``transformers``.
"""

from __future__ import annotations

import os
from typing import Any

from transformers.integrations.integration_utils import TensorBoardCallback

from ..torch import SummaryWriter
from . import DEFAULT_FLUSH_WAITS

__all__ = ["AsyncTensorBoardCallback"]


class AsyncTensorBoardCallback(TensorBoardCallback):
    """transformers' ``TensorBoardCallback`` writing through asyncsummary.

    Args:
        tb_writer: An :class:`asyncsummary.SummaryWriter` to use (optional; one is made
            in ``TENSORBOARD_LOGGING_DIR`` or ``<output_dir>/runs/<date>_<host>``).
        logging_dir: The folder of the run. Default: ``tb_writer``'s folder, else as
            the stock callback (``TENSORBOARD_LOGGING_DIR``, else
            ``<output_dir>/runs/<date>_<host>``). Writers made after ``tb_writer`` was
            closed (post-train ``evaluate()``) go there too: one folder per run.
        flush_waits: Passed to the writers it makes (default False: ``on_log``'s
            flush does not wait for storage).
        **writer_options: Passed to :class:`asyncsummary.SummaryWriter`
            (``flush_secs``, ``max_pending_bytes``, ``storage_options``, ...).
    """

    def __init__(
        self,
        tb_writer: Any = None,
        *,
        logging_dir: str | os.PathLike[str] | None = None,
        flush_waits: bool = DEFAULT_FLUSH_WAITS,
        **writer_options: Any,
    ) -> None:
        # The stock __init__, less its import of torch.utils.tensorboard (which imports
        # all of TensorFlow when it is installed, for a class this callback never uses).
        self._flush_waits = flush_waits
        self._writer_options = writer_options
        self._SummaryWriter = self._make_writer
        self.tb_writer = tb_writer
        env_dir = os.getenv("TENSORBOARD_LOGGING_DIR")
        if logging_dir is not None:
            self.logging_dir: str | None = os.fspath(logging_dir)
        elif tb_writer is not None:  # writers made after it is closed: the same folder
            self.logging_dir = os.fspath(tb_writer.get_logdir())
        elif env_dir is not None:
            self.logging_dir = os.path.expanduser(env_dir)
        else:
            self.logging_dir = None  # on_train_begin: <output_dir>/runs/<date>_<host>

    def _make_writer(self, log_dir: str | None = None) -> SummaryWriter:
        return SummaryWriter(log_dir=log_dir, flush_waits=self._flush_waits, **self._writer_options)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        reporters = (
            args.report_to if isinstance(args.report_to, (list, tuple)) else [args.report_to]
        )
        if "tensorboard" in reporters or "all" in reporters:
            raise ValueError(
                "AsyncTensorBoardCallback replaces the stock TensorBoard callback: drop "
                "'tensorboard' from TrainingArguments(report_to=...) (e.g. report_to='none'), "
                "or every value is logged twice, once through torch's writer"
            )
        super().on_train_begin(args, state, control, **kwargs)
