"""``gs://`` logdirs against a GCS emulator (gcp-storage-emulator) on loopback.

gcsfs is asyncio-native, so this covers the awaited upload path of a second store;
objects are read back with the library's reader and, downloaded, with TensorBoard's.
"""

from __future__ import annotations

import os
import uuid

import pytest

from asyncsummary import AsyncSummaryWriter
from asyncsummary.remote import download, event_objects, read_events, read_records

from .readers import tb_run_events
from .remote_servers import GcsServer

BUCKET = "asyncsummary-test"

# gcsfs's experimental file system first asks GCS's gRPC control plane for the
# bucket's layout, which an emulator does not serve (it retries for a minute). Its
# switch is read when gcsfs is imported: this module is collected before any test
# imports gcsfs.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


@pytest.fixture(scope="module")
def gcs():
    import fsspec

    assert fsspec.get_filesystem_class("gs").__name__ == "GCSFileSystem"
    with GcsServer(BUCKET) as server:
        yield server


def test_gs_run_is_written_as_ordered_segments_and_read_back(gcs, tmp_path, monkeypatch):
    monkeypatch.setenv("ASYNCSUMMARY_SPOOL_DIR", str(tmp_path / "spool"))
    url = f"gs://{BUCKET}/run-{uuid.uuid4().hex[:12]}"
    options = gcs.storage_options()
    writer = AsyncSummaryWriter(url, flush_secs=3600, storage_options=options)
    expected = [(step, step * 0.5) for step in range(2000)]
    for step, value in expected:
        writer.add_scalar("x", value, step)
        if step % 200 == 199:
            writer.flush()
    writer.close()

    objects = event_objects(url, options)
    base = writer.stats().files[0]
    assert objects == [f"{base}.{i:010d}" for i in range(10)]  # one per flush, in order
    assert sum(len(read_records(obj, options)) for obj in objects) == 2001  # CRCs checked
    events = list(read_events(url, options))
    assert [(e.step, e.summary.value[0].simple_value) for e in events if e.HasField("summary")] == expected

    local = download(url, tmp_path / "copy", options)
    assert [os.path.basename(p) for p in local] == [o.rsplit("/", 1)[1] for o in objects]
    tb = tb_run_events(str(tmp_path / "copy"))
    assert [(e.step, e.summary.value[0].simple_value) for e in tb if e.HasField("summary")] == expected
    (user_folder,) = os.listdir(tmp_path / "spool")  # uid-<uid>: the spool of this user
    (logdir_folder,) = os.listdir(tmp_path / "spool" / user_folder)
    assert os.listdir(tmp_path / "spool" / user_folder / logdir_folder) == ["logdir"]
