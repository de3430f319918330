"""Where a logdir lives: a local folder, or (see ``_remote``) a URL that fsspec knows."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from ._sinks import SinkFactory

__all__ = ["Location", "resolve_logdir"]


@dataclasses.dataclass(frozen=True)
class Location:
    logdir: str  #: as shown to the user and to readers
    sink_factory: SinkFactory | None  #: None: the local file sink
    join: Callable[[str, str], str]  #: joins the logdir and a file name


def resolve_logdir(logdir: Any, storage_options: dict[str, Any] | None) -> Location:
    """Check ``logdir`` and choose the storage behind it."""
    if isinstance(logdir, bytes) or not isinstance(logdir, (str, os.PathLike)):
        raise TypeError(f"logdir must be a str or os.PathLike, not {type(logdir).__name__}")
    path = os.fspath(logdir)
    if not path:
        raise ValueError("logdir must not be empty")
    if "\x00" in path:
        raise ValueError("logdir must not contain NUL characters")
    if storage_options is not None:
        raise ValueError("storage_options are only for remote (URL) logdirs")
    return Location(logdir=path, sink_factory=None, join=os.path.join)
