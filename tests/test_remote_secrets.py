"""Credentials in logdir URLs: used to reach the store, shown nowhere.

A URL with a host, a port, a user and a password is written to a real FTP server
on loopback (pyftpdlib) and read back from its folder with TensorBoard's loader.
Then every place a secret could leak is searched: error messages and their causes,
``repr``/``str`` of the writer, its stats, every log record, every file and folder
name (and file) of the spool, every name on the server. A store client that quotes
the URL in its errors (``leakymem://``, below) covers the path where the library
itself must scrub text it did not write.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from asyncsummary import AsyncSummaryError, AsyncSummaryWriter, FlushTimeoutError, WriteError
from asyncsummary._redact import redact_url, scrub_exception, secrets_of
from asyncsummary.remote import RemoteSinkFactory

from .readers import tb_run_events
from .remote_servers import FtpServer
from .spool_layout import DEAD_EVENT_FILE, plant_dead_writer, records, user_logdir_folder

PASSWORD = "pw-Sekr1t-9f3a"
TOKEN = "tok-Zq81-77ab"
SIGNATURE = "sig-Hh2k-0c5e"


class LeakyMemoryFileSystem(MemoryFileSystem):
    """A store that refuses every upload with an error quoting the path it was given,
    as many clients do (the path holds whatever the URL held)."""

    protocol = "leakymem"
    store: dict = {}
    pseudo_dirs = [""]
    refuse = threading.Event()

    def pipe_file(self, path, value, *args, **kwargs):
        if LeakyMemoryFileSystem.refuse.is_set():
            raise PermissionError(13, f"upload refused for {path}", path)
        return super().pipe_file(path, value, *args, **kwargs)


fsspec.register_implementation("leakymem", LeakyMemoryFileSystem, clobber=True)


@pytest.fixture
def ftp(tmp_path):
    root = tmp_path / "ftp-root"
    root.mkdir()
    with FtpServer(str(root), "alice", PASSWORD) as server:
        yield server


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def _texts_of_error(exc):
    """Message, repr and every cause or context of an exception, as text."""
    out = []
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out += [str(exc), repr(exc), *map(str, getattr(exc, "args", ()))]
        out += [str(getattr(exc, name, "")) for name in ("filename", "filename2")]
        exc = exc.__cause__ or exc.__context__
    return out


def _spool_texts(spool):
    """Every name under the spool, and every file's content."""
    out = []
    for folder, dirs, files in os.walk(spool):
        out += dirs + files
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                out.append(f.read().decode("utf-8", "replace"))
    return out


def _assert_hidden(texts, *secrets):
    leaks = [text for text in texts for secret in secrets if secret in str(text)]
    assert leaks == []


# ------------------------------------------------------------------- redaction
@pytest.mark.parametrize(
    "url, shown",
    [
        ("s3://AKIAEXAMPLE:wJalr/K7MDENG+bPx@bucket/run", "s3://AKIAEXAMPLE:***@bucket/run"),
        ("s3://key:secret@bucket/run", "s3://key:***@bucket/run"),
        ("ftp://user:pw@host:2121/path/run", "ftp://user:***@host:2121/path/run"),
        ("sftp://ghp_tokenonly@host/run", "sftp://***@host/run"),
        (
            "https://host/run?sv=v2024&sig=abc%2Fdef&X-Amz-Signature=f00f&token=tkn42",
            "https://host/run?sv=***&sig=***&X-Amz-Signature=***&token=***",
        ),
        ("simplecache::s3://k:s3cr@b/run", "simplecache::s3://k:***@b/run"),
        ("webhdfs://host:9870/user/run", "webhdfs://host:9870/user/run"),
        ("s3://bucket/run@2024", "s3://bucket/run@2024"),
        ("/local/path", "/local/path"),
    ],
)
def test_redact_url_masks_passwords_and_query_values_only(url, shown):
    assert redact_url(url) == shown
    for secret in secrets_of(url):
        assert secret not in redact_url(url)


def test_scrubbed_errors_keep_their_type_and_drop_the_secret():
    secrets = secrets_of(f"ftp://u:{PASSWORD}@h/run?token={TOKEN}")
    exc = scrub_exception(FileNotFoundError(2, f"no {PASSWORD}", f"/x/{TOKEN}"), secrets)
    assert type(exc) is FileNotFoundError and exc.errno == 2
    _assert_hidden(_texts_of_error(exc), PASSWORD, TOKEN)
    odd = scrub_exception(KeyError(PASSWORD), secrets)
    _assert_hidden(_texts_of_error(odd), PASSWORD)
    clean = ValueError("nothing secret")
    assert scrub_exception(clean, secrets) is clean


