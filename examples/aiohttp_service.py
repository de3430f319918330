"""An aiohttp service that logs every request's latency to TensorBoard, and loses none.

Each request is timed by a middleware and logged as scalars through one
``AsyncSummaryWriter``; ``add_scalar`` only queues the value, so a handler never waits
for the disk. The writer lives exactly as long as the app: it is opened in the app's
startup and closed with ``await writer.aclose()`` in its cleanup (``cleanup_ctx``),
which is where aiohttp's graceful shutdown (SIGINT, SIGTERM) ends up. On top of that,
``install_shutdown_handlers()`` flushes every writer the moment SIGTERM arrives, so the
metrics are on disk even if the graceful shutdown is then cut short (a scheduler's
SIGKILL at the end of its grace period, a request that never finishes).

Run it::

    python examples/aiohttp_service.py --port 8080 --logdir runs/service
    curl http://127.0.0.1:8080/hello
    tensorboard --logdir runs

Scalars (step = the request's number, from 1):
    ``http/latency_ms``  time spent in the handler, per request
    ``http/requests``    requests served so far
    ``http/errors``      responses with a status >= 400 so far

Every response carries its step in an ``X-Request-Step`` header (tests use it).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from asyncsummary import AsyncSummaryError, AsyncSummaryWriter, install_shutdown_handlers

WRITER = web.AppKey("writer", AsyncSummaryWriter)
COUNTERS = web.AppKey("counters", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def writer_context(
    logdir: str, flush_secs: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The writer's lifespan: open on startup, ``await aclose()`` on cleanup."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        writer = AsyncSummaryWriter(logdir, flush_secs=flush_secs)
        app[WRITER] = writer
        # aiohttp installed its own SIGINT/SIGTERM handlers before startup; installing
        # here chains onto them: flush first, then aiohttp's graceful shutdown.
        install_shutdown_handlers()
        try:
            yield
        finally:
            await writer.aclose()

    return context


@web.middleware
async def record_latency(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time the handler and queue its scalars; never waits for storage."""
    counters = request.app[COUNTERS]
    counters["requests"] += 1
    step = counters["requests"]
    status = 500  # unless the handler says otherwise
    start = time.perf_counter()
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-Step"] = str(step)
        return response
    except web.HTTPException as exc:  # 404s and friends are responses too
        status = exc.status
        exc.headers["X-Request-Step"] = str(step)
        raise
    finally:
        latency_ms = (time.perf_counter() - start) * 1e3
        if status >= 400:
            counters["errors"] += 1
        log_request(request.app, step, latency_ms, counters["errors"])


def log_request(app: web.Application, step: int, latency_ms: float, errors: int) -> None:
    """Queue one request's scalars. A storage error is logged, never turned into a 500."""
    writer = app[WRITER]
    try:
        writer.add_scalar("http/latency_ms", latency_ms, step)
        writer.add_scalar("http/requests", step, step)
        writer.add_scalar("http/errors", errors, step)
    except AsyncSummaryError as exc:  # e.g. disk full, reported on the next add
        app.logger.warning("metrics not written: %s", exc)


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello\n")


async def work(request: web.Request) -> web.Response:
    """Simulated I/O-bound work: ``/work?ms=20`` waits 20 ms without blocking the loop."""
    ms = float(request.query.get("ms", "10"))
    await asyncio.sleep(ms / 1e3)
    return web.json_response({"slept_ms": ms})


def make_app(logdir: str, flush_secs: float = 2.0) -> web.Application:
    app = web.Application(middlewares=[record_latency])
    app[COUNTERS] = {"requests": 0, "errors": 0}
    app.cleanup_ctx.append(writer_context(logdir, flush_secs))
    app.router.add_get("/hello", hello)
    app.router.add_get("/work", work)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so the bound port (even for ``--port 0``) is known up front."""
    return socket.create_server((host, port))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--logdir", default="runs/service")
    parser.add_argument("--flush-secs", type=float, default=2.0)
    args = parser.parse_args(argv)

    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]

    def ready(_message: str) -> None:
        # One parseable line, printed once the server accepts requests.
        print(f"serving on http://{args.host}:{port}/ port={port}", flush=True)

    web.run_app(make_app(args.logdir, args.flush_secs), sock=sock, print=ready)
    print("stopped; metrics flushed and writer closed", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
