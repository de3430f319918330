"""The public surface: names, types, and imports that must stay light."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import asyncsummary
from asyncsummary import AsyncSummaryWriter


def test_all_names_exist():
    for name in asyncsummary.__all__:
        if name in ("AsyncSummarySaverHook", "SummaryWriterCache", "SummaryWriter"):
            continue  # lazy: importing them loads TensorFlow / torch (tested elsewhere)
        assert getattr(asyncsummary, name) is not None
    assert sorted(asyncsummary.__all__) == asyncsummary.__all__


def test_import_loads_neither_tensorflow_nor_torch(tmp_path):
    code = (
        "import sys, asyncsummary\n"
        "w = asyncsummary.AsyncSummaryWriter(sys.argv[1]); w.add_scalar('x', 1, 1); w.close()\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch', 'keras')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_py_typed_is_shipped():
    assert os.path.exists(os.path.join(os.path.dirname(asyncsummary.__file__), "py.typed"))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"logdir": ""}, ValueError),
        ({"logdir": 3}, TypeError),
        ({"logdir": b"x"}, TypeError),
        ({"flush_secs": 0}, ValueError),
        ({"flush_secs": float("nan")}, ValueError),
        ({"flush_secs": "1"}, TypeError),
        ({"max_pending_bytes": 0}, ValueError),
        ({"policy": "sometimes"}, ValueError),
        ({"session": object()}, TypeError),
        ({"filename_suffix": "a/b"}, ValueError),
        ({"max_queue": -1}, ValueError),
    ],
)
def test_bad_constructor_arguments(tmp_path, kwargs, error):
    kwargs = {"logdir": str(tmp_path), **kwargs}
    with pytest.raises(error):
        AsyncSummaryWriter(**kwargs)
