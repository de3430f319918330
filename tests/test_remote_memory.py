"""Remote logdirs on fsspec's in-memory store: segments, coalescing, outages, recovery.

Fast unit tests of the remote sink. ``memory://`` is fsspec's sync in-memory
filesystem (so it runs on the loop's executor); ``flakymem://`` is the same store
with a switch that makes every upload fail, to play an outage without a server.
The S3 and GCS tests run the same paths against real servers on loopback.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
import uuid

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from asyncsummary import AsyncSummaryError, AsyncSummaryWriter, FlushTimeoutError
from asyncsummary._records import frame_record
from asyncsummary._remote import logdir_key, scan_records, segment_object_name
from asyncsummary._spool import user_folder_name
from asyncsummary._storage import resolve_logdir
from asyncsummary.remote import (
    RemoteSinkFactory,
    SpoolUploadError,
    download,
    event_objects,
    main,
    read_events,
    read_records,
    upload_spool,
)
from asyncsummary.testing import DelayedSink

from .readers import tb_run_events
from .spool_layout import plant_dead_writer, records, user_logdir_folder


class FlakyMemoryFileSystem(MemoryFileSystem):
    """The in-memory store, but uploads fail while ``down`` is set (an outage)."""

    protocol = "flakymem"
    store: dict = {}  # its own objects, not memory://'s
    pseudo_dirs = [""]
    down = threading.Event()
    puts = 0

    def pipe_file(self, path, value, *args, **kwargs):
        if FlakyMemoryFileSystem.down.is_set():
            raise ConnectionRefusedError(111, "store is down")
        FlakyMemoryFileSystem.puts += 1
        return super().pipe_file(path, value, *args, **kwargs)


fsspec.register_implementation("flakymem", FlakyMemoryFileSystem, clobber=True)


@pytest.fixture
def url():
    return f"memory://runs/{uuid.uuid4().hex}"


@pytest.fixture
def flaky_url():
    FlakyMemoryFileSystem.down.clear()
    yield f"flakymem://runs/{uuid.uuid4().hex}"
    FlakyMemoryFileSystem.down.clear()


@pytest.fixture
def spool(tmp_path):
    return str(tmp_path / "spool")


def _wait_until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)  # polling with a deadline


def _steps(logdir, tag="x"):
    return [e.step for e in read_events(logdir) for v in e.summary.value if v.tag == tag]


def _spool_files(spool, ext):
    return [n for _, _, names in os.walk(spool) for n in names if n.endswith(ext)]


# --------------------------------------------------------------- choosing storage
def test_urls_choose_the_remote_sink_and_paths_the_file_sink(tmp_path):
    remote = resolve_logdir("memory://bucket/run/", None)
    assert remote.logdir == "memory://bucket/run"
    assert isinstance(remote.sink_factory, RemoteSinkFactory)
    assert remote.join(remote.logdir, "f") == "memory://bucket/run/f"

    local = resolve_logdir(f"file://{tmp_path}/run", None)
    assert local.logdir == f"{tmp_path}/run" and local.sink_factory is None
    assert resolve_logdir(str(tmp_path), None).sink_factory is None

    with pytest.raises(ValueError, match="protocol"):
        resolve_logdir("nosuchstore://bucket/run", None)
    with pytest.raises(ValueError, match="storage_options"):
        resolve_logdir(str(tmp_path), {"anon": True})
    with pytest.raises(TypeError, match="storage_options"):
        resolve_logdir("memory://run", ["anon"])
    with pytest.raises(ValueError, match="no bucket"):
        resolve_logdir("memory://", None)


def test_file_url_writes_an_ordinary_event_file(tmp_path):
    with AsyncSummaryWriter(f"file://{tmp_path}/run") as writer:
        writer.add_scalar("x", 1.0, 1)
    assert writer.get_logdir() == f"{tmp_path}/run"
    assert [e.step for e in tb_run_events(f"{tmp_path}/run") if e.HasField("summary")] == [1]


def test_writer_accepts_storage_options_for_a_url(url, spool, monkeypatch):
    monkeypatch.setenv("ASYNCSUMMARY_SPOOL_DIR", spool)
    with AsyncSummaryWriter(url, storage_options={}) as writer:
        writer.add_scalar("x", 1.0, 7)
    assert writer.get_logdir() == url
    assert _steps(url) == [7]
    assert os.listdir(os.path.join(spool, user_folder_name(), logdir_key(url))) == ["logdir"]  # emptied


# -------------------------------------------------------------------- segments
def test_many_flushes_make_ordered_segments_of_whole_records(url, spool, tmp_path):
    writer = AsyncSummaryWriter(url, flush_secs=3600, sink_factory=RemoteSinkFactory(spool_dir=spool))
    for step in range(3000):
        writer.add_scalar("x", step * 0.5, step)
        if step % 100 == 99:
            writer.flush()
    writer.close()

    objects = event_objects(url)
    assert len(objects) == 30  # one per flush with new data, none for close
    base = writer.stats().files[0]
    assert objects == [f"{base}.{i:010d}" for i in range(30)]  # names sort in write order
    total = 0
    for i, obj in enumerate(objects):
        payloads = read_records(obj)  # raises on a bad CRC or a torn record
        total += len(payloads)
        if i:  # segment i holds exactly the steps of flush i
            assert len(payloads) == 100
    assert total == 3001  # and the file header
    events = list(read_events(url))
    assert events[0].file_version == "brain.Event:2"
    assert [(e.step, e.summary.value[0].simple_value) for e in events[1:]] == [
        (step, step * 0.5) for step in range(3000)
    ]
    # TensorBoard's own loader reads the downloaded objects the same way.
    local = download(url, tmp_path / "copy")
    assert [os.path.basename(p) for p in local] == [o.rsplit("/", 1)[1] for o in objects]
    tb = tb_run_events(str(tmp_path / "copy"))
    assert [e.step for e in tb if e.HasField("summary")] == list(range(3000))


def test_timer_flushes_coalesce_into_few_segments(url, spool):
    factory = RemoteSinkFactory(spool_dir=spool, min_segment_secs=3600)
    writer = AsyncSummaryWriter(url, flush_secs=0.01, sink_factory=factory)
    for batch in range(5):
        flushes = writer.stats().flushes
        for step in range(batch * 10, batch * 10 + 10):
            writer.add_scalar("x", step, step)
        done = (batch + 1) * 10
        _wait_until(lambda f=flushes, d=done: writer.stats().flushes > f and writer.stats().written >= d)
    assert event_objects(url) == []  # five timer flushes, no segment yet
    assert len(_spool_files(spool, ".part")) == 1
    writer.flush()  # an explicit flush always makes the segment
    assert len(event_objects(url)) == 1
    assert _steps(url) == list(range(50))
    writer.close()


def test_timer_flushes_cut_segments_once_the_interval_passed(url, spool):
    factory = RemoteSinkFactory(spool_dir=spool, min_segment_secs=0)
    writer = AsyncSummaryWriter(url, flush_secs=0.01, sink_factory=factory)
    for step in range(3):
        writer.add_scalar("x", step, step)
        _wait_until(lambda step=step: len(event_objects(url)) == step + 1)  # no flush() called
    assert _steps(url) == [0, 1, 2]
    writer.close()


def test_a_segment_is_cut_when_it_reaches_min_segment_bytes(url, spool):
    factory = RemoteSinkFactory(spool_dir=spool, min_segment_secs=3600, min_segment_bytes=2000)
    writer = AsyncSummaryWriter(url, flush_secs=3600, batch_bytes=1000, sink_factory=factory)
    for step in range(400):
        writer.add_scalar("x", step, step)
        if step % 25 == 24:  # let the loop write in small batches
            _wait_until(lambda: writer.stats().pending_events == 0)
    _wait_until(lambda: len(event_objects(url)) >= 2)  # neither flush() nor timer
    for obj in event_objects(url):
        assert sum(len(p) + 16 for p in read_records(obj)) >= 2000
    writer.close()
    assert _steps(url) == list(range(400))


def test_wrapped_remote_sinks_keep_working(url, spool):
    factory = RemoteSinkFactory(spool_dir=spool)
    writer = AsyncSummaryWriter(url, flush_secs=3600, sink_factory=lambda p: DelayedSink(factory(p), 0.001))
    for step in range(20):
        writer.add_scalar("x", step, step)
        if step % 5 == 4:
            writer.flush()
    writer.close()
    assert _steps(url) == list(range(20))
    assert len(event_objects(url)) == 4


def test_scan_records_stops_at_a_torn_or_corrupt_record():
    records = [frame_record(b"a" * n) for n in (0, 1, 50)]
    data = b"".join(records)
    assert scan_records(data) == ([b"", b"a", b"a" * 50], len(data))
    assert scan_records(data[:-3])[1] == len(records[0]) + len(records[1])
    corrupt = bytearray(data)
    corrupt[-10] ^= 1
    assert scan_records(bytes(corrupt))[1] == len(records[0]) + len(records[1])


# ----------------------------------------------------------------------- outage
def test_outage_spools_to_disk_flush_times_out_then_all_arrives_once(flaky_url, spool):
    factory = RemoteSinkFactory(spool_dir=spool, max_backoff=0.05)
    # policy="raise": had the writer kept the outage's events in memory, an add would
    # raise PendingLimitError well before the end (64 KiB holds a few hundred).
    writer = AsyncSummaryWriter(flaky_url, flush_secs=0.02, batch_bytes=4096, max_pending_bytes=64 << 10,
                                policy="raise", sink_factory=factory)
    for step in range(100):
        writer.add_scalar("x", step, step)
    writer.flush()
    FlakyMemoryFileSystem.down.set()
    for step in range(100, 5100):
        writer.add_scalar("x", step, step)
        if step % 50 == 0:
            _wait_until(lambda: writer.stats().pending_events == 0)  # the drain still runs
    _wait_until(lambda: writer.stats().pending_events == 0)
    with pytest.raises(FlushTimeoutError) as info:
        writer.flush(timeout=0.2)
    assert isinstance(info.value, AsyncSummaryError)
    assert "ConnectionRefusedError" in str(info.value)  # says why
    assert _spool_files(spool, ".seg")  # sealed, kept until confirmed
    assert _steps(flaky_url) == list(range(100))  # nothing new reached the store
    writer.add_scalar("x", 5100, 5100)  # the writer still takes events

    FlakyMemoryFileSystem.down.clear()
    writer.flush(timeout=30)
    assert _steps(flaky_url) == list(range(5101))  # every event exactly once, in order
    assert not _spool_files(spool, ".seg") and not _spool_files(spool, ".part")
    writer.close()
    assert writer.stats().dropped == writer.stats().lost == 0


def test_a_close_given_up_during_an_outage_still_uploads_and_leaves_no_waiter(flaky_url, spool):
    """close() gives up at its timeout, the sink does not: once the store is back the
    spooled events go up, the drain ends, and no flush of the writer is left waiting
    on the loop (a pending task that asyncio would report as destroyed)."""
    from asyncsummary._loop import get_loop

    FlakyMemoryFileSystem.down.set()
    factory = RemoteSinkFactory(spool_dir=spool, max_backoff=0.05)
    writer = AsyncSummaryWriter(flaky_url, flush_secs=0.05, sink_factory=factory)
    for step in range(20):
        writer.add_scalar("x", step, step)
    with pytest.raises(FlushTimeoutError):
        writer.flush(timeout=0.5)
    with pytest.raises(FlushTimeoutError):
        writer.close(timeout=0.5)
    FlakyMemoryFileSystem.down.clear()
    writer._engine.drained.result(timeout=30)
    assert _steps(flaky_url) == list(range(20))

    async def waiting_flushes():
        return [t for t in asyncio.all_tasks() if "_flush_to" in repr(t.get_coro())]

    assert asyncio.run_coroutine_threadsafe(waiting_flushes(), get_loop()).result(10) == []


def _spooled_bytes(spool):
    return sum(os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(spool)
               for n in names if n.endswith((".seg", ".part")))


def test_a_full_spool_hands_the_outage_to_the_memory_bound_and_policy(flaky_url, spool):
    limit = 16 << 10
    factory = RemoteSinkFactory(spool_dir=spool, max_spool_bytes=limit, max_backoff=0.05)
    writer = AsyncSummaryWriter(flaky_url, flush_secs=0.02, batch_bytes=2048, max_pending_bytes=16 << 10,
                                policy="drop_newest", sink_factory=factory)
    FlakyMemoryFileSystem.down.set()
    step = 0
    while writer.stats().dropped == 0:  # the spool fills first, then memory
        for _ in range(50):
            writer.add_scalar("x", step, step)
            step += 1
        _wait_until(lambda: writer.stats().pending_events == 0 or _spooled_bytes(spool) > limit - 4096)
        assert step < 50_000
    assert limit - 4096 < _spooled_bytes(spool) <= limit  # the spool bound held
    assert writer.stats().peak_pending_bytes <= 16 << 10  # and so did the memory bound
    FlakyMemoryFileSystem.down.clear()
    writer.close(timeout=30)
    stats = writer.stats()
    steps = _steps(flaky_url)
    assert len(steps) == stats.queued == stats.written
    assert stats.queued + stats.dropped == step
    assert steps == sorted(set(steps))  # in order, none twice


def test_a_timer_flush_never_waits_for_the_store(flaky_url, spool):
    factory = RemoteSinkFactory(spool_dir=spool, min_segment_secs=0, max_backoff=0.05)
    writer = AsyncSummaryWriter(flaky_url, flush_secs=0.01, sink_factory=factory)
    FlakyMemoryFileSystem.down.set()
    for step in range(5):
        flushes = writer.stats().flushes
        writer.add_scalar("x", step, step)
        _wait_until(lambda flushes=flushes: writer.stats().flushes > flushes + 1)
    assert len(_spool_files(spool, ".seg")) >= 2  # segments cut and kept, timer kept going
    FlakyMemoryFileSystem.down.clear()
    writer.close(timeout=30)
    assert _steps(flaky_url) == list(range(5))


# --------------------------------------------------------------------- recovery
def _dead_writer_spool(spool, logdir, event_file, steps_sealed, steps_part):
    """What a writer killed mid-outage leaves: a sealed segment and a torn open part,
    in its own folder of the user's spool (layout: asyncsummary._spool)."""
    torn = records("x", [999])[:-7]  # killed inside a write
    return plant_dead_writer(
        user_logdir_folder(spool, logdir),
        "w-4242-0123456789abcdef",
        {
            "0000000000.seg": records("x", steps_sealed, header=True),
            "0000000001.part": records("x", steps_part) + torn,
        },
        lock=event_file,  # the lock names its event file
    )


