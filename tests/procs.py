"""Child processes for the fault tests, and what they leave behind.

A fault that kills or signals a process, or that needs a process-wide limit
(``RLIMIT_FSIZE``, a private mount namespace), is tested in a child: the test
writes the child's code as a string, starts it with this interpreter, reads the
markers it prints line by line (``FLUSHED 1200``: a ``flush()`` covering the first
1200 events returned), and then reads the event files it left with the real
readers (TensorBoard's loader and ``tf.data``, as in :mod:`tests.readers`). Every wait
here is bounded.
"""

from __future__ import annotations

import os
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass
from typing import Any

from .readers import event_files

#: Seconds any single wait on a child may take before the test fails.
DEADLINE = 60.0


def child_env() -> dict[str, str]:
    """The environment of a child: unbuffered output, TensorFlow quiet."""
    return dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")


def script(code: str) -> str:
    """Dedent a child's source (so tests can indent it like the code around it)."""
    return textwrap.dedent(code).lstrip("\n")


class Child:
    """A running child process whose stdout lines can be awaited one by one.

    A reader thread moves stdout lines into a queue, so :meth:`line` can wait with a
    timeout; stderr goes to a temporary file and is shown when an expectation fails.
    """

    def __init__(self, code: str, *args: str, prefix: list[str] | None = None,
                 preexec_fn: Any = None) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+")
        command = [*(prefix or []), sys.executable, "-c", script(code), *args]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            env=child_env(), preexec_fn=preexec_fn,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float = DEADLINE) -> str | None:
        """The next stdout line; None at end of output."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"child printed nothing for {timeout} s\n{self.stderr()}") from None
        if line is not None:
            self.seen.append(line)
        return line

    def expect(self, word: str, timeout: float = DEADLINE) -> str:
        """Wait for the next line starting with ``word``; return it."""
        while True:
            line = self.line(timeout)
            if line is None:
                raise AssertionError(f"child ended before printing {word!r}\n{self.stderr()}")
            if line.startswith(word):
                return line

    def rest(self, timeout: float = DEADLINE) -> list[str]:
        """Every remaining stdout line, up to the end of the output."""
        out = []
        while (line := self.line(timeout)) is not None:
            out.append(line)
        return out

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def wait(self, timeout: float = DEADLINE) -> int:
        """Exit status (negative: killed by that signal); fails the test past ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"child still running after {timeout} s\n{self.stderr()}") from None

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()

    def close(self) -> None:
        """Kill the child if it still runs (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self._reader.join(DEADLINE)
        self._stderr.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(code: str, *args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    """Run a child to its end; fail the test (with its stderr) unless it exits 0."""
    return run_argv([sys.executable, "-c", script(code), *args], timeout=timeout)


def run_argv(
    argv: list[str], *, timeout: float = DEADLINE, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; fail the test (with its stderr) unless it exits 0.

    It runs in a process group of its own, with ``faulthandler`` on (inherited by its
    ``multiprocessing`` children): if it is still running after ``timeout``, every
    process of the group is sent SIGABRT, which makes each print the stacks of all its
    threads to the shared stderr, shown in the failure (a hang says where it hangs);
    then the group is killed.
    """
    env = dict(child_env() if env is None else env, PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        _signal_group(proc.pid, signal.SIGKILL)  # children that outlived the abort
        raise AssertionError(
            f"child still running after {timeout} s; the stacks of its processes:\n{err}"
        ) from None
    if proc.returncode != 0:
        raise AssertionError(f"child exited {proc.returncode}\n{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:  # all gone
        pass


def markers(lines: list[str], word: str) -> list[int]:
    """The numbers of every ``WORD n`` line."""
    return [int(line.split()[1]) for line in lines if line.startswith(word + " ")]


# ------------------------------------------------------------------ files left behind
@dataclass
class EventFile:
    path: str
    events: list[Any]  #: every whole record, parsed by TensorBoard's loader
    tail: int  #: bytes of a truncated final record (0: the file ends on a whole record)


def _whole_records_end(data: bytes) -> tuple[int, int]:
    """(records, offset past the last whole record), walking the length headers.

    Only the lengths are read here; the CRCs are the readers' job. The bytes after
    the offset must be the start of one record, shorter than that record.
    """
    offset = count = 0
    while len(data) - offset >= 8:
        (length,) = struct.unpack_from("<Q", data, offset)
        end = offset + 16 + length
        if end > len(data):
            break
        offset, count = end, count + 1
    tail = data[offset:]
    if len(tail) >= 8:
        (length,) = struct.unpack_from("<Q", tail)
        assert len(tail) < 16 + length, "bytes after the last record are not one truncated record"
    return count, offset


def read_event_file(path: str) -> EventFile:
    """Read one event file with TensorBoard's loader and with ``tf.data.TFRecordDataset``.

    Both must read every whole record (each checks every CRC: TensorBoard's own record
    reader where TensorFlow is not installed, TF's where it is), and the only thing
    allowed after them is one truncated final record, where a killed process may
    stop. TF reports such a tail as ``DataLossError("truncated record ...")``. The core
    suite (no TensorFlow, see ``conftest.CORE_SUITE``) reads with TensorBoard only.
    """
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    with open(path, "rb") as f:
        data = f.read()
    count, end = _whole_records_end(data)
    # What tests.readers.tb_events does, keeping the raw records to compare with TF's.
    raw = list(RawEventFileLoader(path).Load())
    assert len(raw) == count, f"{path}: TensorBoard read {len(raw)} of {count} records"
    if os.environ.get("ASYNCSUMMARY_CORE_SUITE") != "1":
        _tf_reads_the_same(path, raw, end < len(data))
    events = [event_pb2.Event.FromString(r) for r in raw]  # as tests.readers.tb_events
    return EventFile(path, events, len(data) - end)


def _tf_reads_the_same(path: str, raw: list[bytes], torn_tail: bool) -> None:
    """``tf.data.TFRecordDataset`` reads exactly TensorBoard's ``raw`` records, and at
    most a truncated tail after them."""
    import tensorflow as tf

    count = len(raw)
    records: list[bytes] = []
    try:  # in batches (one eager step per record is slow), then one by one near a tail
        for batch in tf.data.TFRecordDataset(path).batch(4096):
            records.extend(batch.numpy().tolist())
    except tf.errors.DataLossError:
        try:
            for record in tf.data.TFRecordDataset(path).skip(len(records)):
                records.append(record.numpy())
        except tf.errors.DataLossError as exc:
            assert torn_tail, f"{path}: TF rejected a file of whole records: {exc}"
            assert "truncated" in str(exc), f"{path}: TF found more than a truncated tail: {exc}"
    assert len(records) == count, f"{path}: TF read {len(records)} of {count} records"
    assert records == raw, f"{path}: TensorFlow and TensorBoard read different records"


def read_run(logdir: str) -> list[EventFile]:
    """Every event file of a run, in the order TensorBoard reads them."""
    return [read_event_file(path) for path in event_files(logdir)]


def pid_in_name(path: str) -> int:
    """The pid field of ``events.out.tfevents.<secs>.<host>.<pid>.as<seq><suffix>``."""
    name = os.path.basename(path)
    parts = name[len("events.out.tfevents."):].split(".")
    # host names may contain dots: the pid is the field before the "as<seq>" one
    seq = next(i for i, p in enumerate(parts) if p.startswith("as") and p[2:].isdigit())
    return int(parts[seq - 1])
