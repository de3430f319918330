from __future__ import annotations

import os

# Quiet TensorFlow's C++ logging in every test process and its children.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402


@pytest.fixture
def logdir(tmp_path):
    path = tmp_path / "run"
    return str(path)