def test_next_writer_uploads_a_dead_writers_spool_first(url, spool):
    dead = "events.out.tfevents.0000000001.host.4242.0"
    folder = _dead_writer_spool(spool, url, dead, range(10), range(10, 15))
    with AsyncSummaryWriter(url, flush_secs=3600, sink_factory=RemoteSinkFactory(spool_dir=spool)) as writer:
        writer.add_scalar("x", 100, 100)
        writer.flush()  # waits for the recovered segments too
        assert event_objects(url)[:2] == [f"{url}/{segment_object_name(dead, i)}" for i in (0, 1)]
    assert _steps(url) == [*range(15), 100]  # the torn record is cut off
    assert not os.path.exists(folder)


def test_a_live_writers_spool_is_left_alone(url, spool):
    factory = RemoteSinkFactory(spool_dir=spool, min_segment_secs=3600)
    first = AsyncSummaryWriter(url, flush_secs=0.01, sink_factory=factory)
    first.add_scalar("x", 1, 1)
    _wait_until(lambda: _spool_files(spool, ".part"))
    second = AsyncSummaryWriter(url, flush_secs=3600, sink_factory=factory)
    second.add_scalar("x", 2, 2)
    second.flush()
    assert _steps(url) == [2]  # the first writer's open segment was not taken
    assert upload_spool([url], spool_dir=spool) == []
    first.close()
    second.close()
    assert sorted(_steps(url)) == [1, 2]


