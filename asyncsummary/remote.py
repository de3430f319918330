"""Remote logdirs: settings, reading a run back, and uploading a spool left behind.

A writer given a URL (``s3://``, ``gs://``, ``az://``, ``memory://``, ...) writes each
event file as numbered segment objects (see :mod:`asyncsummary._remote` for the
guarantees). This module is the public side of that:

* :class:`RemoteSinkFactory`: pass one as ``sink_factory`` to change the spool
  folder, the segment coalescing or the spool bound of a writer.
* :func:`event_objects`, :func:`read_records`, :func:`read_events`, :func:`download`:
  list and read a remote run's events in the order TensorBoard reads them.
* :func:`upload_spool`: upload what a killed writer left in the spool (the next
  writer on the same logdir does this by itself). Also a command::

      python -m asyncsummary.remote upload-spool [LOGDIR ...] [--spool-dir DIR]
                                                 [--storage-options JSON]
      python -m asyncsummary.remote ls LOGDIR
      python -m asyncsummary.remote download LOGDIR DEST_DIR

These helpers are synchronous (they run on the caller's thread); TensorBoard's own
protos are used, so TensorFlow is never imported.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ._redact import redact_url, scrub, secrets_of
from ._remote import (
    RemoteSinkFactory,
    default_spool_root,
    logdir_key,
    open_store,
    scan_records,
    segment_object_name,
)
from ._spool import UnsafeSpoolError, UserSpool, claim_orphans

__all__ = [
    "RemoteSinkFactory",
    "SpoolUploadError",
    "UnsafeSpoolError",
    "default_spool_root",
    "download",
    "event_objects",
    "main",
    "read_events",
    "read_records",
    "upload_spool",
]


def _fs(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec.core

    return fsspec.core.url_to_fs(url, **(storage_options or {}))  # type: ignore[no-any-return]


def event_objects(logdir: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """URLs of the event objects directly under ``logdir``, in TensorBoard's read order."""
    fs, path = _fs(logdir, storage_options)
    fs.invalidate_cache(path)  # a cached listing would hide new segments
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    base = logdir.rstrip("/")
    names = sorted(os.path.basename(p.rstrip("/")) for p in entries)
    return [f"{base}/{name}" for name in names if "tfevents" in name]


def read_records(url: str, storage_options: dict[str, Any] | None = None) -> list[bytes]:
    """Payloads of every record of one object; ``ValueError`` if a CRC or length is wrong."""
    fs, path = _fs(url, storage_options)
    data = fs.cat_file(path)
    payloads, end = scan_records(data)
    if end != len(data):
        raise ValueError(f"{url}: corrupt or torn record at byte {end} of {len(data)}")
    return payloads


def read_events(logdir: str, storage_options: dict[str, Any] | None = None) -> Iterator[Any]:
    """Every ``Event`` of a remote run, objects in name order (TensorBoard's protos)."""
    from tensorboard.compat.proto import event_pb2

    for url in event_objects(logdir, storage_options):
        for payload in read_records(url, storage_options):
            yield event_pb2.Event.FromString(payload)


