"""What a Python-bound trainer pays for its logging, per writer, in one run.

Three measurements, each writer in a child process of its own (so that no writer's
threads run while another is measured, and so that the pure-Python encoder can be
selected with ``ASYNCSUMMARY_PURE_PYTHON=1``, which is read at import):

(a) **Trainer loop.** Each step does about :data:`WORK_US` µs of pure-Python work (the
    same calibrated loop for every writer) and then logs :data:`VALUES` scalars
    (Python floats) with ``add_scalar(tag, value, step)``. Writers: none (the bare
    loop, no logging statement at all), ``asyncsummary.SummaryWriter`` with the native
    encoder and with the pure-Python one, ``torch.utils.tensorboard.SummaryWriter``,
    ``tensorboardX.SummaryWriter``, TF2's ``tf.summary.scalar`` (eager, default file
    writer) and TF1's ``FileWriter.add_summary`` of a one-value ``Summary`` per value.
    Reported: step p50 / p99 / mean (µs) and their ratios to the bare loop's, the µs
    added per logged value ((mean step - bare mean step) / VALUES), and how long
    ``close()`` took after the last step (the backlog a writer still had to write).
(b) **Burst.** ``add_summary(serialized scalar Summary, step)`` called
    :data:`BURST` times back to back: the mean µs per add over the whole burst (every
    wait included), and the p50 / p99 of each add timed alone (the cost of reading
    the clock subtracted). asyncsummary (both encoders) vs TF's ``FileWriter``.
(c) **End to end.** Events/s from the first add to the return of ``close()``, small
    scalar events and 1 MiB images, through :func:`benchmarks.writer_cost.timed_pass`;
    with the pure-Python framing loop of :func:`benchmarks.writer_cost.framing_alone`
    (no I/O, no threads) as the reference, measured in the parent each round.

Rounds repeat with the children in a rotated order; every figure is the median over
rounds. The machine is usually shared and noisy: compare ratios within one run.
"""

from __future__ import annotations

import concurrent.futures
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

from . import command_line, quiet_tensorflow, ratio, scalar_summary_bytes, summarize

__all__ = ["TARGETS", "VARIANTS", "main", "run"]

WORK_US = 45.0  # pure-Python work per step
VALUES = 50  # scalars logged per step
WARMUP = 100  # first steps of each loop not counted (file creation, caches)
BURST = 50_000

#: child process -> (environment, the trainer-loop writers it runs, whether it runs b/c)
VARIANTS: dict[str, tuple[dict[str, str], tuple[str, ...], str | None]] = {
    "none": ({}, ("none",), None),
    "asyncsummary native": ({}, ("asyncsummary native",), "asyncsummary"),
    "asyncsummary python": (
        {"ASYNCSUMMARY_PURE_PYTHON": "1"},
        ("asyncsummary python",),
        "asyncsummary",
    ),
    "torch": ({}, ("torch",), None),
    "tensorboardX": ({}, ("tensorboardX",), None),
    "tf": ({}, ("tf.summary", "tf FileWriter"), "tf"),
}

#: The issue's targets (same run, this machine).
TARGETS = {
    "added_us_per_value": 1.0,  # at most
    "p99_vs_bare": 2.0,  # at most
    "small_vs_tf": 5.0,  # at least
    "small_vs_framing_alone": 1.5,  # at least
    "large_vs_tf": 2.0,  # at least
    "burst_mean_tf_over_ours": 15.0,  # at least
}

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ the trainer
def _work(k: int) -> int:
    s = 0
    for i in range(k):
        s += i * i
    return s


def calibrate(target_us: float = WORK_US) -> int:
    """Iterations of :func:`_work` that take about ``target_us`` on an idle core.

    The fastest of several tries: on a shared machine the median is other people's
    load, which differs between the children that then run the loop.
    """
    k = 500
    for _ in range(6):
        tries = []
        for _ in range(15):
            t0 = time.perf_counter()
            for _ in range(20):
                _work(k)
            tries.append((time.perf_counter() - t0) / 20 * 1e6)
        k = max(10, round(k * target_us / min(tries)))
    return k


