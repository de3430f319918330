"""Training-step time inside Lightning and Hugging Face ``Trainer``: stock writer vs asyncsummary.

Both frameworks flush their TensorBoard writer after every logged step (Lightning's
``logger.save()``, HF's ``TensorBoardCallback.on_log``), so on slow storage the stock
writer makes every step wait for the disk. Per framework, three variants train the
same tiny model (:mod:`benchmarks.tiny_models`, which the framework tests train too:
random data, no hub download) with logging on every step:

* **no logger**: the floor (Lightning ``logger=False``; HF without a TensorBoard callback);
* **stock**: Lightning's ``TensorBoardLogger`` / HF's ``TensorBoardCallback``, torch's writer;
* **asyncsummary**: ``AsyncTensorBoardLogger`` / ``AsyncTensorBoardCallback``
  (``flush_waits=False``, their default).

Storage: the local disk, and a FUSE file system whose every write sleeps 5 ms
(:mod:`benchmarks.fuse_slowfs`; where it cannot be mounted the result says ``not run``
and why). A step's time is the interval between two successive step starts
(Lightning ``on_train_batch_start``, HF ``on_step_begin``), so it includes the
logging and the flush of the step before. Variants alternate within each round,
rounds repeat (the first is a warm-up, not counted), and torch runs one thread (the
machine is shared; fewer threads, less noise). Reported: median, mean and p99 step time per
variant, and each as a fraction of stock's (``vs_stock``: per round, the variant's run
median over stock's run median of the same round; the median of those): the issue's targets
on 5 ms storage are asyncsummary <= 0.15 of stock for Lightning, <= 0.32 for HF.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import (
    STORAGES,
    command_line,
    interleaved_runs,
    on_each_storage,
    quiet_tensorflow,
    ratio,
    summarize,
    temp_logdir,
    tiny_models,
)

__all__ = ["FRAMEWORKS", "VARIANTS", "main", "run"]

FRAMEWORKS = ("lightning", "huggingface")
VARIANTS = ("no logger", "stock", "asyncsummary")
TARGETS = {"lightning": 0.15, "huggingface": 0.32}  # asyncsummary / stock on 5 ms storage

# (steps per run, rounds counted) for (quick, full); a full run has one warm-up round more.
_SIZES = {"lightning": ((30, 1), (300, 15)), "huggingface": ((20, 1), (200, 15))}
_SKIP = 5  # first intervals of each run (writer creation, first flush): not counted


# --------------------------------------------------------------------- Lightning
def _lightning_run(variant: str, logdir: str, steps: int) -> list[float]:
    import lightning.pytorch as pl

    starts: list[float] = []

    class StepClock(pl.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            starts.append(time.perf_counter())

    if variant == "no logger":
        logger: Any = False
    elif variant == "stock":
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(logdir, name="", version=0)
    else:
        from asyncsummary.integrations.lightning import AsyncTensorBoardLogger

        logger = AsyncTensorBoardLogger(logdir, name="", version=0)
    tiny_models.lightning_fit(logger, steps, callbacks=[StepClock()], validate=False)
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


# ------------------------------------------------------------------ Hugging Face
def _huggingface_run(variant: str, logdir: str, steps: int) -> list[float]:
    from transformers import TrainerCallback

    starts: list[float] = []

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            starts.append(time.perf_counter())

    callbacks: list[Any] = [StepClock()]
    if variant == "stock":
        from transformers.integrations import TensorBoardCallback

        stock = TensorBoardCallback()
        stock.logging_dir = logdir
        callbacks.append(stock)
    elif variant == "asyncsummary":
        from asyncsummary.integrations.huggingface import AsyncTensorBoardCallback

        callbacks.append(AsyncTensorBoardCallback(logging_dir=logdir))
    with temp_logdir("asb-hf-out-") as output_dir:
        trainer = tiny_models.hf_trainer(output_dir, callbacks, steps)
        with _quiet_stdout():  # HF prints every log line
            trainer.train()
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


_RUNS: dict[str, Callable[[str, str, int], list[float]]] = {
    "lightning": _lightning_run,
    "huggingface": _huggingface_run,
}


# ------------------------------------------------------------------------ driver
def _compare(framework: str, parent: str | None, quick: bool) -> dict[str, Any]:
    steps, rounds = _SIZES[framework][0 if quick else 1]

    def run_one(variant: str, logdir: str) -> list[float]:
        return _RUNS[framework](variant, logdir, steps)[_SKIP:]

    # Round 0 warms up (imports, first writers) and is not counted; a quick run (a smoke
    # run, its numbers mean little) skips it.
    samples, medians = interleaved_runs(
        VARIANTS, rounds, 0 if quick else 1, run_one, "asb-fw-", parent
    )
    variants: dict[str, Any] = {}
    for variant in VARIANTS:
        stats = summarize([s * 1e6 for s in samples[variant]])
        # Paired: each round's run against stock's run of the same round (the machine's
        # speed drifts between rounds more than between a round's runs).
        paired = [ratio(m, s) for m, s in zip(medians[variant], medians["stock"], strict=True)]
        variants[variant] = {
            "step_us_p50": statistics.median(medians[variant]) * 1e6,  # of each run's median
            "step_us_p99": stats["p99"],
            "step_us_mean": stats["mean"],
            "n": stats["n"],
            "vs_stock": statistics.median(paired),
            "vs_stock_per_round": paired,
        }
    return {"steps": steps, "rounds": rounds, "variants": variants}


def run(quick: bool = False) -> dict[str, Any]:
    """Both frameworks, local disk then 5 ms FUSE storage."""
    quiet_tensorflow()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result: dict[str, Any] = on_each_storage(
            FRAMEWORKS, lambda framework, parent: _compare(framework, parent, quick)
        )
    finally:
        torch.set_num_threads(threads)
    result["targets"] = TARGETS
    return result


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        "framework step time (p50: median of runs' medians; mean, p99: of all steps;"
        " vs stock: median over rounds of run median / stock's run median)"
    ]
    for storage in STORAGES:
        for framework, part in result[storage].items():
            if "not run" in part:
                lines.append(f"  {framework}, {storage}: not run: {part['not run']}")
                continue
            lines.append(
                f"  {framework}, {storage} ({part['steps']} steps x {part['rounds']} rounds):"
            )
            for variant, v in part["variants"].items():
                lines.append(
                    f"    {variant:<13} p50 {v['step_us_p50']:7.0f} us  mean {v['step_us_mean']:7.0f} us"
                    f"  p99 {v['step_us_p99']:7.0f} us  vs stock {v['vs_stock']:.2f}"
                )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return command_line(__doc__ or "", run, table, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
