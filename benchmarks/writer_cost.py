"""Caller cost and end-to-end throughput of four event-file writers, on local disk.

The writers, each given the same serialized ``Summary`` bytes (what a TF session
returns) and used with its defaults:

* ``tf``: ``tf.compat.v1.summary.FileWriter.add_summary(bytes, step)``.
* ``tensorboard``: ``tensorboard.summary.writer.event_file_writer.EventFileWriter``,
  driven as ``torch.utils.tensorboard``'s ``FileWriter.add_summary`` drives it
  (``Summary`` parsed from the bytes, wrapped in an ``Event``, ``add_event``).
* ``tensorboardX``: ``tensorboardX.FileWriter.add_summary(Summary, step)``, the
  bytes parsed into tensorboardX's own ``Summary`` first.
* ``asyncsummary``: ``AsyncSummaryWriter.add_summary(bytes, step)``.

For each, one timed pass adds ``n`` events as fast as the caller can (timing every
chunk of :data:`CHUNK` calls) and then closes the writer:

* **caller cost** (µs per add): the median chunk divided by its size is the cost of
  an add that does not wait; the mean over all adds also counts the waits (a full
  queue, the GIL held by the writer's thread).
* **throughput** (events/s): ``n`` over the time from the first add to the return
  of ``close()`` (everything written and closed).

The reference is **framing alone**: a plain pure-Python loop that builds each Event
envelope, frames it as a TFRecord with its two masked CRC-32Cs (in C) and joins the
batch, with no I/O and no threads, written here independently of asyncsummary's own
code so that optimising asyncsummary does not move the reference. The target is at
least 75 % of it end to end.

Writers run one after the other within a round, in a rotated order, and the rounds
repeat; the figures reported are medians over rounds.
"""

from __future__ import annotations

import gc
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import google_crc32c

from . import (
    command_line,
    image_summary_bytes,
    quiet_tensorflow,
    ratio,
    scalar_summary_bytes,
    summarize,
    temp_logdir,
)

__all__ = ["WRITERS", "framing_alone", "main", "run"]

CHUNK = 100  # adds timed together: timing each call alone would cost as much as ours


# ------------------------------------------------------------------------- writers
class _Writer:
    """One writer under test: ``add(summary_bytes, step)`` then ``close()``."""

    name = ""

    def __init__(self, logdir: str) -> None:
        raise NotImplementedError

    add: Callable[[bytes, int], None]

    def close(self) -> None:
        raise NotImplementedError


class TFWriter(_Writer):
    name = "tf"

    def __init__(self, logdir: str) -> None:
        quiet_tensorflow()
        import tensorflow as tf

        with tf.Graph().as_default():  # v1 FileWriter refuses eager mode
            self._writer = tf.compat.v1.summary.FileWriter(logdir)
        self.add = self._writer.add_summary

    def close(self) -> None:
        self._writer.close()


class TensorBoardWriter(_Writer):
    name = "tensorboard"

    def __init__(self, logdir: str) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(logdir)
        add_event = self._writer.add_event
        parse = Summary.FromString
        now = time.time

        def add(data: bytes, step: int) -> None:
            # torch.utils.tensorboard.writer.FileWriter.add_summary + add_event
            event = Event(summary=parse(data))
            event.wall_time = now()
            event.step = int(step)
            add_event(event)

        self.add = add

    def close(self) -> None:
        self._writer.close()


class TensorBoardXWriter(_Writer):
    name = "tensorboardX"

    def __init__(self, logdir: str) -> None:
        from tensorboardX import FileWriter
        from tensorboardX.proto.summary_pb2 import Summary

        self._writer = FileWriter(logdir)
        add_summary = self._writer.add_summary
        parse = Summary.FromString

        def add(data: bytes, step: int) -> None:
            add_summary(parse(data), step)

        self.add = add

    def close(self) -> None:
        self._writer.close()


class AsyncSummaryWriterUnderTest(_Writer):
    name = "asyncsummary"

    def __init__(self, logdir: str, **options: Any) -> None:
        from asyncsummary import AsyncSummaryWriter

        self.writer = AsyncSummaryWriter(logdir, **options)
        self.add = self.writer.add_summary

    def close(self) -> None:
        self.writer.close()


WRITERS: tuple[type[_Writer], ...] = (TFWriter, TensorBoardWriter, TensorBoardXWriter, AsyncSummaryWriterUnderTest)


