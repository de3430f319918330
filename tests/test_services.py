"""Async trainers and services: nothing lost on shutdown, and a loop that never waits.

* The aiohttp service example, run as a real process on loopback: every request it
  served is in its event files after SIGTERM, through the graceful shutdown
  (``await writer.aclose()`` in cleanup) and also when that shutdown is cut short
  (the flush that ``install_shutdown_handlers`` does the moment SIGTERM arrives).
* ``install_shutdown_handlers`` in asyncio apps: flush then the signal's usual action,
  chained onto a loop's own ``add_signal_handler``; bounded on stalled storage.
* ``flush_all``/``aflush_all`` reach every open writer and report errors.
* ``aflush``/``aflush_all`` awaited on a running loop leave that loop running while
  the storage is stalled (a ticker keeps ticking; storage gated by an Event).
* The asyncio trainer example, end to end.

Every wait is bounded; every process started here is killed in ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from asyncsummary import (
    AsyncSummaryWriter,
    FileSink,
    WriteError,
    aflush_all,
    flush_all,
    install_shutdown_handlers,
)
from asyncsummary.testing import FailingSink, GatedSink, WrappedSink

from .readers import event_files, scalars

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "examples" / "aiohttp_service.py"
TRAINER = ROOT / "examples" / "asyncio_trainer.py"
DEADLINE = 30.0  # seconds any single wait in this file may take


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def by_tag(logdir: str) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of every scalar in a run, read with TensorBoard's loader."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for step, tag, value in scalars(logdir):
        out[tag][step] = value
    return out


def wait_until(predicate, what: str, deadline: float = DEADLINE):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` (files, servers) until it returns a truthy value, bounded."""
    end = time.monotonic() + deadline
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:g} s waiting for {what}")
        threading.Event().wait(0.05)  # polling interval of a bounded wait, not a sync


# --------------------------------------------------------------------------- service
class ServiceProcess:
    """The aiohttp example as a child process; its port is read from its stdout."""

    def __init__(self, logdir: str, flush_secs: float) -> None:
        self.logdir = logdir
        self.stderr_path = Path(logdir).parent / "service.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SERVICE),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--logdir",
                logdir,
                "--flush-secs",
                str(flush_secs),
            ],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env(),
            cwd=ROOT,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.port = self._read_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def _read_port(self) -> int:
        end = time.monotonic() + DEADLINE
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"service printed no port: {self.stderr()}") from None
            match = re.search(rb"port=(\d+)", line)
            if match:
                return int(match.group(1))
            if not line:
                raise AssertionError(f"service exited early: {self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, int]:
        """GET ``path``; returns (HTTP status, the request's step from X-Request-Step)."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=DEADLINE) as response:
                response.read()
                return response.status, int(response.headers["X-Request-Step"])
        except urllib.error.HTTPError as exc:
            return exc.code, int(exc.headers["X-Request-Step"])

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(DEADLINE)
        finally:
            self._stderr.close()
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@contextmanager
def service(logdir: str, flush_secs: float = 3600.0) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(logdir, flush_secs)
    try:
        yield proc
    finally:
        proc.stop()


def test_service_has_every_request_in_its_event_files_after_sigterm(logdir):
    # flush_secs=3600: no timer flush can happen during the test, so whatever is on
    # disk afterwards was written by the shutdown path.
    with service(logdir) as svc:
        paths = ["/hello", "/work?ms=1", "/missing"] * 10
        results = [svc.get(path) for path in paths]
        statuses = [status for status, _ in results]
        steps = [step for _, step in results]
        assert sorted(steps) == list(range(1, len(paths) + 1))
        assert statuses.count(404) == 10 and statuses.count(200) == 20
        assert scalars(logdir) == []  # all still queued in the service

        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(DEADLINE) == 0, svc.stderr()
        assert "writer closed" in svc.stderr()

    tags = by_tag(logdir)
    assert set(tags) == {"http/latency_ms", "http/requests", "http/errors"}
    for tag in tags:
        assert sorted(tags[tag]) == sorted(steps), tag
    assert all(latency >= 0 for latency in tags["http/latency_ms"].values())
    assert tags["http/requests"] == {step: float(step) for step in steps}
    assert tags["http/errors"][len(paths)] == 10.0
    failed = {step for status, step in results if status == 404}
    assert all(tags["http/errors"][s] == tags["http/errors"].get(s - 1, 0.0) + 1 for s in failed)


def test_service_metrics_are_flushed_when_sigterm_arrives_before_graceful_shutdown(logdir):
    """A request that never ends holds aiohttp's graceful shutdown (and the writer's
    aclose) back; the SIGTERM-time flush has already put every served request on disk,
    so a scheduler's SIGKILL after its grace period loses nothing."""
    with service(logdir) as svc:
        steps = {svc.get("/hello")[1] for _ in range(10)}
        stuck = threading.Thread(
            target=lambda: _ignore_errors(svc.get, "/work?ms=600000"), daemon=True
        )
        stuck.start()

        def long_request_in_flight() -> bool:
            # The middleware numbers requests on arrival: a gap is the stuck request's.
            steps.add(svc.get("/hello")[1])
            return max(steps) > len(steps)

        wait_until(long_request_in_flight, "the long request to reach the service")
        assert scalars(logdir) == []

        svc.proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: set(by_tag(logdir).get("http/requests", {})) == steps,
            "the SIGTERM-time flush",
        )
        assert svc.proc.poll() is None  # still in graceful shutdown: aclose has not run
        svc.proc.kill()  # the scheduler's grace period ends
        svc.proc.wait(DEADLINE)

    tags = by_tag(logdir)
    for tag in ("http/latency_ms", "http/requests", "http/errors"):
        assert set(tags[tag]) == steps, tag