def _make_logger(name: str, logdir: str) -> tuple[Any, Any]:
    """``(log(tag, value, step), close())`` of a trainer-loop writer."""
    if name.startswith("asyncsummary"):
        import asyncsummary
        from asyncsummary import _encoder

        expected = name.split()[1]
        if _encoder.IMPLEMENTATION != expected:
            raise RuntimeError(f"{name}: the encoder is {_encoder.IMPLEMENTATION!r}")
        writer = asyncsummary.SummaryWriter(logdir)
        return writer.add_scalar, writer.close
    if name == "torch":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(logdir)
        return writer.add_scalar, writer.close
    if name == "tensorboardX":
        import tensorboardX

        writer = tensorboardX.SummaryWriter(logdir)
        return writer.add_scalar, writer.close
    quiet_tensorflow()
    import tensorflow as tf

    if name == "tf.summary":
        writer = tf.summary.create_file_writer(logdir)
        writer.set_as_default()
        scalar = tf.summary.scalar

        def log(tag: str, value: float, step: int) -> None:
            scalar(tag, value, step=step)

        return log, writer.close
    from tensorboard.compat.proto.summary_pb2 import Summary

    with tf.Graph().as_default():
        file_writer = tf.compat.v1.summary.FileWriter(logdir)
    add = file_writer.add_summary
    Value = Summary.Value

    def log_v1(tag: str, value: float, step: int) -> None:
        add(Summary(value=[Value(tag=tag, simple_value=value)]).SerializeToString(), step)

    return log_v1, file_writer.close


def trainer_loop(name: str, k: int, steps: int) -> dict[str, Any]:
    """Step times (µs) of the loop with writer ``name`` ("none": no logging)."""
    from . import temp_logdir

    tags = [f"metric/{j}" for j in range(VALUES)]
    with temp_logdir() as logdir:
        log, close = _make_logger(name, logdir) if name != "none" else (None, None)
        clock = time.perf_counter_ns
        times: list[int] = []
        append = times.append
        gc.collect()
        if log is None:
            for _ in range(steps + WARMUP):
                t0 = clock()
                _work(k)
                append(clock() - t0)
            close_ms = 0.0
        else:
            for step in range(steps + WARMUP):
                t0 = clock()
                s = _work(k)
                value = s * 1e-12
                for tag in tags:
                    log(tag, value, step)
                append(clock() - t0)
            t0 = clock()
            close()
            close_ms = (clock() - t0) / 1e6
    samples = [t / 1000 for t in times[WARMUP:]]
    return {"step_us": summarize(samples), "close_ms": close_ms, "steps": steps}


# ------------------------------------------------------------------ b and c
def _cost_writer(family: str) -> type:
    from . import writer_cost

    return (
        writer_cost.AsyncSummaryWriterUnderTest
        if family == "asyncsummary"
        else writer_cost.TFWriter
    )