# ------------------------------------------------------------------------- FTP
def test_an_ftp_url_with_host_port_and_password_is_written_and_shows_no_secret(ftp, tmp_path, logs):
    url = ftp.url("runs/r1")
    spool = str(tmp_path / "spool")
    factory = RemoteSinkFactory(spool_dir=spool, min_segment_secs=3600)
    writer = AsyncSummaryWriter(url, flush_secs=3600, max_file_bytes=4096, sink_factory=factory)
    for step in range(300):
        writer.add_scalar("x", step * 0.5, step)
        if step % 50 == 49:
            writer.flush(timeout=30)
    texts = [repr(writer), str(writer), repr(writer.stats()), *writer.stats().files]
    writer.close(timeout=30)
    texts += [repr(writer), repr(writer.stats())]
    assert writer.get_logdir() == url  # the URL itself stays as given: the store needs it

    run = os.path.join(ftp.root, "runs", "r1")
    events = tb_run_events(run)  # TensorBoard's loader, on the server's own folder
    assert [(e.step, e.summary.value[0].simple_value) for e in events if e.HasField("summary")] == [
        (step, step * 0.5) for step in range(300)
    ]
    assert len(writer.stats().files) > 1  # rotated: several event files, each in segments
    assert writer.stats().lost == writer.stats().dropped == 0
    server_names = [n for _, dirs, files in os.walk(ftp.root) for n in dirs + files]
    _assert_hidden(
        texts + _spool_texts(spool) + server_names + [r.getMessage() for r in logs.records],
        PASSWORD,
    )
    assert redact_url(url) in repr(writer)


def test_a_refused_ftp_login_reports_the_url_without_its_password(ftp, tmp_path, logs):
    url = ftp.url("runs/r2").replace(PASSWORD, PASSWORD + "-wrong")
    writer = AsyncSummaryWriter(
        url, flush_secs=3600, sink_factory=RemoteSinkFactory(spool_dir=str(tmp_path / "spool"))
    )
    writer.add_scalar("x", 1.0, 1)
    with pytest.raises(WriteError) as flushed:
        writer.flush(timeout=10)
    with pytest.raises(AsyncSummaryError) as closed:  # WriteError, or a timeout while retrying
        writer.close(timeout=5)
    assert "530" in str(flushed.value)  # the server's answer is kept
    assert "ftp://alice:***@127.0.0.1" in str(closed.value)  # and which store it was
    _assert_hidden(
        _texts_of_error(flushed.value)
        + _texts_of_error(closed.value)
        + [repr(writer), repr(writer.stats()), *_texts_of_error(writer.stats().last_error)]
        + _spool_texts(str(tmp_path / "spool"))
        + [r.getMessage() for r in logs.records],
        PASSWORD,
    )


# ---------------------------------------------- a client that quotes the URL
def test_store_errors_quoting_the_url_are_scrubbed_everywhere(tmp_path, logs):
    url = f"leakymem://alice:{PASSWORD}@runs/{uuid.uuid4().hex}?token={TOKEN}&sig={SIGNATURE}"
    spool = str(tmp_path / "spool")
    factory = RemoteSinkFactory(spool_dir=spool, max_backoff=0.05)
    LeakyMemoryFileSystem.refuse.set()
    try:
        writer = AsyncSummaryWriter(url, flush_secs=0.05, sink_factory=factory)
        for step in range(20):
            writer.add_scalar("x", step, step)
        with pytest.raises(FlushTimeoutError) as timed_out:
            writer.flush(timeout=1.5)
        assert "upload refused for" in str(timed_out.value)  # the client's words, masked
        texts = _texts_of_error(timed_out.value)
        texts += [repr(writer), repr(writer.stats()), *writer.stats().files]
        texts += _texts_of_error(writer.stats().last_error) + _spool_texts(spool)
        with pytest.raises(AsyncSummaryError) as closed:  # still refused
            writer.close(timeout=1.0)
        texts += _texts_of_error(closed.value) + [repr(writer)]
    finally:
        LeakyMemoryFileSystem.refuse.clear()
    records = [r.getMessage() for r in logs.records if r.name.startswith("asyncsummary")]
    assert any("upload of" in r for r in records)  # the warning was logged, masked
    _assert_hidden(texts + records, PASSWORD, TOKEN, SIGNATURE)
    # close() gave up, not the sink: with the store back, its spooled segments still go
    # up while the process lives (wait for them, so nothing of this test runs on).
    path = LeakyMemoryFileSystem._strip_protocol(url)
    deadline = time.monotonic() + 30
    while not any(key.startswith(path + "/") for key in LeakyMemoryFileSystem.store):
        assert time.monotonic() < deadline, "the closed writer's spool was never uploaded"
        time.sleep(0.01)  # polling with a deadline


