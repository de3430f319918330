"""asyncsummary: TensorBoard summaries written without making a training step wait.

``import asyncsummary`` imports neither TensorFlow nor torch (nor tensorboardX);
``AsyncSummarySaverHook`` (TensorFlow) and ``SummaryWriter`` (torch-style) are loaded on
first access, and ``patch()`` imports torch when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._engine import Policy, WriterStats
from ._errors import (
    AsyncSummaryError,
    FlushTimeoutError,
    InvalidEventError,
    PendingLimitError,
    WriteError,
    WriterClosedError,
)
from ._loop import loop_implementation
from ._patch import Patch, patch
from ._registry import aflush_all, flush_all
from ._shutdown import install_shutdown_handlers
from ._sinks import FileSink, Sink, SinkFactory
from ._writer import AsyncSummaryWriter

if TYPE_CHECKING:  # pragma: no cover
    from ._hook import AsyncSummarySaverHook, SummaryWriterCache
    from .torch import SummaryWriter

__all__ = [
    "AsyncSummaryError",
    "AsyncSummarySaverHook",
    "AsyncSummaryWriter",
    "FileSink",
    "FlushTimeoutError",
    "InvalidEventError",
    "Patch",
    "PendingLimitError",
    "Policy",
    "Sink",
    "SinkFactory",
    "SummaryWriter",
    "SummaryWriterCache",
    "WriteError",
    "WriterClosedError",
    "WriterStats",
    "aflush_all",
    "flush_all",
    "install_shutdown_handlers",
    "loop_implementation",
    "patch",
]

__version__ = "0.1.0"

_LAZY = {
    "AsyncSummarySaverHook": "._hook",
    "SummaryWriterCache": "._hook",
    "SummaryWriter": ".torch",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncsummary' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