def download(
    logdir: str, dest: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> list[str]:
    """Copy a remote run's event objects into the local folder ``dest``; their paths."""
    fs, _ = _fs(logdir, storage_options)
    os.makedirs(dest, exist_ok=True)
    local = []
    for url in event_objects(logdir, storage_options):
        target = os.path.join(os.fspath(dest), url.rsplit("/", 1)[1])
        with open(target, "wb") as f:
            f.write(fs.cat_file(fs._strip_protocol(url)))
        local.append(target)
    return local


class SpoolUploadError(OSError):
    """:func:`upload_spool` refused part of the spool, or could not upload part of it.

    Raised after everything else was uploaded. ``uploaded``: the URLs that did go up;
    ``refused``: why each refused folder or file was left in place, unread (it is not
    this user's alone, or not what a writer leaves); ``failed``: the segments whose
    upload still failed (they stay in the spool: run again). ``errno`` is ``EPERM``
    when something was refused, else ``EIO``.
    """

    def __init__(self, uploaded: list[str], refused: list[str], failed: list[str]) -> None:
        parts = []
        if refused:
            parts.append(
                f"refused {len(refused)} spool path(s), left in place and not read "
                "(only what this user's own writers left is uploaded): " + "; ".join(refused)
            )
        if failed:
            parts.append(
                f"{len(failed)} upload(s) failed, kept in the spool (run again): "
                + "; ".join(failed)
            )
        super().__init__(
            errno.EPERM if refused else errno.EIO,
            f"uploaded {len(uploaded)} segment(s), but " + "; and ".join(parts),
        )
        self.uploaded = uploaded
        self.refused = refused
        self.failed = failed


def upload_spool(
    logdirs: Sequence[str] | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    attempts: int = 3,
) -> list[str]:
    """Upload the segments that dead writers left in the spool; the URLs uploaded.

    Only what this user's own writers left is uploaded, and only to the URL each
    logdir's folder was made for:

    * Only this user's folder of the spool root is read (``uid-<uid>``), checked as
      writers check it: :class:`UnsafeSpoolError` at once if it is a symlink, is
      owned by another user or is writable by others.
    * Inside it, a folder or file that is not this user's alone (owner, mode, a
      symlink, extra hard links), a lock that names no event file, a sealed segment
      that is not whole CRC-valid records, or a ``logdir`` file that does not hash to
      its folder's name is *refused*: left in place, never read into the store.
    * A URL with credentials is recorded masked (the spool never stores a secret),
      so pass such a URL in ``logdirs``.

    ``logdirs``: only these logdirs' spools (default: every logdir in the spool).
    Folders of live writers (whose lock is held) are left alone. A segment that
    still fails after ``attempts`` tries stays in the spool. After everything else
    was tried, :class:`SpoolUploadError` lists what was refused and what failed.
    """
    root = os.fspath(spool_dir) if spool_dir is not None else default_spool_root()
    wanted = (
        None
        if logdirs is None
        else {logdir_key(url.rstrip("/")): url.rstrip("/") for url in logdirs}
    )
    spool = UserSpool.open(root, create=False)
    if spool is None:
        return []
    uploaded: list[str] = []
    refused: list[str] = []
    failed: list[str] = []
    try:
        for key in spool.logdir_keys():
            if wanted is not None and key not in wanted:
                continue
            try:
                folder_of_logdir, recorded = spool.open_logdir(key)
            except UnsafeSpoolError as exc:
                refused.append(str(exc.strerror))
                continue
            try:
                logdir = wanted[key] if wanted is not None else recorded
                if logdir is None:
                    refused.append(
                        f"{os.path.join(spool.path, key)}: its logdir file does not name the URL "
                        "this folder was made for (a URL with credentials is recorded masked: "
                        "pass the URL as LOGDIR)"
                    )
                    continue
                _upload_logdir(
                    folder_of_logdir, logdir, storage_options, attempts, uploaded, refused, failed
                )
            finally:
                folder_of_logdir.close()
    finally:
        spool.close()
    if refused or failed:
        raise SpoolUploadError(uploaded, refused, failed)
    return uploaded


def _upload_logdir(
    folder_of_logdir: Any,
    logdir: str,
    storage_options: dict[str, Any] | None,
    attempts: int,
    uploaded: list[str],
    refused: list[str],
    failed: list[str],
) -> None:
    shown, hidden = redact_url(logdir), secrets_of(logdir)
    store = None
    root_path = ""
    for folder, segments in claim_orphans(folder_of_logdir, refused.append):
        try:
            if store is None:
                store, root_path = open_store(logdir, dict(storage_options or {}), None)
            for segment in segments:
                name = segment_object_name(folder.event_file, segment.index)
                _put(store, f"{root_path}/{name}", folder.read(segment), attempts)
                folder.remove(segment)
                uploaded.append(f"{shown}/{name}")
        except Exception as exc:  # noqa: BLE001 - report it, try the other folders
            failed.append(scrub(f"{shown}/{folder.event_file}: {exc!r}", hidden))
        finally:
            folder.dispose()


def _put(store: Any, path: str, data: bytes, attempts: int) -> None:
    for attempt in range(attempts):
        try:
            store.put_blocking(path, data)
            return
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(min(2.0**attempt, 10.0))  # a command line tool: a plain backoff


# --------------------------------------------------------------------- command
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m asyncsummary.remote``: ``upload-spool``, ``ls``, ``download``."""
    parser = argparse.ArgumentParser(
        prog="python -m asyncsummary.remote", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload-spool", help="upload what killed writers left in the spool")
    up.add_argument("logdirs", nargs="*", help="only these logdir URLs (default: all in the spool)")
    up.add_argument("--spool-dir", help=f"spool root (default: {default_spool_root()})")
    ls = sub.add_parser("ls", help="list a remote run's event objects in read order")
    ls.add_argument("logdir")
    dl = sub.add_parser("download", help="copy a remote run's event objects to a local folder")
    dl.add_argument("logdir")
    dl.add_argument("dest")
    for command in (up, ls, dl):
        command.add_argument("--storage-options", default=None, help="JSON object passed to fsspec")
    args = parser.parse_args(argv)
    options = json.loads(args.storage_options) if args.storage_options else None
    if options is not None and not isinstance(options, dict):
        parser.error("--storage-options must be a JSON object")
    if args.command == "upload-spool":
        problems: list[str] = []
        try:
            urls = upload_spool(
                args.logdirs or None, storage_options=options, spool_dir=args.spool_dir
            )
        except SpoolUploadError as exc:
            urls = exc.uploaded
            problems = [f"refused: {r}" for r in exc.refused] + [f"failed: {f}" for f in exc.failed]
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for url in urls:
            print(url)
        print(f"uploaded {len(urls)} segment(s)", file=sys.stderr)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0
    elif args.command == "ls":
        for url in event_objects(args.logdir, options):
            print(url)
    else:
        for path in download(args.logdir, args.dest, options):
            print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
