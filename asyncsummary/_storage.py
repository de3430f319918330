"""Where a logdir lives: a local folder, or a URL that fsspec knows (see ``_remote``).

A plain path, and a ``file://`` URL, keep the local file sink: local files can be
appended to. Any other URL (``s3://``, ``gs://``, ``az://``, ``memory://``,
chained ``a::b://`` URLs) gets segment objects through :class:`RemoteSinkFactory`.
The URL's filesystem class is looked up here, on the caller's thread, so a missing
backend (``pip install asyncsummary[s3]``) or an unknown protocol is reported by the
writer's constructor rather than later on the background side. Messages about a
URL show it with its credentials masked (:func:`~asyncsummary._redact.redact_url`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from ._redact import redact_url
from ._sinks import SinkFactory

__all__ = ["Location", "is_url", "makedirs", "resolve_logdir", "write_file"]

_LOCAL_PROTOCOLS = ("file", "local")


@dataclasses.dataclass(frozen=True)
class Location:
    logdir: str  #: as given: what get_logdir() returns and the store needs
    sink_factory: SinkFactory | None  #: None: the local file sink
    join: Callable[[str, str], str]  #: joins the logdir and a file name
    display: str = ""  #: the logdir for messages and reprs: credentials masked

    def __post_init__(self) -> None:
        if not self.display:
            object.__setattr__(self, "display", redact_url(self.logdir))


def is_url(path: str) -> bool:
    """True for ``proto://...`` and chained ``a::b://...`` paths (not ``C:\\...``)."""
    return "://" in path or "::" in path


def _join_url(logdir: str, name: str) -> str:
    return f"{logdir}/{name}"


def _local(path: str) -> Location:
    """A local folder. Files go under its absolute path, fixed now: a relative logdir
    must not follow a later ``os.chdir`` (files are created on the background side)."""
    root = os.path.abspath(path)
    return Location(
        logdir=path, sink_factory=None, join=lambda _logdir, name: os.path.join(root, name)
    )


def resolve_logdir(logdir: Any, storage_options: dict[str, Any] | None) -> Location:
    """Check ``logdir`` and choose the storage behind it."""
    if isinstance(logdir, bytes) or not isinstance(logdir, (str, os.PathLike)):
        raise TypeError(f"logdir must be a str or os.PathLike, not {type(logdir).__name__}")
    path = os.fspath(logdir)
    if not path:
        raise ValueError("logdir must not be empty")
    if "\x00" in path:
        raise ValueError("logdir must not contain NUL characters")
    if storage_options is not None and not isinstance(storage_options, dict):
        raise TypeError(f"storage_options must be a dict, not {type(storage_options).__name__}")
    if is_url(path):
        import fsspec.core

        shown = redact_url(path)

        protocol = fsspec.core.split_protocol(path.split("::")[-1])[0]
        if protocol in _LOCAL_PROTOCOLS and "::" not in path:
            if storage_options is not None:
                raise ValueError("storage_options are only for remote (URL) logdirs")
            return _local(fsspec.core.strip_protocol(path))
        for part in path.split("::"):
            part_protocol = fsspec.core.split_protocol(part)[0]
            if part_protocol:
                try:
                    fsspec.get_filesystem_class(part_protocol)
                except ValueError as exc:
                    raise ValueError(f"logdir {shown!r}: unknown protocol ({exc})") from None
                except ImportError as exc:  # a known store whose package is missing
                    raise ImportError(
                        f"logdir {shown!r}: {exc} (or install the asyncsummary[s3], [gcs] "
                        "or [azure] extra)"
                    ) from exc
        from ._remote import RemoteSinkFactory

        url = path.rstrip("/")
        if url.endswith(":/") or url.endswith(":"):
            raise ValueError(f"logdir URL has no bucket or folder: {shown!r}")
        return Location(logdir=url, sink_factory=RemoteSinkFactory(storage_options), join=_join_url)
    if storage_options is not None:
        raise ValueError("storage_options are only for remote (URL) logdirs")
    return _local(path)


def makedirs(path: str, storage_options: dict[str, Any] | None) -> None:
    """Make folder ``path`` (a local path or a URL) and its parents, if missing.

    For the few side files beside the event files (projector configs and
    checkpoints): written whole, on a worker thread, never through the event sinks.
    """
    if is_url(path):
        import fsspec

        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        fs.makedirs(root, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


def write_file(path: str, data: bytes, storage_options: dict[str, Any] | None) -> None:
    """Write ``data`` as file ``path`` (a local path or a URL), replacing it."""
    if is_url(path):
        import fsspec

        with fsspec.open(path, "wb", **(storage_options or {})) as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
