"""What a dead writer leaves in the spool, laid out as :mod:`asyncsummary._spool` lays it.

The spool tests plant such folders (a killed writer's, or an attacker's imitation of
one) and check what writers and ``upload-spool`` do with them.
"""

from __future__ import annotations

import os

from asyncsummary._event import (
    FILE_VERSION,
    FILE_VERSION_STRING,
    SUMMARY,
    encode_event,
    encode_scalar_summary,
)
from asyncsummary._records import frame_record
from asyncsummary._spool import logdir_key, user_folder_name

#: The event file a dead writer's lock names.
DEAD_EVENT_FILE = "events.out.tfevents.0000000001.host.4242.0"


def records(tag: str, steps, header: bool = False) -> bytes:
    """Framed records: a file-version header if asked, then scalar ``tag`` = step per step."""
    data = frame_record(encode_event(1.0, 0, FILE_VERSION, FILE_VERSION_STRING)) if header else b""
    return data + b"".join(
        frame_record(encode_event(2.0, s, SUMMARY, encode_scalar_summary(tag, s))) for s in steps
    )


def user_logdir_folder(root: str, url: str, recorded: str | None = None) -> str:
    """This user's folder of ``url`` under the spool root ``root``, made as a writer makes
    it; its ``logdir`` file holds ``recorded`` (default: the URL itself)."""
    user = os.path.join(root, user_folder_name())
    os.makedirs(user, mode=0o700, exist_ok=True)
    folder = os.path.join(user, logdir_key(url))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    with open(os.path.join(folder, "logdir"), "w") as f:
        f.write(url if recorded is None else recorded)
    return folder


def plant_dead_writer(
    parent: str,
    name: str = "w-4242-00000000deadbeef",
    segments: dict[str, bytes] | None = None,
    lock: str | None = DEAD_EVENT_FILE,
) -> str:
    """A dead writer's folder ``name`` in a logdir's folder: its ``segments`` (file name
    -> bytes; default one sealed segment, tag "planted") and a ``lock`` naming its event
    file (None: no lock). Returns the folder's path."""
    folder = os.path.join(parent, name)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if segments is None:
        segments = {"0000000000.seg": records("planted", [1], True)}
    for file_name, data in segments.items():
        with open(os.path.join(folder, file_name), "wb") as f:
            f.write(data)
    if lock is not None:
        with open(os.path.join(folder, "lock"), "w") as f:
            f.write(lock)
    return folder
