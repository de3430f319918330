"""Caller cost of the torch-style writers: torch's, tensorboardX's and asyncsummary's.

Three calls, each given the very same inputs (CPU torch tensors, made once):

* ``add_scalar(tag, float, step)``;
* ``add_histogram(tag, values, step)``, 100 000 values, default ``bins='tensorflow'``;
* ``add_image(tag, img, step)``, a 3 x 512 x 512 float tensor in [0, 1].

Writers: ``torch.utils.tensorboard.SummaryWriter``, ``tensorboardX.SummaryWriter`` and
``asyncsummary.SummaryWriter``, each with its defaults, each in a fresh folder.

Measured, per call kind and writer:

* **isolated** (µs per call): each call timed alone, and the writer flushed (untimed)
  before the next one, so asyncsummary's background build of one call never overlaps
  the timing of the next. This is the cost a training step pays for an occasional
  histogram or image. For scalars, which are logged every step, calls are timed in
  chunks of :data:`SCALAR_CHUNK` back to back instead.
* **burst** (µs per call): the same calls back to back with no flush in between, so
  asyncsummary's workers build earlier calls while later ones are made (they compete
  for the GIL and the cores): the cost during a burst of logging.
* **end to end** (µs per call): from the first call of the burst to the return of
  ``flush()`` (everything built and written), divided by the number of calls. This is
  the total work, which asyncsummary moves off the caller, not away.

Writers alternate within each round (rotated order) and rounds repeat; medians over
rounds are reported, with the ratio ``theirs / ours`` per call. The machine is usually
shared and noisy: compare the ratios of one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from . import jsonable, quiet_tensorflow, ratio, summarize, temp_logdir

__all__ = ["CALLS", "WRITERS", "main", "run"]

WRITERS = ("torch", "tensorboardX", "asyncsummary")
CALLS = ("add_scalar", "add_histogram", "add_image")
SCALAR_CHUNK = 100

# calls per (kind, writer, round): (quick, full)
_COUNTS = {"add_scalar": (1000, 10000), "add_histogram": (5, 30), "add_image": (2, 10)}
_ROUNDS = (1, 3)


def _make_writer(name: str, logdir: str) -> Any:
    if name == "torch":
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(logdir)
    if name == "tensorboardX":
        import tensorboardX

        return tensorboardX.SummaryWriter(logdir)
    import asyncsummary

    return asyncsummary.SummaryWriter(logdir)


def _inputs() -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(0)
    return {
        "add_scalar": 0.125,
        "add_histogram": torch.randn(100_000, generator=generator),
        "add_image": torch.rand(3, 512, 512, generator=generator),
    }


def _one_kind(name: str, kind: str, value: Any, count: int) -> dict[str, float]:
    """Isolated, burst and end-to-end µs per call of one writer for one call kind."""
    clock = time.perf_counter_ns
    with temp_logdir(prefix="asb-torch-") as logdir:
        writer = _make_writer(name, logdir)
        call: Callable[..., None] = getattr(writer, kind)
        try:
            call("warmup", value, 0)
            writer.flush()
            gc.collect()
            gc.disable()  # a collection would land in one writer's timing and not another's
            isolated: list[float] = []
            if kind == "add_scalar":
                for first in range(0, count, SCALAR_CHUNK):
                    n = min(SCALAR_CHUNK, count - first)
                    t0 = clock()
                    for step in range(first, first + n):
                        call("isolated", value, step)
                    isolated.append((clock() - t0) / 1000 / n)
                writer.flush()
            else:
                for step in range(count):
                    t0 = clock()
                    call("isolated", value, step)
                    isolated.append((clock() - t0) / 1000)
                    writer.flush()
            burst: list[float] = []
            start = clock()
            for step in range(count):
                t0 = clock()
                call("burst", value, step)
                burst.append((clock() - t0) / 1000)
            calls_done = clock()
            writer.flush()
            end = clock()
        finally:
            gc.enable()
            writer.close()
    return {
        "isolated_us": summarize(isolated)["p50"],
        "isolated_mean_us": sum(isolated) / len(isolated),
        "burst_us": summarize(burst)["p50"],
        "burst_mean_us": (calls_done - start) / 1000 / count,
        "end_to_end_us": (end - start) / 1000 / count,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """All writers on all calls, interleaved rounds; raw numbers and medians."""
    quiet_tensorflow()
    inputs = _inputs()
    rounds = _ROUNDS[0 if quick else 1]
    raw: dict[str, dict[str, list[dict[str, float]]]] = {k: {w: [] for w in WRITERS} for k in CALLS}
    for r in range(rounds):
        for kind in CALLS:
            count = _COUNTS[kind][0 if quick else 1]
            order = WRITERS[r % len(WRITERS):] + WRITERS[: r % len(WRITERS)]
            for name in order:
                raw[kind][name].append(_one_kind(name, kind, inputs[kind], count))
    medians: dict[str, dict[str, dict[str, float]]] = {}
    for kind in CALLS:
        medians[kind] = {}
        for name in WRITERS:
            samples = raw[kind][name]
            medians[kind][name] = {
                key: summarize([s[key] for s in samples])["p50"] for key in samples[0]
            }
    ratios = {
        kind: {
            f"{other}/asyncsummary": {
                key: ratio(medians[kind][other][key], medians[kind]["asyncsummary"][key])
                for key in ("isolated_us", "burst_mean_us", "end_to_end_us")
            }
            for other in ("torch", "tensorboardX")
        }
        for kind in CALLS
    }
    import torch

    return {
        "quick": quick,
        "rounds": rounds,
        "counts": {k: _COUNTS[k][0 if quick else 1] for k in CALLS},
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "medians": medians,
        "ratios": ratios,
        "raw": raw,
    }


def table(result: dict[str, Any]) -> str:
    """The medians as a plain-text table, with the ratios to asyncsummary."""
    lines = [
        f"{'call':<14} {'writer':<13} {'isolated µs':>12} {'burst µs':>10} {'end-to-end µs':>14} "
        f"{'isolated ×':>10}"
    ]
    for kind in CALLS:
        for name in WRITERS:
            m = result["medians"][kind][name]
            times = "" if name == "asyncsummary" else f"{result['ratios'][kind][f'{name}/asyncsummary']['isolated_us']:>9.1f}×"
            lines.append(
                f"{kind:<14} {name:<13} {m['isolated_us']:>12.1f} {m['burst_mean_us']:>10.1f} "
                f"{m['end_to_end_us']:>14.1f} {times:>10}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", metavar="FILE", help="write the raw numbers here")
    args = parser.parse_args(argv)
    result = run(args.quick)
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(jsonable(result), f, indent=1)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
