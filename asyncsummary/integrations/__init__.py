"""Framework adapters: one small module per framework, each importing it only when imported.

* :mod:`asyncsummary.integrations.lightning`: ``AsyncTensorBoardLogger`` (Lightning)
* :mod:`asyncsummary.integrations.huggingface`: ``AsyncTensorBoardCallback`` (transformers)
* :mod:`asyncsummary.integrations.accelerate`: ``AsyncTensorBoardTracker`` (accelerate)
* :mod:`asyncsummary.integrations.ignite`: ``AsyncTensorboardLogger`` (pytorch-ignite)

Each makes an :class:`asyncsummary.SummaryWriter` where the framework would make
torch's (or tensorboardX's), so the framework logs the same data, and its
per-step ``flush()`` does not wait for storage: they default to
``flush_waits=False`` (see :func:`asyncsummary.patch` for why). Importing this
package imports no framework.
"""

from __future__ import annotations

#: The default of every adapter: the frameworks flush after each logged step.
DEFAULT_FLUSH_WAITS = False

__all__ = ["DEFAULT_FLUSH_WAITS"]