def test_upload_spool_command(url, spool, capsys):
    dead = "events.out.tfevents.0000000001.host.4242.0"
    folder = _dead_writer_spool(spool, url, dead, range(3), range(3, 5))
    assert main(["upload-spool", url, "--spool-dir", spool]) == 0
    out = capsys.readouterr().out.split()
    assert out == [f"{url}/{segment_object_name(dead, i)}" for i in (0, 1)]
    assert _steps(url) == list(range(5))
    assert not os.path.exists(folder)
    assert main(["ls", url]) == 0
    assert capsys.readouterr().out.split() == out


def test_upload_spool_reports_what_it_could_not_upload(flaky_url, spool):
    dead = "events.out.tfevents.0000000001.host.4242.0"
    folder = _dead_writer_spool(spool, flaky_url, dead, range(3), range(3, 5))
    FlakyMemoryFileSystem.down.set()
    with pytest.raises(SpoolUploadError, match="kept in the spool") as info:
        upload_spool(spool_dir=spool, attempts=1)
    assert info.value.errno == errno.EIO and info.value.refused == []
    assert len(info.value.failed) == 1 and dead in info.value.failed[0]
    assert sorted(os.listdir(folder)) == ["0000000000.seg", "0000000001.seg", "lock"]  # kept, recoverable
    FlakyMemoryFileSystem.down.clear()
    assert len(upload_spool(spool_dir=spool)) == 2
    assert _steps(flaky_url) == list(range(5))