def _ignore_errors(func, *args):  # type: ignore[no-untyped-def]
    try:
        func(*args)
    except Exception:  # noqa: BLE001 - the connection dies with the killed service
        pass


# --------------------------------------------------- install_shutdown_handlers, asyncio
ASYNCIO_APP = r"""
import asyncio, signal, sys, threading
from asyncsummary import AsyncSummaryWriter, FileSink, install_shutdown_handlers
from asyncsummary.testing import GatedSink

logdir, mode, loop_kind, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

async def main():
    sink_factory = None
    if mode == "stalled":  # storage that never answers
        gate = threading.Event()
        sink_factory = lambda path: GatedSink(FileSink(path), gate)
    writer = AsyncSummaryWriter(logdir, flush_secs=3600, sink_factory=sink_factory)
    install_shutdown_handlers(timeout=0.5 if mode == "stalled" else 10.0)
    stop = asyncio.Event()
    if mode == "chained":
        # What aiohttp's run_app does: a loop handler, which replaces the handler
        # installed above; installing again (in startup) puts it on top, chained.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        install_shutdown_handlers()
    for i in range(count):
        writer.add_scalar("app/value", i * 0.25, i)
    print("ready", flush=True)
    await stop.wait()  # "plain"/"stalled": SIGTERM ends the process before this returns
    print(f"graceful written={writer.stats().written}", flush=True)
    await writer.aclose()

if loop_kind == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def run_app_until_sigterm(
    logdir: str, mode: str, loop_kind: str, count: int
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", ASYNCIO_APP, logdir, mode, loop_kind, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # bounded by the kill in finally + pytest-timeout
        assert ready.strip() == "ready", proc.communicate(timeout=DEADLINE)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=DEADLINE)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=DEADLINE)


def test_sigterm_in_an_asyncio_app_flushes_then_dies_by_the_signal(logdir):
    done = run_app_until_sigterm(logdir, "plain", "asyncio", 50)
    assert done.returncode == -signal.SIGTERM, done.stderr  # the usual exit status
    assert scalars(logdir) == [(i, "app/value", i * 0.25) for i in range(50)]


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_sigterm_flushes_before_the_loops_own_graceful_handler_runs(logdir, loop_kind):
    done = run_app_until_sigterm(logdir, "chained", loop_kind, 50)
    assert done.returncode == 0, done.stderr
    # Everything was written by the time the loop's own handler ran.
    assert "graceful written=50" in done.stdout
    assert scalars(logdir) == [(i, "app/value", i * 0.25) for i in range(50)]


def test_sigterm_on_stalled_storage_still_exits_within_the_timeout(logdir):
    done = run_app_until_sigterm(logdir, "stalled", "asyncio", 5)
    assert done.returncode == -signal.SIGTERM
    assert "asyncsummary: flush on SIGTERM" in done.stderr


def test_install_shutdown_handlers_needs_the_main_thread():
    errors: list[BaseException] = []

    def install() -> None:
        try:
            install_shutdown_handlers()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join(DEADLINE)
    assert len(errors) == 1 and "main thread" in str(errors[0])


# ----------------------------------------------------------------- flush_all, aflush_all
def test_flush_all_flushes_every_open_writer(tmp_path):
    dirs = [str(tmp_path / name) for name in ("a", "b")]
    writers = [AsyncSummaryWriter(d, flush_secs=3600) for d in dirs]
    try:
        for n, writer in enumerate(writers):
            for step in range(20):
                writer.add_scalar("x", step + n, step)
        flush_all(timeout=DEADLINE)
        for n, d in enumerate(dirs):
            assert scalars(d) == [(step, "x", float(step + n)) for step in range(20)]
    finally:
        for writer in writers:
            writer.close()


def test_flush_all_flushes_the_others_and_raises_when_one_writer_fails(tmp_path):
    failing = threading.Event()
    failing.set()
    bad = AsyncSummaryWriter(
        str(tmp_path / "bad"),
        flush_secs=3600,
        sink_factory=lambda p: FailingSink(FileSink(p), failing),
    )
    good = AsyncSummaryWriter(str(tmp_path / "good"), flush_secs=3600)
    try:
        bad.add_scalar("x", 1.0, 1)
        good.add_scalar("x", 2.0, 1)
        with pytest.raises(WriteError) as info:
            flush_all(timeout=DEADLINE)
        assert isinstance(info.value.__cause__, OSError)
        assert scalars(str(tmp_path / "good")) == [(1, "x", 2.0)]
        failing.clear()  # the storage recovers: nothing was lost
        bad.close()
        assert scalars(str(tmp_path / "bad")) == [(1, "x", 1.0)]
    finally:
        failing.clear()
        bad.close()
        good.close()


class Ticker:
    """A task that counts loop iterations; ``reached(n)`` is set once it ticked n times."""

    def __init__(self) -> None:
        self.ticks = 0
        self._targets: list[tuple[int, asyncio.Event]] = []

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            self.ticks += 1
            for target, event in self._targets:
                if self.ticks >= target:
                    event.set()

    def reached(self, ticks: int) -> asyncio.Event:
        event = asyncio.Event()
        self._targets.append((self.ticks + ticks, event))
        return event


async def _wait_for_thread_event(event: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, event.wait, DEADLINE), "storage never reached"


@pytest.fixture
def stalled_writer(logdir):
    """A writer whose storage blocks until ``gate`` is set, plus a watchdog that opens
    the gate after DEADLINE so a loop frozen by a bug cannot hang the test forever."""
    gate = threading.Event()
    sinks: list[GatedSink] = []

    def factory(path: str) -> GatedSink:
        sinks.append(GatedSink(FileSink(path), gate))
        return sinks[-1]

    writer = AsyncSummaryWriter(logdir, flush_secs=3600, sink_factory=factory)
    watchdog = threading.Timer(DEADLINE, gate.set)
    watchdog.start()
    try:
        yield writer, gate, sinks
    finally:
        watchdog.cancel()
        gate.set()
        writer.close()


async def _assert_loop_runs_while_flush_waits(
    flush, gate: threading.Event, sinks: list[GatedSink]
) -> None:  # type: ignore[no-untyped-def]
    ticker = Ticker()
    ticking = asyncio.create_task(ticker.run())
    try:
        flushing = asyncio.create_task(flush())
        while not sinks:  # the sink is made by the first write
            await asyncio.sleep(0.001)
        await _wait_for_thread_event(sinks[0].entered)  # the storage is now stalled
        await asyncio.wait_for(ticker.reached(20).wait(), DEADLINE)
        # The loop kept running while the flush waited on storage.
        assert not flushing.done()
        assert not gate.is_set(), "the watchdog opened the gate: the loop was frozen"
        gate.set()
        await asyncio.wait_for(flushing, DEADLINE)
    finally:
        ticking.cancel()


async def test_aflush_on_a_running_loop_does_not_block_it(stalled_writer, logdir):
    writer, gate, sinks = stalled_writer
    for step in range(10):
        writer.add_scalar("x", step, step)
    await _assert_loop_runs_while_flush_waits(writer.aflush, gate, sinks)
    assert scalars(logdir) == [(step, "x", float(step)) for step in range(10)]


async def test_aflush_all_on_a_running_loop_does_not_block_it(stalled_writer, logdir, tmp_path):
    writer, gate, sinks = stalled_writer
    other_dir = str(tmp_path / "other")
    async with AsyncSummaryWriter(other_dir, flush_secs=3600) as other:
        writer.add_scalar("x", 1.0, 1)
        other.add_scalar("y", 2.0, 2)
        await _assert_loop_runs_while_flush_waits(lambda: aflush_all(DEADLINE), gate, sinks)
        assert scalars(logdir) == [(1, "x", 1.0)]
        assert scalars(other_dir) == [(2, "y", 2.0)]


# ------------------------------------------------------------------------ the trainer
class ProducerSink(WrappedSink):
    """Every write first queues one more event: a producer (a heartbeat) that keeps
    adding while the storage works, as in the trainer example."""

    def __init__(self, inner: FileSink, writers: list[AsyncSummaryWriter], limit: int) -> None:
        super().__init__(inner)
        self.writers = writers
        self.limit = limit
        self.writes = 0

    async def write(self, data: memoryview) -> int:
        self.writes += 1
        if self.writes < self.limit and not self.writers[0].closed:
            self.writers[0].add_scalar("tick", self.writes, self.writes)
        return await self.inner.write(data)


async def test_aflush_returns_while_a_producer_keeps_adding(logdir):
    limit = 200
    writers: list[AsyncSummaryWriter] = []
    sinks: list[ProducerSink] = []

    def factory(path: str) -> ProducerSink:
        sinks.append(ProducerSink(FileSink(path), writers, limit))
        return sinks[-1]

    writers.append(AsyncSummaryWriter(logdir, flush_secs=3600, sink_factory=factory))
    async with writers[0] as writer:
        writer.add_scalar("start", 0.0, 0)
        await writer.aflush(DEADLINE)
        # The flush waited for what was added before it, not for the endless stream
        # after it (which would only end at the producer's limit).
        assert sinks[0].writes < limit
    ticks = [step for step, tag, _ in scalars(logdir) if tag == "tick"]
    assert ticks == list(range(1, len(ticks) + 1))


def test_asyncio_trainer_example_end_to_end(logdir):
    epochs = 3
    done = subprocess.run(
        [
            sys.executable,
            str(TRAINER),
            "--logdir",
            logdir,
            "--epochs",
            str(epochs),
            "--samples",
            "3000",
            "--batch-size",
            "100",
            "--storage-delay-ms",
            "5",
            "--heartbeat-secs",
            "0.002",
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=DEADLINE * 2,
    )
    assert done.returncode == 0, done.stderr
    summary = re.search(r"done: epochs=(\d+) accuracy=([\d.]+) heartbeats=(\d+)", done.stdout)
    assert summary, done.stdout
    heartbeats = int(summary.group(3))

    assert len(event_files(logdir)) == 1
    tags = by_tag(logdir)
    steps_per_epoch = 2400 // 100  # 80 % of the samples train
    assert sorted(tags["train/loss"]) == list(range(epochs * steps_per_epoch))
    assert sorted(tags["eval/accuracy"]) == sorted(tags["eval/loss"]) == [1, 2, 3]
    assert tags["eval/loss"][3] < tags["eval/loss"][1]  # it learns
    assert tags["eval/accuracy"][3] >= 0.9
    assert sorted(tags["loop/heartbeats_during_flush"]) == [1, 2, 3]
    # Every tick the heartbeat counted is on disk: aclose lost nothing.
    assert tags.get("loop/heartbeats", {}) == {t: float(t) for t in range(1, heartbeats + 1)}
    assert sorted(tags.get("loop/lag_ms", {})) == list(range(1, heartbeats + 1))
