"""A torch-style ``SummaryWriter`` whose heavy work never runs on the training thread.

``from asyncsummary import SummaryWriter`` (or ``asyncsummary.torch``) gives the API of
``torch.utils.tensorboard.SummaryWriter``; see :mod:`asyncsummary.torch._writer` for
what happens on the caller and what on the background side, and
:mod:`asyncsummary.torch._snapshot` for the CUDA stream contract. Importing this
package imports torch (not TensorFlow).
"""

from __future__ import annotations

from ._writer import DEFAULT_FLUSH_SECS, SummaryWriter

__all__ = ["DEFAULT_FLUSH_SECS", "SummaryWriter"]
