"""Benchmarks of asyncsummary side by side with the writers people use today.

Run them all with ``python -m benchmarks`` (``--quick`` for a smoke run, ``--out DIR``
for where the JSON and PNG files go; default ``benchmarks/results/``). Each module
measures one thing and exposes ``run(quick) -> dict`` (raw numbers, JSON-ready) and
``main(argv)`` to run it alone.

This module holds what they share: summary statistics, the serialized payloads every
writer gets, and temporary log folders. The machine these run on is usually noisy
(shared cores), so every benchmark interleaves the variants it compares and repeats
the rounds: compare ratios taken within one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "STORAGES",
    "command_line",
    "interleaved_runs",
    "on_each_storage",
    "image_summary_bytes",
    "jsonable",
    "percentile",
    "quiet_tensorflow",
    "ratio",
    "scalar_summary_bytes",
    "summarize",
    "temp_logdir",
]


def command_line(
    doc: str,
    run: Callable[[bool], dict[str, Any]],
    table: Callable[[dict[str, Any]], list[str]],
    argv: list[str] | None,
) -> dict[str, Any]:
    """The ``main(argv)`` of a benchmark module: ``--quick``, ``--json FILE``, a table."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="FILE", help="write the raw numbers here")
    args = parser.parse_args(argv)
    result = run(args.quick)
    print("\n".join(table(result)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(jsonable(result), f)
    return result


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ logging; call before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linear interpolation."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """p50, p99, mean, min, max and count of ``samples`` (their unit is the caller's)."""
    values = sorted(samples)
    if not values:
        return {
            "n": 0,
            "p50": math.nan,
            "p99": math.nan,
            "mean": math.nan,
            "min": math.nan,
            "max": math.nan,
        }
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values),
        "min": values[0],
        "max": values[-1],
    }


def scalar_summary_bytes(tag: str, value: float) -> bytes:
    """A serialized ``Summary`` with one ``simple_value``, as a TF session returns it."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Summary(value=[Summary.Value(tag=tag, simple_value=value)]).SerializeToString()  # type: ignore[no-any-return]


def image_summary_bytes(tag: str, size: int) -> bytes:
    """A serialized image ``Summary`` whose encoded image is ``size`` random bytes.

    Random bytes do not compress, so no layer gets a shortcut; readers never decode
    the image, so it need not be a valid PNG.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(
        height=512, width=512, colorspace=4, encoded_image_string=os.urandom(size)
    )
    return Summary(value=[Summary.Value(tag=tag, image=image)]).SerializeToString()  # type: ignore[no-any-return]


@contextlib.contextmanager
def temp_logdir(prefix: str = "asb-", parent: str | None = None) -> Iterator[str]:
    """A fresh folder for one writer's files, removed afterwards."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero or either is NaN."""
    if not b or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def jsonable(value: Any) -> Any:
    """``value`` with NaN/inf turned into None, so the JSON stays standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


#: The two storages of the training-loop benchmarks: the local disk, and a FUSE file
#: system whose every write sleeps 5 ms (:mod:`benchmarks.fuse_slowfs`).
STORAGES = ("local disk", "5 ms per write (FUSE)")
_FUSE_DELAY = 0.005


def interleaved_runs(
    variants: Sequence[str],
    rounds: int,
    warmup: int,
    run_one: Callable[[str, str], list[float]],
    prefix: str,
    parent: str | None,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Run every variant once per round, in an order that rotates each round.

    ``run_one(variant, logdir)`` trains in a fresh folder (under ``parent``) and returns
    its step intervals in seconds. The first ``warmup`` rounds (imports, first writers)
    are not counted. Returns (every counted interval, each counted run's median), per
    variant: a round's runs are close in time, so ratios are best taken within a round.
    """
    samples: dict[str, list[float]] = {v: [] for v in variants}
    medians: dict[str, list[float]] = {v: [] for v in variants}
    count = len(variants)
    for round_index in range(rounds + warmup):
        shift = round_index % count
        for variant in [*variants[shift:], *variants[:shift]]:
            with temp_logdir(prefix, parent) as logdir:
                intervals = run_one(variant, logdir)
            if round_index >= warmup:
                samples[variant].extend(intervals)
                medians[variant].append(statistics.median(intervals))
    return samples, medians


def on_each_storage(
    settings: Sequence[str], compare: Callable[[str, str | None], dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``compare(setting, parent folder)`` for every setting on each of :data:`STORAGES`.

    ``parent`` is None for the local disk (the system's temporary folder), else the
    mount point of a FUSE file system mounted for that setting. Where FUSE cannot be
    mounted, each of its settings says ``{"not run": why}``.
    """
    from . import fuse_slowfs

    result: dict[str, dict[str, Any]] = {storage: {} for storage in STORAGES}
    for setting in settings:
        result[STORAGES[0]][setting] = compare(setting, None)
    reason = fuse_slowfs.unavailable()
    for setting in settings:
        if reason is not None:
            result[STORAGES[1]][setting] = {"not run": reason}
            continue
        try:
            with fuse_slowfs.mounted(_FUSE_DELAY) as mountpoint:
                result[STORAGES[1]][setting] = compare(setting, mountpoint)
        except RuntimeError as exc:  # the mount failed: say so
            result[STORAGES[1]][setting] = {"not run": str(exc)}
    return result
