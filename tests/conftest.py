from __future__ import annotations

import os

# Quiet TensorFlow's C++ logging in every test process and its children.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import tempfile  # noqa: E402

import pytest  # noqa: E402

# Remote writers spool under this folder; keep the suite's spools out of ~/.cache.
os.environ.setdefault("ASYNCSUMMARY_SPOOL_DIR", tempfile.mkdtemp(prefix="asyncsummary-spool-"))


@pytest.fixture
def logdir(tmp_path):
    path = tmp_path / "run"
    return str(path)


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


#: Without torch installed (``EXTRAS=test-core``; torch's CPU build is here for Python
#: 3.11 only), the tests marked ``torch`` are deselected, and the header says so.
_NO_TORCH = not _torch_available()
#: ...and the torch facade's own test modules, which import torch, are not collected.
collect_ignore_glob = ["test_torch_*.py"] if _NO_TORCH else []


def pytest_report_header(config):
    if _NO_TORCH:
        return (
            "torch is not installed: tests/test_torch_*.py and tests marked 'torch' are "
            "left out"
        )
    return None


def pytest_collection_modifyitems(config, items):
    if not _NO_TORCH:
        return
    kept, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker("torch") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
