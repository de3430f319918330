"""Keras batch time with a TensorBoard callback: none, Keras's own, asyncsummary's.

Keras's ``TensorBoard`` callback with ``update_freq`` set flushes TensorFlow's summary
writer on the training thread before every batch and runs eager TF ops for every
logged value, so each batch waits for the storage. Three variants fit the same tiny
model (:func:`benchmarks.tiny_models.keras_model`, which the Keras tests fit too:
random data, batch 32, one epoch) on Keras's TensorFlow backend:

* **no callback**: the floor;
* **keras**: ``keras.callbacks.TensorBoard``;
* **asyncsummary**: ``asyncsummary.keras.TensorBoard``, same arguments.

Settings: ``update_freq=1``; ``update_freq=1, histogram_freq=1`` (weights at the
epoch's end; its write images too); ``update_freq="epoch"`` (Keras's default).
Storage: the local disk, and a FUSE file system whose every write sleeps 5 ms
(:mod:`benchmarks.fuse_slowfs`; where it cannot be mounted the result says ``not run``
and why). A batch's time is the interval between two successive
``on_train_batch_begin`` calls, so it includes the callbacks of the batch before.
Variants alternate within each round, rounds repeat (the first warms up, not
counted), TensorFlow runs one intra-op and one inter-op thread (the machine is
shared; fewer threads, less noise). Reported per variant: median, mean and p99
batch time, and ``vs_none``: per round, the run's median over the no-callback run's
median of the same round; the median of those. The issue's target with
``update_freq=1``: asyncsummary <= 1.15 of no callback on both storages (Keras's own
was 2.0 and 7.5 when the issue was filed).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from . import (
    STORAGES,
    command_line,
    interleaved_runs,
    on_each_storage,
    quiet_tensorflow,
    ratio,
    summarize,
    tiny_models,
)

__all__ = ["SETTINGS", "VARIANTS", "main", "run"]

VARIANTS = ("no callback", "keras", "asyncsummary")
SETTINGS: dict[str, dict[str, Any]] = {
    "update_freq=1": {"update_freq": 1},
    "update_freq=1, histogram_freq=1": {
        "update_freq": 1,
        "histogram_freq": 1,
        "write_images": True,
    },
    'update_freq="epoch"': {"update_freq": "epoch"},
}
TARGET = 1.15  # asyncsummary / no callback, update_freq=1, both storages
BATCH = 32

# (batches per run, rounds counted) for (quick, full); a full run has one warm-up round more.
_SIZES = ((40, 1), (600, 5))
_SKIP = 5  # first intervals of each run (the train function's tracing): not counted


def _fit(variant: str, options: dict[str, Any], logdir: str, batches: int) -> list[float]:
    import keras

    from asyncsummary.keras import TensorBoard

    starts: list[float] = []

    class BatchClock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            starts.append(time.perf_counter())

    callbacks: list[Any] = [BatchClock()]
    if variant == "keras":
        callbacks.append(keras.callbacks.TensorBoard(logdir, **options))
    elif variant == "asyncsummary":
        callbacks.append(TensorBoard(logdir, **options))
    model = tiny_models.keras_model()
    x, y = tiny_models.keras_data(rows=batches * BATCH)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=callbacks, verbose=0)
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def _compare(options: dict[str, Any], parent: str | None, quick: bool) -> dict[str, Any]:
    batches, rounds = _SIZES[0 if quick else 1]

    def run_one(variant: str, logdir: str) -> list[float]:
        return _fit(variant, options, logdir, batches)[_SKIP:]

    # A quick run is a smoke run (its numbers mean little): no warm-up round.
    samples, medians = interleaved_runs(
        VARIANTS, rounds, 0 if quick else 1, run_one, "asb-keras-", parent
    )
    floor_p99 = summarize(samples["no callback"])["p99"] * 1e6
    variants: dict[str, Any] = {}
    for variant in VARIANTS:
        stats = summarize([s * 1e6 for s in samples[variant]])
        # Paired: each round's run against the no-callback run of the same round.
        paired = [
            ratio(m, n) for m, n in zip(medians[variant], medians["no callback"], strict=True)
        ]
        variants[variant] = {
            "batch_us_p50": statistics.median(medians[variant]) * 1e6,  # of each run's median
            "batch_us_p99": stats["p99"],
            "batch_us_mean": stats["mean"],
            "n": stats["n"],
            "vs_none": statistics.median(paired),
            "vs_none_per_round": paired,
            "p99_vs_none": ratio(stats["p99"], floor_p99),
        }
    return {"batches": batches, "rounds": rounds, "variants": variants}


def run(quick: bool = False) -> dict[str, Any]:
    """Every setting, local disk then 5 ms FUSE storage."""
    quiet_tensorflow()
    import tensorflow as tf

    try:  # before TensorFlow's first op; a second run in one process keeps the first's
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    result: dict[str, Any] = on_each_storage(
        list(SETTINGS), lambda setting, parent: _compare(SETTINGS[setting], parent, quick)
    )
    result["target"] = TARGET
    return result


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        "Keras batch time (p50: median of runs' medians; mean, p99: of all batches;"
        " vs none: median over rounds of run median / no-callback run median)"
    ]
    for storage in STORAGES:
        for setting, part in result[storage].items():
            if "not run" in part:
                lines.append(f"  {setting}, {storage}: not run: {part['not run']}")
                continue
            lines.append(
                f"  {setting}, {storage} ({part['batches']} batches x {part['rounds']} rounds):"
            )
            for variant, v in part["variants"].items():
                lines.append(
                    f"    {variant:<12} p50 {v['batch_us_p50']:7.0f} us  mean {v['batch_us_mean']:7.0f} us"
                    f"  p99 {v['batch_us_p99']:7.0f} us  vs none {v['vs_none']:.2f}"
                    f"  p99 vs none {v['p99_vs_none']:.2f}"
                )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return command_line(__doc__ or "", run, table, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
