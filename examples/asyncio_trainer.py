"""A training loop written with asyncio that logs to TensorBoard without blocking its loop.

The model is a logistic regression in NumPy on synthetic data, small enough to run
anywhere; what matters is the shape of the program. One event loop runs the trainer
and a heartbeat task side by side:

* every step queues its loss with ``writer.add_scalar`` (a deque append: no I/O, no
  waiting) and yields to the loop with ``await asyncio.sleep(0)``, as cooperative code
  must, so the other tasks keep running;
* every epoch ends with ``await writer.aflush()``: the epoch's events are on disk
  before the next epoch starts (a natural checkpoint), yet the loop keeps running while
  the storage works; the heartbeat ticks on through the flush;
* the heartbeat logs how late each of its ticks woke up (``loop/lag_ms``), the measure
  of a loop that something blocks;
* ``async with AsyncSummaryWriter(...)`` closes the writer with ``await aclose()``.

Run it::

    python examples/asyncio_trainer.py --logdir runs/asyncio_trainer
    python examples/asyncio_trainer.py --storage-delay-ms 50   # simulate slow storage
    tensorboard --logdir runs

Scalars: ``train/loss`` (per step), ``eval/loss`` and ``eval/accuracy`` (per epoch,
step = epoch number from 1), ``loop/heartbeats`` and ``loop/lag_ms`` (per tick), and
``loop/heartbeats_during_flush`` (per epoch: ticks that happened while ``aflush``
waited).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import time

import numpy as np

from asyncsummary import AsyncSummaryWriter, FileSink, Sink
from asyncsummary.testing import DelayedSink


@dataclasses.dataclass
class Data:
    x: np.ndarray
    y: np.ndarray


def make_data(rng: np.random.Generator, n: int, dim: int) -> tuple[Data, Data]:
    """Two linearly separable-ish classes; 80 % for training, 20 % held out."""
    true_w = rng.normal(size=dim)
    x = rng.normal(size=(n, dim))
    y = (x @ true_w + 0.3 * rng.normal(size=n) > 0).astype(np.float64)
    cut = int(n * 0.8)
    return Data(x[:cut], y[:cut]), Data(x[cut:], y[cut:])


def loss_and_grad(w: np.ndarray, b: float, batch: Data) -> tuple[float, np.ndarray, float]:
    """Mean binary cross-entropy of ``sigmoid(x @ w + b)`` and its gradient."""
    p = 1.0 / (1.0 + np.exp(-(batch.x @ w + b)))
    eps = 1e-12
    loss = -np.mean(batch.y * np.log(p + eps) + (1 - batch.y) * np.log(1 - p + eps))
    err = (p - batch.y) / len(batch.y)
    return float(loss), batch.x.T @ err, float(err.sum())


def accuracy(w: np.ndarray, b: float, data: Data) -> float:
    return float(np.mean(((data.x @ w + b) > 0) == (data.y > 0.5)))


class Heartbeat:
    """A task that ticks every ``interval`` seconds and logs how late each tick was."""

    def __init__(self, writer: AsyncSummaryWriter, interval: float) -> None:
        self.writer = writer
        self.interval = interval
        self.ticks = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag_ms = max(0.0, loop.time() - due) * 1e3
            self.ticks += 1
            self.writer.add_scalar("loop/heartbeats", self.ticks, self.ticks)
            self.writer.add_scalar("loop/lag_ms", lag_ms, self.ticks)


async def train(
    writer: AsyncSummaryWriter,
    heartbeat: Heartbeat,
    *,
    epochs: int,
    samples: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> float:
    """Mini-batch gradient descent; returns the final held-out accuracy."""
    rng = np.random.default_rng(seed)
    train_data, test_data = make_data(rng, n=samples, dim=20)
    w = np.zeros(train_data.x.shape[1])
    b = 0.0
    step = 0
    acc = 0.0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train_data.y))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss, grad_w, grad_b = loss_and_grad(w, b, Data(train_data.x[idx], train_data.y[idx]))
            w -= lr * grad_w
            b -= lr * grad_b
            writer.add_scalar("train/loss", loss, step)  # queued; returns at once
            step += 1
            await asyncio.sleep(0)  # cooperative: let the heartbeat (or a server) run
        eval_loss, _, _ = loss_and_grad(w, b, test_data)
        acc = accuracy(w, b, test_data)
        writer.add_scalar("eval/loss", eval_loss, epoch)
        writer.add_scalar("eval/accuracy", acc, epoch)
        # The epoch's events reach the disk before the next epoch starts; the loop
        # (and the heartbeat) keeps running while the storage works.
        ticks_before = heartbeat.ticks
        await writer.aflush()
        writer.add_scalar("loop/heartbeats_during_flush", heartbeat.ticks - ticks_before, epoch)
        print(f"epoch {epoch}: eval_loss={eval_loss:.4f} accuracy={acc:.3f}", flush=True)
    return acc


async def main_async(args: argparse.Namespace) -> None:
    sink_factory = None
    if args.storage_delay_ms > 0:
        delay = args.storage_delay_ms / 1e3

        def sink_factory(path: str) -> Sink:
            return DelayedSink(FileSink(path), delay)

    started = time.perf_counter()
    async with AsyncSummaryWriter(
        args.logdir, flush_secs=args.flush_secs, sink_factory=sink_factory
    ) as writer:
        heartbeat = Heartbeat(writer, args.heartbeat_secs)
        ticker = asyncio.create_task(heartbeat.run())
        try:
            acc = await train(
                writer,
                heartbeat,
                epochs=args.epochs,
                samples=args.samples,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
            )
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    # Leaving ``async with`` awaited ``writer.aclose()``: everything is on disk.
    print(
        f"done: epochs={args.epochs} accuracy={acc:.3f} heartbeats={heartbeat.ticks} "
        f"seconds={time.perf_counter() - started:.2f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs/asyncio_trainer")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=20000, help="synthetic examples")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flush-secs", type=float, default=2.0)
    parser.add_argument("--heartbeat-secs", type=float, default=0.01)
    parser.add_argument(
        "--storage-delay-ms", type=float, default=0.0, help="make every write this slow (demo)"
    )
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
