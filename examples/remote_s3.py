"""Log a training run to ``s3://`` (or any fsspec URL) and read it back.

The writer takes the URL as its logdir; each flush becomes one new object (a
segment) under it, so uploads stay proportional to what is logged, and TensorBoard
reads the segments in order. Events are staged in a local spool until the store
confirms them, so an outage (or a killed process) loses nothing that reached the
spool; the next writer on the same logdir uploads what a killed one left.

Against a real bucket (credentials from the usual AWS environment)::

    python examples/remote_s3.py s3://my-bucket/runs/demo
    tensorboard --logdir s3://my-bucket/runs      # needs boto3; see the README

Without any cloud account, against a throwaway S3 server on loopback (moto)::

    python examples/remote_s3.py --local-server

The same code writes ``gs://bucket/run`` (gcsfs), ``az://container/run`` (adlfs) or
``memory://run``; ``--storage-options '{"endpoint_url": "..."}'`` goes to fsspec.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

from asyncsummary import AsyncSummaryWriter
from asyncsummary.remote import event_objects, read_events


@contextlib.contextmanager
def local_s3_server() -> Iterator[dict[str, Any]]:
    """A moto S3 server on a free loopback port, with a bucket; the options to reach it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    for name, value in {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="demo-bucket")
        yield {"endpoint_url": endpoint}
    finally:
        server.stop()


def train(logdir: str, storage_options: dict[str, Any] | None, epochs: int, steps: int) -> None:
    with AsyncSummaryWriter(logdir, storage_options=storage_options) as writer:
        for epoch in range(epochs):
            for i in range(steps):
                step = epoch * steps + i
                writer.add_scalar("train/loss", math.exp(-step / 200) + 0.01 * math.sin(step), step)
            writer.add_scalar("train/epoch", epoch, (epoch + 1) * steps)
            writer.flush()  # returns once the epoch's events are in the store
            print(f"epoch {epoch}: {len(event_objects(logdir, storage_options))} objects in {logdir}")
        print(writer.stats())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", nargs="?", help="e.g. s3://bucket/runs/demo")
    parser.add_argument("--local-server", action="store_true", help="start a moto S3 server on loopback")
    parser.add_argument("--storage-options", default=None, help="JSON object passed to fsspec")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    options = json.loads(args.storage_options) if args.storage_options else None
    with contextlib.ExitStack() as stack:
        if args.local_server:
            options = {**(options or {}), **stack.enter_context(local_s3_server())}
            logdir = args.logdir or "s3://demo-bucket/runs/demo"
        elif args.logdir:
            logdir = args.logdir
        else:
            parser.error("give a logdir URL, or --local-server")
        train(logdir, options, args.epochs, args.steps)
        losses = [(e.step, v.simple_value) for e in read_events(logdir, options)
                  for v in e.summary.value if v.tag == "train/loss"]
        print(f"read back {len(losses)} train/loss values; last: step {losses[-1][0]} = {losses[-1][1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