def test_remote_options_are_checked():
    with pytest.raises(ValueError, match="min_segment_bytes"):
        RemoteSinkFactory(min_segment_bytes=0)
    with pytest.raises(ValueError, match="max_spool_bytes"):
        RemoteSinkFactory(max_spool_bytes=-1)
    with pytest.raises(TypeError, match="storage_options"):
        RemoteSinkFactory("anon")


# ------------------------------------------------------------------- isolation
class GatedMemoryFileSystem(MemoryFileSystem):
    """The in-memory store, but an upload hangs while ``gate`` is clear (a hung server)."""

    protocol = "gatedmem"
    store: dict = {}
    pseudo_dirs = [""]
    gate = threading.Event()
    hanging = threading.Semaphore(0)  # released once per upload that started to hang

    def pipe_file(self, path, value, *args, **kwargs):
        if not GatedMemoryFileSystem.gate.is_set():
            GatedMemoryFileSystem.hanging.release()
            GatedMemoryFileSystem.gate.wait(60)
        return super().pipe_file(path, value, *args, **kwargs)


fsspec.register_implementation("gatedmem", GatedMemoryFileSystem, clobber=True)


def test_writers_on_a_hung_store_never_stall_another_remote_writer(url, spool):
    """Each remote sink has threads of its own: four writers whose uploads hang (as
    many as the shared pool once had threads) leave a fifth writer free."""
    GatedMemoryFileSystem.gate.clear()
    factory = RemoteSinkFactory(spool_dir=spool, max_backoff=0.05)
    hung_urls = [f"gatedmem://runs/{uuid.uuid4().hex}" for _ in range(4)]
    hung = [AsyncSummaryWriter(u, flush_secs=3600, sink_factory=factory) for u in hung_urls]
    try:
        for writer in hung:
            writer.add_scalar("x", 0, 0)
            with pytest.raises(FlushTimeoutError):
                writer.flush(timeout=0.3)
        for _ in hung:
            assert GatedMemoryFileSystem.hanging.acquire(timeout=15)  # each upload hangs
        healthy = AsyncSummaryWriter(url, flush_secs=3600, sink_factory=factory)
        for step in range(200):
            healthy.add_scalar("x", step, step)
            if step % 50 == 49:
                healthy.flush(timeout=15)
        healthy.close(timeout=15)
        assert _steps(url) == list(range(200))
        for writer in hung:  # they still take events (queued while the upload hangs)
            writer.add_scalar("x", 1, 1)
    finally:
        GatedMemoryFileSystem.gate.set()
    for writer, hung_url in zip(hung, hung_urls, strict=True):
        writer.close(timeout=30)
        assert _steps(hung_url) == [0, 1]
