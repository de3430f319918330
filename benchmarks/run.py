"""``python -m benchmarks``: every benchmark in one run, one table, JSON and plots.

Runs, in this order: writer caller cost and throughput (:mod:`.writer_cost`), hook
overhead (:mod:`.hook_overhead`), slow storage (:mod:`.slow_storage`, FUSE included
where it can be mounted), memory under a stalled sink (:mod:`.memory`), then the
benchmarks other modules add when present (:data:`EXTRA`: remote upload, torch-style
writer, Python-bound trainer loop, Lightning and Hugging Face step time, Keras batch
time, a CPU torch training loop on every core), each through its ``main(argv)``. A
present module that fails fails the run.

Writes into ``--out`` (default ``benchmarks/results/``):

* ``results.json``: every raw number, with the date, the machine and the command;
* ``step_times.png``: the distribution of training-step times per hook variant, one
  panel per setting (fast disk, slow storage, FUSE);
* ``caller_cost.png``: the distribution of the caller's µs per ``add_summary``.

``--quick`` makes every benchmark short (a smoke run: the numbers mean little).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
from typing import Any

from . import jsonable, quiet_tensorflow

__all__ = ["EXTRA", "main"]

#: Benchmarks written elsewhere, run when their module exists: name -> module.
EXTRA = {
    "remote_upload": "benchmarks.remote_upload",
    "torch_writer": "benchmarks.torch_writer",
    "trainer_loop": "benchmarks.trainer_loop",
    "frameworks": "benchmarks.frameworks",
    "keras_callback": "benchmarks.keras_callback",
    "cpu_training_loop": "benchmarks.cpu_training_loop",
}

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for name in ("asyncsummary", "tensorflow", "tensorboard", "tensorboardX", "google_crc32c", "uvloop"):
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            versions[name] = "not installed"
    from asyncsummary import loop_implementation

    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loop": loop_implementation(),
        "versions": versions,
    }


def _run_extra(name: str, module_name: str, quick: bool) -> dict[str, Any] | None:
    if importlib.util.find_spec(module_name) is None:
        return None
    print(f"[benchmarks] {name} ...", flush=True)
    module = importlib.import_module(module_name)
    returned = module.main(["--quick"] if quick else [])
    if isinstance(returned, int) and not isinstance(returned, bool) and returned != 0:
        raise RuntimeError(f"benchmark {name} returned {returned}")
    return returned if isinstance(returned, dict) else {"ran": True}


# ------------------------------------------------------------------------ plots
def _ecdf_panel(ax: Any, title: str, samples: dict[str, list[float]], unit: str) -> None:
    for name, values in samples.items():
        values = sorted(v for v in values if v > 0 and math.isfinite(v))
        if not values:
            continue
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlabel(unit)
    ax.set_ylabel("fraction of samples ≤ x")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _plot(results: dict[str, Any], out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, dict[str, list[float]]]] = []
    for key, part in results.get("hook_overhead", {}).items():
        panels.append((f"hook, {key}, local disk", part["samples"]))
    for how, parts in (("injected", results.get("slow_storage", {}).get("injected", {})),
                       ("FUSE", results.get("slow_storage", {}).get("fuse", {}))):
        for delay, part in parts.items():
            if "samples" in part:
                panels.append((f"hook, save_steps=1, {delay} per write ({how})", part["samples"]))
    written = []
    if panels:
        cols = 2
        rows = (len(panels) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(13, 4.2 * rows), squeeze=False)
        for ax, (title, samples) in zip(axes.flat, panels, strict=False):
            _ecdf_panel(ax, title, samples, "step time (µs)")
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.suptitle("Training step time per hook variant (ECDF; further left is faster)")
        fig.tight_layout()
        path = os.path.join(out, "step_times.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    writer = results.get("writer_cost")
    if writer:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), squeeze=False)
        for ax, size in zip(axes.flat, ("small", "large"), strict=True):
            samples = {name: w["chunk_us"] for name, w in writer[size]["writers"].items()}
            _ecdf_panel(ax, f"caller cost, {size} events ({writer[size]['event_bytes']} B)", samples, "µs per add")
        fig.tight_layout()
        path = os.path.join(out, "caller_cost.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


# -------------------------------------------------------------------- the run
def _summary_table(results: dict[str, Any]) -> list[str]:
    """The headline ratios, one line each."""
    lines = ["", "== summary (ratios within this run) =="]
    writer = results.get("writer_cost")
    if writer:
        small = writer["small"]
        ours = small["writers"]["asyncsummary"]
        lines.append(
            f"caller cost, small events: asyncsummary {ours['caller_us_p50']:.2f} µs per add (p50), "
            + ", ".join(
                f"{name} {w['caller_us_p50'] / ours['caller_us_p50']:.0f}x"
                for name, w in small["writers"].items() if name != "asyncsummary"
            )
        )
        lines.append(
            f"throughput, small events: asyncsummary {ours['events_per_s']:,.0f}/s = "
            f"{ours['vs_framing_alone']:.2f} of framing alone ({small['framing_alone_events_per_s']:,.0f}/s); "
            + ", ".join(
                f"{name} {w['events_per_s'] / ours['events_per_s']:.2f}x"
                for name, w in small["writers"].items() if name != "asyncsummary"
            )
        )
    for key, part in results.get("hook_overhead", {}).items():
        for name in ("TF SummarySaverHook", "async exact", "async exact_step=False"):
            v = part["variants"][name]
            lines.append(
                f"hook {key}, {name}: +{v['added_p50']:.0f} µs p50 / +{v['added_p99']:.0f} µs p99 a step; "
                f"step {v['vs_floor_step_p50']:.2f}x / {v['vs_floor_step_p99']:.2f}x of {v['floor']}"
            )
    slow = results.get("slow_storage", {})
    for how in ("injected", "fuse"):
        for delay, part in slow.get(how, {}).items():
            if "not run" in part:
                lines.append(f"slow storage {delay} ({how}): not run: {part['not run']}")
                continue
            cells = []
            for name in ("TF SummarySaverHook", "async exact", "async exact_step=False"):
                v = part["variants"][name]
                cells.append(f"{name} {v['vs_floor_step_p50']:.2f}x / {v['vs_floor_step_p99']:.2f}x")
            lines.append(f"slow storage {delay} ({how}), step p50 / p99 vs the floor: " + ", ".join(cells))
    for key, r in results.get("memory", {}).items():
        lines.append(
            f"memory {key}: RSS growth {r['rss_growth_vs_bound']:.2f}x of max_pending_bytes, "
            f"peak pending {r['peak_pending_vs_bound']:.2f}x; bound held: {r['bound_held']}"
        )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run; the numbers mean little")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"folder for results.json and plots (default {DEFAULT_OUT})")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME",
        choices=["writer_cost", "hook_overhead", "slow_storage", "memory", *EXTRA],
        help="run only these benchmarks",
    )
    args = parser.parse_args(argv)
    quiet_tensorflow()
    from . import hook_overhead, memory, slow_storage, writer_cost

    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "machine": _machine(),
    }
    ours = {"writer_cost": writer_cost, "hook_overhead": hook_overhead, "slow_storage": slow_storage, "memory": memory}
    for name, module in ours.items():
        if args.only and name not in args.only:
            continue
        t0 = time.monotonic()
        print(f"[benchmarks] {name} ...", flush=True)
        results[name] = module.run(args.quick)  # type: ignore[attr-defined]
        print("\n".join(module.table(results[name])), flush=True)  # type: ignore[attr-defined]
        results.setdefault("seconds", {})[name] = time.monotonic() - t0
    for name, module_name in EXTRA.items():
        if args.only and name not in args.only:
            continue
        t0 = time.monotonic()
        extra = _run_extra(name, module_name, args.quick)
        if extra is not None:
            results[name] = extra
            results.setdefault("seconds", {})[name] = time.monotonic() - t0
    results["seconds_total"] = time.monotonic() - started
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(jsonable(results), f)
    plots = _plot(results, args.out)
    print("\n".join(_summary_table(results)))
    print(f"\nmachine: {results['machine']['cores']} cores, {results['machine']['cpu']}; "
          f"{results['seconds_total']:.0f} s in all")
    print(f"raw numbers: {os.path.join(args.out, 'results.json')}; plots: {', '.join(plots) or 'none'}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
