"""Object-store servers on loopback for the remote tests and the upload benchmark.

* :class:`CountingProxy`: a TCP front on a free loopback port that forwards to an
  upstream port and counts the bytes each way. ``stop()`` closes its listener and
  every open connection (clients see a refused or reset connection, as when a
  server goes down); ``start()`` listens again on the same port.
* :class:`S3Server`: moto's S3 in server mode (in this process, state kept across
  restarts, as a real server keeps its disk) behind a counting proxy; clients use
  ``endpoint``. ``stop()``/``start()`` stop and restart both, on the same ports.
* :class:`GcsServer`: gcp-storage-emulator (in memory) on a free port.
* :class:`FtpServer`: pyftpdlib serving a temporary folder to one user with a
  password, on a free loopback port: a store whose URLs carry a host, a port and
  credentials (``ftp://user:pw@127.0.0.1:port/path``), read back from its folder.

Every wait is bounded; every server is stopped by its context manager.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

_WAIT = 15.0  # seconds any server gets to start or stop

# Credentials moto accepts; set for the process and handed to subprocesses.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, up: bool = True, timeout: float = _WAIT) -> None:
    """Wait (bounded) until something accepts on ``port`` (or, ``up=False``, nothing does)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                listening = True
        except OSError:
            listening = False
        if listening == up:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} still {'closed' if up else 'open'} after {timeout} s")
        time.sleep(0.02)  # polling a port with a deadline


class CountingProxy:
    """Forwards loopback TCP connections to ``upstream_port``, counting bytes."""

    def __init__(self, upstream_port: int, port: int = 0) -> None:
        self.upstream_port = upstream_port
        self.port = port
        self.bytes_in = 0  #: client -> server (requests)
        self.bytes_out = 0  #: server -> client (responses)
        self.connections = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(
            target=self._accept, args=(listener,), daemon=True, name="proxy-accept"
        )
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(_WAIT)

    def reset_counts(self) -> None:
        with self._lock:
            self.bytes_in = self.bytes_out = self.connections = 0

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
                self.connections += 1
            for src, dst, inbound in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(src, dst, inbound), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, inbound: bool) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                with self._lock:
                    if inbound:
                        self.bytes_in += len(data)
                    else:
                        self.bytes_out += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)
            src.close()


