"""Bytes uploaded and time per flush against run length on S3: asyncsummary vs tensorboardX.

Both writers log the same workload to one loopback S3 server (moto in server mode
behind a byte-counting proxy, :mod:`tests.remote_servers`): ``flushes`` rounds of
400 scalar events (about 20 KB), each followed by ``flush()``. For every round we
record the bytes the server received (HTTP included, counted on the wire) and how
long ``flush()`` took. asyncsummary uploads each flush's new bytes once, as one
segment object, so the total is linear in the run's length; tensorboardX's S3
writer re-uploads its whole event file on every flush, so its total is quadratic
(and it keeps the whole file in memory).

    python -m benchmarks.remote_upload [--quick] [--flushes N] [--out DIR]

Writes ``DIR/remote_upload.json`` (every per-flush number) and
``DIR/remote_upload.png`` (bytes per flush, cumulative bytes, seconds per flush).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # run as a script: the repository's tests package has the server
    sys.path.insert(0, _ROOT)

from benchmarks import jsonable, ratio, summarize  # noqa: E402

__all__ = ["main", "run"]

DEFAULT_OUT = os.path.join(_ROOT, "benchmarks", "results")
BUCKET = "asyncsummary-bench"
TAGS = 20
STEPS_PER_FLUSH = 20  # 20 tags x 20 steps = 400 scalar events, about 20 KB framed


def _workload(add: Callable[[str, float, int], None], flush: Callable[[], None], flushes: int,
              counter: Callable[[], int]) -> dict[str, list[float]]:
    """Run the rounds; bytes the server got per round and seconds per flush()."""
    sent, seconds = [], []
    step = 0
    before = counter()
    for _ in range(flushes):
        for _ in range(STEPS_PER_FLUSH):
            for tag in range(TAGS):
                add(f"metrics/{tag:02d}", float(step % 1000), step)
            step += 1
        start = time.perf_counter()
        flush()
        seconds.append(time.perf_counter() - start)
        now = counter()
        sent.append(now - before)  # the round's bytes, the writer's own timer flushes included
        before = now
    return {"bytes_per_flush": sent, "seconds_per_flush": seconds}


def _stored(server: Any, prefix: str) -> int:
    return sum(len(body) for body in server.objects(BUCKET, prefix + "/").values())


def _ours(server: Any, flushes: int) -> dict[str, Any]:
    from asyncsummary import AsyncSummaryWriter
    from asyncsummary.remote import RemoteSinkFactory

    prefix = f"asyncsummary-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as spool:
        factory = RemoteSinkFactory(server.storage_options(), spool_dir=spool)
        writer = AsyncSummaryWriter(f"s3://{BUCKET}/{prefix}", flush_secs=120, sink_factory=factory)
        writer.add_scalar("warm-up", 0.0, 0)
        writer.flush()  # connect and upload the header before counting
        result = _workload(writer.add_scalar, writer.flush, flushes, lambda: server.proxy.bytes_in)
        writer.close()
    result["stored_bytes"] = _stored(server, prefix)
    result["objects"] = len(server.objects(BUCKET, prefix + "/"))
    return result


def _tensorboardx(server: Any, flushes: int) -> dict[str, Any]:
    from tensorboardX import SummaryWriter

    prefix = f"tensorboardx-{uuid.uuid4().hex[:8]}"
    writer = SummaryWriter(f"s3://{BUCKET}/{prefix}", flush_secs=120)
    writer.add_scalar("warm-up", 0.0, 0)
    writer.flush()
    result = _workload(writer.add_scalar, writer.flush, flushes, lambda: server.proxy.bytes_in)
    writer.close()
    result["stored_bytes"] = _stored(server, prefix)
    result["objects"] = len(server.objects(BUCKET, prefix + "/"))
    return result


def run(quick: bool = False, flushes: int | None = None) -> dict[str, Any]:
    """Both writers on one server; raw numbers, JSON-ready."""
    from tests.remote_servers import S3Server

    flushes = flushes or (40 if quick else 200)
    with S3Server() as server:
        for name, value in server.env().items():  # tensorboardX's boto3 reads S3_ENDPOINT
            os.environ.setdefault(name, value)
        os.environ["S3_ENDPOINT"] = server.endpoint
        server.create_bucket(BUCKET)
        results = {"asyncsummary": _ours(server, flushes), "tensorboardX": _tensorboardx(server, flushes)}
    for result in results.values():
        total = sum(result["bytes_per_flush"])
        result["sent_bytes"] = total
        result["sent_over_stored"] = ratio(total, result["stored_bytes"])
        result["flush_seconds"] = summarize(result["seconds_per_flush"])
        last = result["bytes_per_flush"][-10:]
        result["last_10_flushes_mean_bytes"] = sum(last) / len(last)
    return {
        "workload": {"flushes": flushes, "events_per_flush": TAGS * STEPS_PER_FLUSH,
                     "server": "moto S3 (server mode) on loopback, bytes counted at a proxy"},
        **results,
    }


def table(result: dict[str, Any]) -> list[str]:
    lines = [f"remote upload: {result['workload']['flushes']} flushes of "
             f"{result['workload']['events_per_flush']} scalar events to S3 (loopback)",
             f"{'writer':14} {'stored':>12} {'sent':>14} {'sent/stored':>12} "
             f"{'last flush B':>13} {'flush p50 ms':>13} {'flush max ms':>13}"]
    for name in ("asyncsummary", "tensorboardX"):
        r = result[name]
        lines.append(
            f"{name:14} {r['stored_bytes']:>12,} {r['sent_bytes']:>14,} {r['sent_over_stored']:>12.2f} "
            f"{r['bytes_per_flush'][-1]:>13,} {r['flush_seconds']['p50'] * 1e3:>13.1f} "
            f"{r['flush_seconds']['max'] * 1e3:>13.1f}"
        )
    return lines


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, color in (("asyncsummary", "tab:blue"), ("tensorboardX", "tab:red")):
        r = result[name]
        rounds = range(1, len(r["bytes_per_flush"]) + 1)
        cumulative, total = [], 0
        for sent in r["bytes_per_flush"]:
            total += sent
            cumulative.append(total / 1e6)
        axes[0].plot(rounds, [b / 1e3 for b in r["bytes_per_flush"]], color=color, label=name)
        axes[1].plot(rounds, cumulative, color=color, label=f"{name} ({r['sent_over_stored']:.1f}x stored)")
        axes[2].plot(rounds, [s * 1e3 for s in r["seconds_per_flush"]], color=color, label=name)
    axes[0].set(title="bytes sent per flush", xlabel="flush #", ylabel="KB (HTTP included)")
    axes[1].set(title="total bytes sent", xlabel="flush # (run length)", ylabel="MB")
    axes[2].set(title="time of flush()", xlabel="flush #", ylabel="ms")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{result['workload']['events_per_flush']} scalar events (~20 KB) per flush, "
                 "S3 on loopback: linear vs quadratic upload")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 flushes instead of 200")
    parser.add_argument("--flushes", type=int, default=None, help="number of flushes")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder of the JSON and PNG files")
    args = parser.parse_args(argv)
    result = run(args.quick, args.flushes)
    print("\n".join(table(result)))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "remote_upload.json"), "w") as f:
        json.dump(jsonable(result), f)
    plot(result, os.path.join(args.out, "remote_upload.png"))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
