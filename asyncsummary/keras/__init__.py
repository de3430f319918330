"""Keras: ``asyncsummary.keras.TensorBoard``, a drop-in for ``keras.callbacks.TensorBoard``.

Same arguments, same runs, tags, steps and summary kinds on disk, written through
asyncsummary's writer: no batch waits for storage, and no TensorFlow op runs per
logged value. Works with every Keras 3 backend; TensorFlow is imported only where
Keras itself imports it (the TensorFlow backend). Importing this module imports
``keras`` (``import asyncsummary`` does not).
"""

from __future__ import annotations

from ._callback import TensorBoard

__all__ = ["TensorBoard"]
