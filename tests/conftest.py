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