class S3Server:
    """moto S3 behind a :class:`CountingProxy`; use as a context manager."""

    def __init__(self) -> None:
        self._moto: Any = None
        self._backend_port = 0
        self.proxy: CountingProxy | None = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def endpoint(self) -> str:
        assert self.proxy is not None
        return f"http://127.0.0.1:{self.proxy.port}"

    @property
    def backend_endpoint(self) -> str:
        """moto itself, not counted (for test setup and checks)."""
        return f"http://127.0.0.1:{self._backend_port}"

    def env(self) -> dict[str, str]:
        """Environment for a client process: the usual AWS variables, and TensorBoard's."""
        return {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": self.endpoint, "S3_ENDPOINT": self.endpoint}

    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": "testing", "secret": "testing"}

    def __enter__(self) -> S3Server:
        for name, value in FAKE_AWS_ENV.items():
            self._saved_env[name] = os.environ.get(name)
            os.environ[name] = value
        try:
            self._start_moto()
            self.proxy = CountingProxy(self._backend_port)
            self.proxy.start()
            wait_listening(self.proxy.port)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.proxy is not None:
                self.proxy.stop()
            self._stop_moto()
        finally:
            for name, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def _start_moto(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request

        self._moto = ThreadedMotoServer(
            ip_address="127.0.0.1", port=self._backend_port, verbose=False
        )
        self._moto.start()
        self._backend_port = self._moto.get_host_and_port()[1]
        wait_listening(self._backend_port)

    def _stop_moto(self) -> None:
        moto, self._moto = self._moto, None
        if moto is not None:
            moto.stop()

    def stop(self) -> None:
        """The server goes down: the endpoint refuses connections, open ones are cut."""
        assert self.proxy is not None
        self.proxy.stop()
        self._stop_moto()
        wait_listening(self.proxy.port, up=False)

    def start(self) -> None:
        """The server comes back on the same endpoint, with the objects it had."""
        assert self.proxy is not None
        self._start_moto()
        self.proxy.start()
        wait_listening(self.proxy.port)

    def client(self) -> Any:
        """A boto3 client straight to moto (setup and checks, not counted)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.backend_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix``, key -> bytes, straight from moto."""
        client = self.client()
        out = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                out[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return out


def _make_emulator_uploads_binary_safe() -> None:
    """Work around a gcp-storage-emulator bug that corrupts uploaded objects.

    The emulator reads multipart uploads (gcsfs's simple uploads) with the ``email``
    parser, which drops a final CR or LF of the file content: an event file whose last
    CRC byte happens to be 0x0A or 0x0D (about one segment in 128) was stored one byte
    short, with a torn last record. Here the object's bytes are cut out of the body by
    the boundary, byte for byte, as GCS does; every other request is left to the
    emulator. (Found by the GCS test, reproduced by comparing sent and stored bytes.)
    """
    import json

    from gcp_storage_emulator import server

    if getattr(server, "_asyncsummary_binary_safe", False):
        return
    original = server._read_data

    def read_data(request_handler: Any, query: Any) -> Any:
        content_type = request_handler.headers.get("Content-Type") or ""
        if not content_type.startswith("multipart/related"):
            return original(request_handler, query)
        raw = server._decode_raw_data(server._read_raw_data(request_handler), request_handler)
        boundary = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip().strip('"')
        # gcsfs ends its lines with LF alone, RFC 2046 with CRLF: take what the body uses.
        eol = b"\r\n" if raw.startswith(b"--" + boundary.encode() + b"\r\n") else b"\n"
        parts = (eol + raw).split(eol + b"--" + boundary.encode())[
            1:-1
        ]  # no preamble, no "--" tail
        meta_part, content_part = (part.split(eol + eol, 1) for part in parts[:2])
        content_headers = content_part[0].decode("latin-1").lower()
        content_type_line = [
            h for h in content_headers.split(eol.decode()) if h.startswith("content-type:")
        ]
        return {
            "meta": json.loads(meta_part[1]),
            "content": content_part[1],
            "content-type": content_type_line[0].split(":", 1)[1].strip()
            if content_type_line
            else "application/octet-stream",
        }

    server._read_data = read_data
    server._asyncsummary_binary_safe = True


class GcsServer:
    """gcp-storage-emulator in memory, with one bucket; use as a context manager."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.port = free_port()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "token": "anon"}

    def __enter__(self) -> GcsServer:
        from gcp_storage_emulator.server import create_server

        _make_emulator_uploads_binary_safe()

        self._server = create_server(
            "127.0.0.1", self.port, in_memory=True, default_bucket=self.bucket
        )
        self._server.start()
        try:
            wait_listening(self.port)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()


class FtpServer:
    """pyftpdlib on loopback, one user with a password, files in ``root``; a context manager.

    FTP is the simplest store whose URL must carry host, port, user and password
    (fsspec's ``ftp://`` takes them from the URL); pyftpdlib is pure Python and
    serves a plain folder, so the uploaded objects are read back as local files.
    """

    def __init__(self, root: str, user: str, password: str) -> None:
        self.root = root
        self.user = user
        self.password = password
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def url(self, path: str) -> str:
        return f"ftp://{self.user}:{self.password}@127.0.0.1:{self.port}/{path.lstrip('/')}"

    def __enter__(self) -> FtpServer:
        import logging

        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.servers import FTPServer

        logging.getLogger("pyftpdlib").setLevel(logging.WARNING)  # a line per command
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.user, self.password, self.root, perm="elradfmwMT")
        # A refused login is answered at once (pyftpdlib waits 3 s by default).
        handler = type(
            "Handler", (FTPHandler,), {"authorizer": authorizer, "auth_failed_timeout": 0.05}
        )
        self._server = FTPServer(("127.0.0.1", 0), handler)
        self.port = self._server.socket.getsockname()[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="ftp-server")
        self._thread.start()
        try:
            wait_listening(self.port)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _serve(self) -> None:
        server = self._server
        while not self._stop.is_set():
            server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        server.close_all()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_WAIT)
        self._server = None
