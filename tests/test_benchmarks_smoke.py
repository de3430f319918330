"""``python -m benchmarks --quick`` runs end to end and writes every benchmark's numbers.

A smoke run so the benchmarks never rot: it checks that each benchmark produced its
keys with finite numbers, the plots, and the memory bound (a count, not a timing).
Nothing here asserts on a timing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from typing import Any

import pytest

#: The benchmarks run their anchors (TF's hook and writer, torch's writer) beside ours.
pytestmark = [pytest.mark.tf, pytest.mark.torch]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITERS = ("tf", "tensorboard", "tensorboardX", "asyncsummary")
HOOK_VARIANTS = (
    "no hook",
    "floor: fetch",
    "floor: fetch+read (session.run)",
    "floor: fetch+read (callable)",
    "TF SummarySaverHook",
    "async exact",
    "async exact_step=False",
)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _assert_finite(mapping: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        assert key in mapping, f"{where}: no {key!r}"
        assert _finite(mapping[key]), f"{where}: {key} = {mapping[key]!r}"


def _check_hook_comparison(part: dict[str, Any], where: str) -> None:
    assert set(part["variants"]) == set(HOOK_VARIANTS), where
    for name, v in part["variants"].items():
        _assert_finite(v, ("p50", "p99", "mean", "added_p50", "added_p99", "n"), f"{where} / {name}")
        assert v["n"] > 0 and len(part["samples"][name]) == v["n"]
    for name in ("TF SummarySaverHook", "async exact", "async exact_step=False"):
        v = part["variants"][name]
        _assert_finite(v, ("vs_floor_step_p50", "vs_floor_step_p99"), f"{where} / {name}")
        # Ratios of two small added times may be undefined (a zero floor): null is fine.
        for key in ("vs_floor_added_p50", "vs_floor_added_p99"):
            assert v[key] is None or _finite(v[key]), f"{where} / {name}: {key}"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = str(tmp_path_factory.mktemp("bench"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", out],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=360,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f), out


def test_run_metadata(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    assert results["quick"] is True
    assert results["command"] == "python -m benchmarks --quick"
    assert results["machine"]["cores"] >= 1
    assert results["date"]


def test_writer_cost(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    for size in ("small", "large"):
        part = results["writer_cost"][size]
        _assert_finite(part, ("events", "event_bytes", "framing_alone_events_per_s"), size)
        assert set(part["writers"]) == set(WRITERS)
        for name, w in part["writers"].items():
            keys = ("caller_us_p50", "caller_us_p99", "caller_us_mean", "events_per_s", "vs_framing_alone", "close_ms")
            _assert_finite(w, keys, f"{size} / {name}")
            assert w["events_per_s"] > 0 and w["chunk_us"]


def test_hook_overhead(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    assert set(results["hook_overhead"]) == {"save_steps=1", "save_steps=100"}
    for key, part in results["hook_overhead"].items():
        _check_hook_comparison(part, key)


def test_slow_storage(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    slow = results["slow_storage"]
    assert "5 ms" in slow["injected"]
    _check_hook_comparison(slow["injected"]["5 ms"], "injected 5 ms")
    fuse = slow["fuse"]["5 ms"]
    if "not run" in fuse:  # FUSE is optional: where it is missing, the reason is given
        assert isinstance(fuse["not run"], str) and fuse["not run"]
    else:
        _check_hook_comparison(fuse, "fuse 5 ms")


def test_memory_bound_holds(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    assert len(results["memory"]) == 9  # 100 B, 16 KiB, 1 MiB: stalled x 2 policies, slow x 1
    for key, r in results["memory"].items():
        keys = ("max_pending_bytes", "peak_pending_bytes", "rss_growth_bytes", "rss_growth_vs_bound",
                "rss_growth_vs_bound_plus_batch", "added")
        _assert_finite(r, keys, key)
        assert r["bound_held"] is True and r["peak_pending_bytes"] <= r["max_pending_bytes"], key
        assert r["lost"] == 0 and r["written_after_release"] >= r["added"] - r["dropped"], key


def test_extra_benchmarks_ran(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    for name in ("remote_upload", "torch_writer", "frameworks", "keras_callback", "cpu_training_loop"):
        present = importlib.util.find_spec(f"benchmarks.{name}") is not None
        assert (name in results) == present, name
        if present:
            assert isinstance(results[name], dict) and results[name]


def test_trainer_loop(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    part = results["trainer_loop"]
    loops = (
        "none",
        "asyncsummary native",
        "asyncsummary python",
        "torch",
        "tensorboardX",
        "tf.summary",
        "tf FileWriter",
    )
    assert set(part["loops"]) == set(loops)
    for name, row in part["loops"].items():
        keys = ("p50", "p99", "mean", "p50_vs_bare", "p99_vs_bare", "added_us_per_value")
        _assert_finite(row, keys, name)
    for name, row in part["costs"].items():
        keys = ("mean_us", "p50_us", "p99_us", "small_events_per_s", "large_events_per_s")
        _assert_finite(row, keys, name)
    # Each of ours really ran with the encoder it is named after.
    assert part["costs"]["asyncsummary native"]["encoder"] == "native"
    assert part["costs"]["asyncsummary python"]["encoder"] == "python"
    assert set(part["targets"]) == {
        "added_us_per_value",
        "p99_vs_bare",
        "small_vs_tf",
        "small_vs_framing_alone",
        "large_vs_tf",
        "burst_mean_tf_over_ours",
    }


def test_frameworks(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    part = results["frameworks"]
    for storage in ("local disk", "5 ms per write (FUSE)"):
        for framework in ("lightning", "huggingface"):
            found = part[storage][framework]
            if "not run" in found:  # FUSE is optional: where it is missing, the reason is given
                assert storage != "local disk" and isinstance(found["not run"], str) and found["not run"]
                continue
            assert set(found["variants"]) == {"no logger", "stock", "asyncsummary"}
            for name, v in found["variants"].items():
                _assert_finite(v, ("step_us_p50", "step_us_mean", "step_us_p99", "vs_stock", "n"), f"{storage} / {framework} / {name}")
                assert v["n"] > 0
            assert found["variants"]["stock"]["vs_stock"] == 1.0


def test_keras_callback(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    part = results["keras_callback"]
    for storage in ("local disk", "5 ms per write (FUSE)"):
        assert set(part[storage]) == {"update_freq=1", "update_freq=1, histogram_freq=1", 'update_freq="epoch"'}
        for setting, found in part[storage].items():
            if "not run" in found:  # FUSE is optional: where it is missing, the reason is given
                assert storage != "local disk" and isinstance(found["not run"], str) and found["not run"]
                continue
            assert set(found["variants"]) == {"no callback", "keras", "asyncsummary"}
            for name, v in found["variants"].items():
                keys = ("batch_us_p50", "batch_us_mean", "batch_us_p99", "vs_none", "p99_vs_none", "n")
                _assert_finite(v, keys, f"{storage} / {setting} / {name}")
                assert v["n"] > 0
            assert found["variants"]["no callback"]["vs_none"] == 1.0


def test_cpu_training_loop(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    part = results["cpu_training_loop"]
    assert set(part["variants"]) == {"none", "asyncsummary", "torch"}
    assert part["histogram_elements"] == 256 * 256
    assert part["torch_threads"] == results["machine"]["cores"]
    for name, v in part["variants"].items():
        keys = ("total_s", "after_warmup_s", "step_us_p50", "step_us_p99", "step_us_mean",
                "total_vs_bare", "after_warmup_vs_bare", "p50_vs_bare", "p99_vs_bare")
        _assert_finite(v, keys, name)
        for key in keys:
            assert v[key] > 0, f"{name}: {key} = {v[key]!r}"
        assert _finite(v["close_s"]) and v["close_s"] >= 0, name
        assert v["torch_threads"] == part["torch_threads"], name
        if name != "none":  # the writer wrote its events
            assert v["written_bytes"] > 0, name
    assert part["variants"]["none"]["total_vs_bare"] == 1.0
    assert set(part["targets"]) == {"total_vs_bare", "p50_vs_bare", "p99_vs_bare"}
    for key, t in part["targets"].items():
        assert _finite(t["achieved"]) and _finite(t["torch"]) and isinstance(t["met"], bool), key


def test_plots_written(quick_run: tuple[dict[str, Any], str]) -> None:
    _, out = quick_run
    for name in ("step_times.png", "caller_cost.png"):
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 1000
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
