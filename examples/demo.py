"""The README demo: write TensorBoard events two ways, then read them back.

1. TF1 training with ``AsyncSummarySaverHook`` (``tf1_monitored_training.py``).
2. ``AsyncSummaryWriter`` on its own, no TensorFlow in the code path: a loop logging
   scalars, as any training loop or service would.
3. Every event file read back with TensorBoard's own loader (``EventAccumulator``):
   tags, point counts, first and last steps.

    python examples/demo.py            # events under ./runs/demo-<time>/
    tensorboard --logdir runs/
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf1_monitored_training  # noqa: E402

from asyncsummary import AsyncSummaryWriter  # noqa: E402


def write_with_the_writer(logdir: str, steps: int) -> None:
    """A plain loop logging two scalars per step; prints what the caller paid per add."""
    with AsyncSummaryWriter(logdir, flush_secs=1.0) as writer:
        start = time.perf_counter()
        for step in range(1, steps + 1):
            writer.add_scalar("demo/sine", math.sin(step / 50), step)
            writer.add_scalar("demo/decay", math.exp(-step / 1000), step)
        per_add = (time.perf_counter() - start) / (2 * steps)
    stats = writer.stats()  # after close(): everything written
    print(
        f"AsyncSummaryWriter: {stats.written} events written, "
        f"{per_add * 1e6:.2f} us per add_scalar on the caller"
    )


def describe(run: str, logdir: str) -> None:
    """Print what TensorBoard sees in ``logdir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    print(f"\nrun {run!r} ({logdir}):")
    for kind, read in (("scalars", acc.Scalars), ("histograms", acc.Histograms)):
        for tag in sorted(tags[kind]):
            points = read(tag)
            print(
                f"  {kind:<10} {tag:<12} {len(points):>6} points  steps {points[0].step}..{points[-1].step}"
            )
    if tags.get("graph"):
        print("  graph      (the training graph, for TensorBoard's Graphs tab)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--logdir", default=os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S"))
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps of the TF1 part")
    args = parser.parse_args(argv)
    tf1_dir = os.path.join(args.logdir, "tf1")
    writer_dir = os.path.join(args.logdir, "writer")

    loss = tf1_monitored_training.train(tf1_dir, steps=args.steps, save_steps=1)
    print(
        f"TF1 MonitoredTrainingSession + AsyncSummarySaverHook: {args.steps} steps, final loss {loss:.4f}"
    )
    write_with_the_writer(writer_dir, steps=10 * args.steps)

    describe("tf1", tf1_dir)
    describe("writer", writer_dir)
    print(f"\nopen them with:  tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
