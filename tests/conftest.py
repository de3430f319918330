from __future__ import annotations

import fnmatch
import os

# Quiet TensorFlow's C++ logging in every test process and its children.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import tempfile  # noqa: E402

import pytest  # noqa: E402

# Remote writers spool under this folder; keep the suite's spools out of ~/.cache.
os.environ.setdefault("ASYNCSUMMARY_SPOOL_DIR", tempfile.mkdtemp(prefix="asyncsummary-spool-"))


@pytest.fixture(scope="module")
def s3(request):
    """A loopback S3 server (moto, server mode) for one test module, with the module's
    ``BUCKET`` made; stopped when the module's tests are done."""
    from .remote_servers import S3Server

    with S3Server() as server:
        server.create_bucket(request.module.BUCKET)
        yield server


@pytest.fixture
def logdir(tmp_path):
    path = tmp_path / "run"
    return str(path)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


#: The core suite (``ASYNCSUMMARY_CORE_SUITE=1``): every test but those marked ``tf`` or
#: ``torch``, on an install without TensorFlow and torch (the ``test-core`` extra), as
#: CI runs it on Python 3.12 and 3.13. Otherwise the full suite, which needs both: a
#: missing one is an error, never a silently smaller suite.
CORE_SUITE = os.environ.get("ASYNCSUMMARY_CORE_SUITE") == "1"
#: The rest of the suite (``ASYNCSUMMARY_REST_OF_SUITE=1``): exactly the tests the core
#: suite leaves out, as CI runs them with the pure-Python encoder on Python 3.11 (the
#: core suite runs with it on 3.12): together, the whole suite against both encoders.
REST_OF_SUITE = os.environ.get("ASYNCSUMMARY_REST_OF_SUITE") == "1"
#: Modules that import torch, TensorFlow or Keras as they load (or need them).
_NEEDS_TF_OR_TORCH = [
    "test_torch_*.py", "test_frameworks_*.py", "test_hook.py", "test_core_tf_equivalence.py",
    "test_keras.py",
]
collect_ignore_glob = _NEEDS_TF_OR_TORCH if CORE_SUITE else []


def _tensorboard_reader_crc_in_c() -> None:
    """Without TensorFlow, TensorBoard reads records with its own pure-Python reader,
    whose CRC-32C runs a Python loop per byte: reading back the millions of events of
    the Ctrl-C trials took minutes. Its reader stays as it is (every CRC checked, the
    same code path); only its checksum function is swapped for the C one of
    ``google-crc32c`` (this package's own dependency), after checking that the two
    agree."""
    import google_crc32c
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as stub

    for sample in (b"", b"a", bytes(range(256)) * 5, os.urandom(4099)):
        if google_crc32c.value(sample) != stub.crc32c(sample):
            raise pytest.UsageError("google-crc32c and TensorBoard's CRC-32C disagree")
    stub.crc32c = google_crc32c.value


def pytest_configure(config):
    if CORE_SUITE:
        if not _installed("tensorflow"):
            _tensorboard_reader_crc_in_c()
        return
    missing = [name for name in ("tensorflow", "torch") if not _installed(name)]
    if missing:
        raise pytest.UsageError(
            f"{' and '.join(missing)} not installed: the full suite needs the 'test' extra "
            "(pip install -e '.[test]'); for the core suite without them set "
            "ASYNCSUMMARY_CORE_SUITE=1"
        )


def pytest_report_header(config):
    if CORE_SUITE:
        return "core suite: tests marked 'tf' or 'torch' are left out (ASYNCSUMMARY_CORE_SUITE=1)"
    return None


def _in_core_suite(item) -> bool:
    if item.get_closest_marker("torch") or item.get_closest_marker("tf"):
        return False
    name = os.path.basename(str(item.path))
    return not any(fnmatch.fnmatch(name, pattern) for pattern in _NEEDS_TF_OR_TORCH)


def pytest_collection_modifyitems(config, items):
    if not CORE_SUITE and not REST_OF_SUITE:
        return
    if CORE_SUITE and REST_OF_SUITE:
        raise pytest.UsageError("ASYNCSUMMARY_CORE_SUITE and ASYNCSUMMARY_REST_OF_SUITE exclude each other")
    kept, deselected = [], []
    for item in items:
        (kept if _in_core_suite(item) == CORE_SUITE else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def _fuse_mounts() -> set[str]:
    """Mount points of the FUSE file systems the tests mount (``benchmarks.fuse_slowfs``
    mounts each under a fresh ``asb-fuse-*`` temp folder)."""
    from benchmarks.fuse_slowfs import mount_points

    return {p for p in mount_points() if os.path.basename(os.path.dirname(p)).startswith("asb-fuse-")}


def pytest_sessionstart(session):
    session.config._fuse_mounts_before = _fuse_mounts()


def pytest_sessionfinish(session, exitstatus):
    """No test leaves a mount behind: a FUSE mount made during the run and still there
    fails the run (each test that mounts also checks its own, see test_faults_hung)."""
    left = _fuse_mounts() - getattr(session.config, "_fuse_mounts_before", set())
    if left:
        print(f"\nFUSE mounts left behind by the tests: {sorted(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
