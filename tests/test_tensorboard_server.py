"""What a user sees: a real TensorBoard server reading a run that a writer is writing.

The installed ``tensorboard`` is started on a loopback port (``--port 0``: it picks a
free one and prints its URL) against a logdir, in both of its data-loading modes, which
both work offline here: ``--load_fast=false`` (the Python multiplexer) and
``--load_fast=true`` (the Rust ``tensorboard-data-server`` shipped in its wheel). The
scalars are read back through TensorBoard's HTTP data API
(``/data/plugin/scalars/scalars?run=...&tag=...``) while the writer is still open,
written by its ``flush_secs`` timer alone (no ``flush()`` call), then after ``close()``.
Every wait is bounded; the server is stopped in the fixture's ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncsummary import AsyncSummaryWriter

STARTUP_DEADLINE = 90.0  # TensorBoard imports TensorFlow when it is installed
DATA_DEADLINE = 60.0  # timer flush (1 s) + reload (1 s) + a loaded machine


class TensorBoard:
    """A ``tensorboard`` server process; ``url`` is read from the line it prints."""

    def __init__(self, logdir: Path, load_fast: str, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        command = [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            f"--load_fast={load_fast}",
            "--reload_interval",
            "1",
        ]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        end = time.monotonic() + STARTUP_DEADLINE
        while time.monotonic() < end:
            match = re.search(r"at (http://127\.0\.0\.1:\d+/)", self.log())
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                break
            threading.Event().wait(0.1)  # polling a file, bounded by the deadline
        raise AssertionError(f"tensorboard did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get_json(self, path: str, **query: str) -> Any:
        url = self.url + path.lstrip("/") + ("?" + urllib.parse.urlencode(query) if query else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(15)
        finally:
            self._log.close()


@pytest.fixture(params=["false", "true"], ids=["python-loader", "rust-data-server"])
def tensorboard(request, tmp_path) -> Iterator[tuple[TensorBoard, Path]]:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    server = None
    try:
        server = TensorBoard(logdir, request.param, tmp_path / "tensorboard.log")
        yield server, logdir
    finally:
        if server is not None:
            server.stop()


def scalars_seen(server: TensorBoard, run: str, tag: str) -> list[list[float]]:
    """``[[wall_time, step, value], ...]`` as TensorBoard serves them; [] before it has the run."""
    try:
        return server.get_json("/data/plugin/scalars/scalars", run=run, tag=tag)  # type: ignore[no-any-return]
    except urllib.error.HTTPError:  # run or tag not loaded yet
        return []


def wait_for_scalars(server: TensorBoard, run: str, tag: str, count: int) -> list[list[float]]:
    end = time.monotonic() + DATA_DEADLINE
    while True:
        seen = scalars_seen(server, run, tag)
        if len(seen) >= count:
            return seen
        if time.monotonic() > end or server.proc.poll() is not None:
            raise AssertionError(
                f"TensorBoard served {len(seen)} of {count} values of {run}/{tag}:\n{server.log()[-3000:]}"
            )
        threading.Event().wait(0.2)  # polling a server, bounded by the deadline


def expected(steps: range) -> list[list[float]]:
    # Values exact in float32, wall times exact in float64: compared with ==.
    return [[1_700_000_000.0 + step / 8, float(step), step / 4 - 3.0] for step in steps]


def add(writer: AsyncSummaryWriter, steps: range) -> None:
    for step in steps:
        writer.add_scalar("loss", step / 4 - 3.0, step, walltime=1_700_000_000.0 + step / 8)


def test_tensorboard_serves_scalars_while_the_writer_is_open_and_after_close(tensorboard):
    server, logdir = tensorboard
    writer = AsyncSummaryWriter(str(logdir / "live"), flush_secs=1.0)
    try:
        add(writer, range(0, 10))
        seen = wait_for_scalars(server, "live", "loss", 10)
        assert seen == expected(range(0, 10))
        assert not writer.closed

        # The file keeps growing under a server that already read it.
        add(writer, range(10, 25))
        seen = wait_for_scalars(server, "live", "loss", 25)
        assert seen == expected(range(0, 25))
        assert not writer.closed
        assert writer.stats().flushes >= 2  # timer flushes: flush() was never called

        add(writer, range(25, 30))
        writer.close()
        seen = wait_for_scalars(server, "live", "loss", 30)
        assert seen == expected(range(0, 30))
    finally:
        writer.close()

    tags = server.get_json("/data/plugin/scalars/tags")
    assert list(tags) == ["live"] and list(tags["live"]) == ["loss"]