# --------------------------------------------------------------- framing alone
_pack_double = struct.Struct("<d").pack
_pack_u64 = struct.Struct("<Q").pack
_pack_u32 = struct.Struct("<I").pack
_crc = google_crc32c.value


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _masked(data: bytes) -> bytes:
    crc = _crc(data)
    return _pack_u32((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def framing_alone(payloads: list[bytes]) -> float:
    """Events/s of envelope + TFRecord framing + CRC in a plain Python loop, in memory."""
    gc.collect()
    start = time.perf_counter()
    out: list[bytes] = []
    append = out.append
    now = time.time
    for step, summary in enumerate(payloads):
        event = b"".join(
            (b"\x09", _pack_double(now()), b"\x10", _varint(step), b"\x2a", _varint(len(summary)), summary)
        )
        header = _pack_u64(len(event))
        append(header)
        append(_masked(header))
        append(event)
        append(_masked(event))
    data = b"".join(out)
    elapsed = time.perf_counter() - start
    assert data
    return len(payloads) / elapsed


# --------------------------------------------------------------------- one pass
def timed_pass(make: Callable[[str], _Writer], payloads: list[bytes]) -> dict[str, Any]:
    """Add every payload (timing chunks of adds), close; caller cost and throughput."""
    n = len(payloads)
    chunk_us: list[float] = []
    with temp_logdir() as logdir:
        writer = make(logdir)
        add = writer.add
        clock = time.perf_counter_ns
        gc.collect()
        gc.disable()  # a collection would land in one writer's chunk and not another's
        try:
            start = clock()
            for first in range(0, n, CHUNK):
                t0 = clock()
                for step in range(first, min(first + CHUNK, n)):
                    add(payloads[step], step)
                chunk_us.append((clock() - t0) / 1000 / min(CHUNK, n - first))
            adds_done = clock()
            writer.close()
            end = clock()
        finally:
            gc.enable()
    return {
        "caller_us": summarize(chunk_us),
        "caller_mean_us": (adds_done - start) / 1000 / n,
        "close_ms": (end - adds_done) / 1e6,
        "events_per_s": n / ((end - start) / 1e9),
        "chunk_us": chunk_us,
    }


def _median(values: list[float]) -> float:
    return summarize(values)["p50"]


def compare(payloads: list[bytes], rounds: int, writers: tuple[type[_Writer], ...] = WRITERS) -> dict[str, Any]:
    """Interleaved rounds of every writer and of framing alone on ``payloads``."""
    per_writer: dict[str, list[dict[str, Any]]] = {w.name: [] for w in writers}
    framing: list[float] = []
    for r in range(rounds):
        order = writers[r % len(writers):] + writers[: r % len(writers)]
        framing.append(framing_alone(payloads))
        for writer in order:
            per_writer[writer.name].append(timed_pass(writer, payloads))
    framing_rate = _median(framing)
    result: dict[str, Any] = {
        "events": len(payloads),
        "event_bytes": len(payloads[0]),
        "rounds": rounds,
        "framing_alone_events_per_s": framing_rate,
        "framing_alone_rounds": framing,
        "writers": {},
    }
    for name, passes in per_writer.items():
        rate = _median([p["events_per_s"] for p in passes])
        result["writers"][name] = {
            "caller_us_p50": _median([p["caller_us"]["p50"] for p in passes]),
            "caller_us_p99": _median([p["caller_us"]["p99"] for p in passes]),
            "caller_us_mean": _median([p["caller_mean_us"] for p in passes]),
            "events_per_s": rate,
            "vs_framing_alone": ratio(rate, framing_rate),
            "close_ms": _median([p["close_ms"] for p in passes]),
            "rounds": [{k: v for k, v in p.items() if k != "chunk_us"} for p in passes],
            "chunk_us": [u for p in passes for u in p["chunk_us"]],
        }
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """Small scalar events and 1 MiB images through the four writers."""
    # tensorboard and tensorboardX manage only a few 1 MiB images a second (a pure-Python
    # CRC): 20 per round keeps the full run within minutes.
    small_n, large_n, rounds = (5_000, 3, 1) if quick else (100_000, 20, 3)
    small = [scalar_summary_bytes("loss", float(i)) for i in range(small_n)]
    image = image_summary_bytes("image", 1 << 20)
    large = [image] * large_n
    return {
        "small": compare(small, rounds),
        "large": compare(large, rounds),
    }


def table(result: dict[str, Any]) -> list[str]:
    """Rows of the summary table."""
    lines = []
    for size in ("small", "large"):
        part = result[size]
        lines.append(
            f"{size}: {part['events']} events of {part['event_bytes']} B, {part['rounds']} rounds; "
            f"framing alone {part['framing_alone_events_per_s']:,.0f} events/s"
        )
        lines.append(f"  {'writer':<14}{'add p50 µs':>12}{'add mean µs':>13}{'events/s':>12}{'vs framing':>12}")
        for name, w in part["writers"].items():
            lines.append(
                f"  {name:<14}{w['caller_us_p50']:>12.2f}{w['caller_us_mean']:>13.2f}"
                f"{w['events_per_s']:>12,.0f}{w['vs_framing_alone']:>12.2f}"
            )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return command_line(__doc__ or "", run, table, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