def burst(family: str, n: int) -> dict[str, Any]:
    """Each of ``n`` back-to-back ``add_summary`` calls timed alone, and their mean."""
    from . import temp_logdir

    payloads = [scalar_summary_bytes("loss", float(i)) for i in range(n)]
    clock = time.perf_counter_ns
    empty = []
    for _ in range(2000):
        t0 = clock()
        empty.append(clock() - t0)
    clock_ns = sorted(empty)[len(empty) // 2]
    with temp_logdir() as logdir:
        writer = _cost_writer(family)(logdir)
        add = writer.add
        samples = [0] * n
        gc.collect()
        gc.disable()
        try:
            start = clock()
            for i in range(n):
                t0 = clock()
                add(payloads[i], i)
                samples[i] = clock() - t0
            total = clock() - start
            writer.close()
        finally:
            gc.enable()
    each = summarize([max(0, s - clock_ns) / 1000 for s in samples])
    return {
        "mean_us": total / n / 1000,
        "p50_us": each["p50"],
        "p99_us": each["p99"],
        "clock_ns": clock_ns,
    }


def end_to_end(family: str, small_n: int, large_n: int) -> dict[str, Any]:
    from . import image_summary_bytes, writer_cost

    small = [scalar_summary_bytes("loss", float(i)) for i in range(small_n)]
    large = [image_summary_bytes("image", 1 << 20)] * large_n
    make = _cost_writer(family)
    return {
        "small_events_per_s": writer_cost.timed_pass(make, small)["events_per_s"],
        "large_events_per_s": writer_cost.timed_pass(make, large)["events_per_s"],
    }


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One child process's share of a round (see :data:`VARIANTS`)."""
    out: dict[str, Any] = {"loops": {}}
    for name in spec["loops"]:
        steps = (
            spec["steps"]
            if name in ("none",) or name.startswith("asyncsummary")
            else spec["slow_steps"]
        )
        out["loops"][name] = trainer_loop(name, spec["k"], steps)
    if spec["family"]:
        out["burst"] = burst(spec["family"], spec["burst"])
        out["end_to_end"] = end_to_end(spec["family"], spec["small"], spec["large"])
    from asyncsummary import _encoder

    out["encoder"] = _encoder.IMPLEMENTATION
    return out


def _run_child(variant: str, spec: dict[str, Any]) -> dict[str, Any]:
    extra, loops, family = VARIANTS[variant]
    env = {k: v for k, v in os.environ.items() if k != "ASYNCSUMMARY_PURE_PYTHON"}
    env.update(extra, TF_CPP_MIN_LOG_LEVEL="2")
    spec = dict(spec, loops=loops, family=family)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.trainer_loop", "--child", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"trainer_loop child {variant!r} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ------------------------------------------------------------------ the run
def _median(values: list[float]) -> float:
    return summarize(values)["p50"]


def run(quick: bool = False) -> dict[str, Any]:
    from . import writer_cost

    rounds = 1 if quick else 3
    spec = {
        "k": calibrate(),
        "steps": 40 if quick else 3000,
        "slow_steps": 20 if quick else 600,
        "burst": 1000 if quick else BURST,
        "small": 1000 if quick else 100_000,
        "large": 1 if quick else 20,
    }
    per_round: list[dict[str, Any]] = []
    framing: list[float] = []
    names = list(VARIANTS)
    small_payloads = [scalar_summary_bytes("loss", float(i)) for i in range(spec["small"])]
    for r in range(rounds):
        framing.append(writer_cost.framing_alone(small_payloads))
        order = names[r % len(names) :] + names[: r % len(names)]
        if quick:  # a smoke run: the children at once (their numbers mean little anyway)
            with concurrent.futures.ThreadPoolExecutor(len(order)) as pool:
                futures = {variant: pool.submit(_run_child, variant, spec) for variant in order}
            results = {variant: future.result() for variant, future in futures.items()}
        else:  # one child at a time: no writer's threads run while another is measured
            results = {variant: _run_child(variant, spec) for variant in order}
        per_round.append(results)
    loops: dict[str, Any] = {}
    for variant, (_, loop_names, _) in VARIANTS.items():
        for name in loop_names:
            rows = [rd[variant]["loops"][name] for rd in per_round]
            loops[name] = {
                key: _median([row["step_us"][key] for row in rows])
                for key in ("p50", "p99", "mean")
            }
            loops[name]["close_ms"] = _median([row["close_ms"] for row in rows])
            loops[name]["steps"] = rows[0]["steps"]
            loops[name]["rounds"] = rows
    bare = loops["none"]
    for name, row in loops.items():
        for key in ("p50", "p99", "mean"):
            row[f"{key}_vs_bare"] = ratio(row[key], bare[key])
        row["added_us_per_value"] = (row["mean"] - bare["mean"]) / VALUES if name != "none" else 0.0
    costs: dict[str, Any] = {}
    for variant, label in (
        ("asyncsummary native", "asyncsummary native"),
        ("asyncsummary python", "asyncsummary python"),
        ("tf", "tf FileWriter"),
    ):
        rows = [rd[variant] for rd in per_round]
        costs[label] = {
            **{
                key: _median([row["burst"][key] for row in rows])
                for key in ("mean_us", "p50_us", "p99_us")
            },
            **{
                key: _median([row["end_to_end"][key] for row in rows])
                for key in ("small_events_per_s", "large_events_per_s")
            },
            "encoder": rows[0]["encoder"],
        }
    framing_rate = _median(framing)
    native, python, tf = (
        costs["asyncsummary native"],
        costs["asyncsummary python"],
        costs["tf FileWriter"],
    )
    ours = loops["asyncsummary native"]
    achieved = {
        "added_us_per_value": ours["added_us_per_value"],
        "p99_vs_bare": ours["p99_vs_bare"],
        "small_vs_tf": ratio(native["small_events_per_s"], tf["small_events_per_s"]),
        "small_vs_framing_alone": ratio(native["small_events_per_s"], framing_rate),
        "large_vs_tf": ratio(native["large_events_per_s"], tf["large_events_per_s"]),
        "burst_mean_tf_over_ours": ratio(tf["mean_us"], native["mean_us"]),
    }
    at_most = ("added_us_per_value", "p99_vs_bare")
    return {
        "spec": spec,
        "rounds": rounds,
        "loops": loops,
        "costs": costs,
        "framing_alone_events_per_s": framing_rate,
        "framing_alone_rounds": framing,
        "small_native_vs_python": ratio(native["small_events_per_s"], python["small_events_per_s"]),
        "targets": {
            key: {
                "target": target,
                "achieved": achieved[key],
                "met": bool(achieved[key] <= target if key in at_most else achieved[key] >= target),
            }
            for key, target in TARGETS.items()
        },
    }


def table(result: dict[str, Any]) -> list[str]:
    spec = result["spec"]
    lines = [
        f"trainer loop: ~{WORK_US:g} µs of Python work + {VALUES} add_scalar per step, "
        f"{spec['steps']} steps ({spec['slow_steps']} for the slow writers), "
        f"{result['rounds']} rounds, medians",
        f"  {'writer':<22}{'p50 µs':>9}{'p99 µs':>10}{'mean µs':>10}{'p50 x':>7}{'p99 x':>7}"
        f"{'mean x':>8}{'µs/value':>10}{'close ms':>10}",
    ]
    for name, row in result["loops"].items():
        lines.append(
            f"  {name:<22}{row['p50']:>9.1f}{row['p99']:>10.1f}{row['mean']:>10.1f}{row['p50_vs_bare']:>7.2f}"
            f"{row['p99_vs_bare']:>7.2f}{row['mean_vs_bare']:>8.2f}{row['added_us_per_value']:>10.2f}"
            f"{row['close_ms']:>10.1f}"
        )
    lines.append(
        f"add_summary burst ({spec['burst']}) and end to end (small: {spec['small']} events, "
        f"large: {spec['large']} x 1 MiB); framing alone {result['framing_alone_events_per_s']:,.0f} events/s"
    )
    lines.append(
        f"  {'writer':<22}{'mean µs':>9}{'p50 µs':>9}{'p99 µs':>9}{'small ev/s':>13}{'vs framing':>11}{'large ev/s':>12}"
    )
    for name, row in result["costs"].items():
        lines.append(
            f"  {name:<22}{row['mean_us']:>9.2f}{row['p50_us']:>9.2f}{row['p99_us']:>9.2f}"
            f"{row['small_events_per_s']:>13,.0f}"
            f"{ratio(row['small_events_per_s'], result['framing_alone_events_per_s']):>11.2f}"
            f"{row['large_events_per_s']:>12.1f}"
        )
    lines.append(
        "targets: "
        + ", ".join(
            f"{key} {t['achieved']:.2f} ({'<=' if key in ('added_us_per_value', 'p99_vs_bare') else '>='} "
            f"{t['target']:g}: {'met' if t['met'] else 'MISSED'})"
            for key, t in result["targets"].items()
        )
    )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(json.loads(argv[1]))))
        return {}
    return command_line(__doc__ or "", run, table, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