# ------------------------------------------------------- the torch-style writer
@pytest.mark.torch
def test_the_torch_style_writer_shows_no_secret(ftp, tmp_path, logs):
    from asyncsummary.torch import SummaryWriter

    url = ftp.url("runs/torch")
    spool = str(tmp_path / "spool")
    factory = RemoteSinkFactory(spool_dir=spool, min_segment_secs=3600)
    writer = SummaryWriter(url, flush_secs=3600, sink_factory=factory)
    for step in range(20):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
    writer.add_scalars("pair", {"a": 1.0, "b": 2.0}, 0)  # a second run folder on the server
    writer.flush()
    texts = [repr(writer), str(writer)]
    writer.close()
    texts.append(repr(writer))
    assert writer.get_logdir() == url  # as given: the store needs it
    assert redact_url(url) in texts[0]
    events = tb_run_events(os.path.join(ftp.root, "runs", "torch"))
    assert [e.step for e in events if e.HasField("summary")] == list(range(20))

    wrong = url.replace("runs/torch", "runs/torch-refused").replace(PASSWORD, PASSWORD + "-x")
    refused = SummaryWriter(wrong, flush_secs=3600, sink_factory=factory, close_timeout=2)
    refused.add_scalar("loss", 1.0, 1)
    with pytest.raises(WriteError) as flushed:
        refused.flush()
    with pytest.raises(AsyncSummaryError) as closed:
        refused.close()
    assert "530" in str(flushed.value) and "ftp://alice:***@" in str(closed.value)
    texts += _texts_of_error(flushed.value) + _texts_of_error(closed.value) + [repr(refused)]
    _assert_hidden(texts + _spool_texts(spool) + [r.getMessage() for r in logs.records], PASSWORD)


# ------------------------------------------------------- upload-spool command
def _dead_writers_spool(spool, url, steps):
    """What a killed writer leaves for ``url``: the URL's folder, its ``logdir`` file
    (the URL masked, as writers record it) and one dead writer's sealed segment."""
    folder = user_logdir_folder(spool, url, recorded=redact_url(url))
    plant_dead_writer(folder, segments={"0000000000.seg": records("x", steps, header=True)})


def test_upload_spool_with_a_password_url_shows_no_secret(ftp, tmp_path, capsys, logs):
    from asyncsummary.remote import main

    url = ftp.url("runs/recovered")
    spool = str(tmp_path / "spool")
    _dead_writers_spool(spool, url, range(5))
    outputs = []
    # Without the URL: the masked one on record cannot be used, and the error says so.
    assert main(["upload-spool", "--spool-dir", spool]) == 1
    outputs.append(capsys.readouterr())
    assert "pass the URL as LOGDIR" in outputs[-1].err
    # With a wrong password the login is refused; the segment stays for the next try.
    wrong = url.replace(PASSWORD, PASSWORD + "-wrong")
    _dead_writers_spool(spool, wrong, range(5, 8))
    assert main(["upload-spool", wrong, "--spool-dir", spool]) == 1
    outputs.append(capsys.readouterr())
    assert "failed: ftp://alice:***@127.0.0.1" in outputs[-1].err and "530" in outputs[-1].err
    # With the URL: uploaded, and each object named with the password masked.
    assert main(["upload-spool", url, "--spool-dir", spool]) == 0
    outputs.append(capsys.readouterr())
    assert outputs[-1].out.split() == [f"{redact_url(url)}/{DEAD_EVENT_FILE}.0000000000"]
    events = tb_run_events(os.path.join(ftp.root, "runs", "recovered"))
    assert [e.step for e in events if e.HasField("summary")] == list(range(5))
    texts = [text for o in outputs for text in (o.out, o.err)]
    _assert_hidden(
        texts + _spool_texts(spool) + [r.getMessage() for r in logs.records],
        PASSWORD,
        PASSWORD + "-wrong",
    )
