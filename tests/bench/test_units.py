"""Units of the bench room: statistics, timing loop, frame choice, agreement, reference choice, config checks."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from vsseg_edge.bench import latency as lat
from vsseg_edge.bench.runner import BenchConfig, choose_reference, parent_chain, select_frames
from vsseg_edge.core.errors import VssegError


def test_latency_stats_percentiles_and_fps():
    s = lat.latency_stats([float(v) for v in range(1, 101)])
    assert s["p50_ms"] == pytest.approx(50.5) and s["p90_ms"] == pytest.approx(90.1) and s["p99_ms"] == pytest.approx(99.01)
    assert s["min_ms"] == 1 and s["max_ms"] == 100 and s["runs"] == 100
    assert s["fps"] == pytest.approx(1000 / 50.5, rel=1e-4)


def test_time_calls_warms_up_then_times_each_run():
    calls = []
    times = lat.time_calls(calls.append, runs=4, warmup=3)
    assert calls == [0, 1, 2, 0, 1, 2, 3] and len(times) == 4 and all(t >= 0 for t in times)


def test_timing_config_rejects_nonsense():
    with pytest.raises(VssegError, match="--runs 0"):
        lat.TimingConfig(runs=0)
    with pytest.raises(VssegError, match="--warmup -1"):
        lat.TimingConfig(runs=1, warmup=-1)


def test_bench_config_checks_backends_and_frames(tmp_path):
    with pytest.raises(VssegError, match="--backends ort,tflite"):
        BenchConfig(dataset=tmp_path, backends=("ort", "tflite"))
    with pytest.raises(VssegError, match="--frames 0"):
        BenchConfig(dataset=tmp_path, frames=0)
    with pytest.raises(VssegError, match="--threads 0"):
        BenchConfig(dataset=tmp_path, threads=0)


def test_argmax_agreement_counts_pixels():
    a = [np.zeros((2, 5), np.uint8), np.ones((2, 5), np.uint8)]
    b = [np.zeros((2, 5), np.uint8), np.ones((2, 5), np.uint8)]
    b[1][0, :3] = 7
    assert lat.argmax_agreement(a, a) == 100.0
    assert lat.argmax_agreement(a, b) == pytest.approx(100 * 17 / 20)


def test_select_frames_is_evenly_spaced_and_deterministic():
    refs = [f"f{i}" for i in range(10)]
    ds = SimpleNamespace(frames=lambda: refs, root="r", split="val")
    assert select_frames(ds, 3) == ["f0", "f4", "f9"]
    assert select_frames(ds, 50) == refs
    with pytest.raises(VssegError, match="no frames"):
        select_frames(SimpleNamespace(frames=lambda: [], root="r", split="val"), 3)


def test_reference_choice_explicit_then_ancestor_then_first_fp32():
    e = lambda i, prec, sha, status="ok": {"id": i, "artifact": i, "precision": prec, "sha256": sha, "status": status}  # noqa: E731
    entries = [e("a", "fp32", "sa"), e("b", "fp32", "sb"), e("c", "int8", "sc"), e("d", "fp32", "sd", "unavailable")]
    assert choose_reference(entries[2], entries, {"c": ["sx", "sb"]}, None)["id"] == "b"
    assert choose_reference(entries[2], entries, {"c": ["sd"]}, None)["id"] == "a"  # ancestor not run → first FP32
    assert choose_reference(entries[2], entries, {}, "b")["id"] == "b"


def test_parent_chain_follows_manifests(artifacts):
    from vsseg_edge.core.manifest import read_manifest

    chain = parent_chain(artifacts["int8"])
    assert chain == [read_manifest(artifacts["onnx"])["sha256"], read_manifest(artifacts["ckpt"])["sha256"]]


def test_class_count_mismatch_is_refused(synth_root):
    from vsseg_edge.bench.accuracy import check_classes
    from vsseg_edge.data.datasets import open_dataset

    ds = open_dataset(synth_root, "val")
    with pytest.raises(VssegError, match="model predicts 5 classes"):
        check_classes(SimpleNamespace(classes=list("abcde"), artifact="m.onnx"), ds)


def test_environment_names_cpu_and_libraries():
    env = lat.environment()
    assert env["cpu"] and env["cpu_count"] >= 1 and isinstance(env["gpus"], list)
    assert env["libraries"]["numpy"] == np.__version__


def test_bench_imports_without_torch():
    code = ("import sys, vsseg_edge.bench, vsseg_edge.bench.runner, vsseg_edge.bench.report, vsseg_edge.bench.compare, "
            "vsseg_edge.bench.plots, vsseg_edge.bench.accuracy, vsseg_edge.bench.commands; "
            "bad = [m for m in ('torch', 'onnx', 'tensorrt', 'matplotlib') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unique_names_prefix_the_folder_only_where_file_names_collide():
    from pathlib import Path

    from vsseg_edge.bench.runner import unique_names

    paths = [Path("/r/a/model.pt"), Path("/r/b/model.pt"), Path("/r/b/student.onnx")]
    assert list(unique_names(paths).values()) == ["a/model.pt", "b/model.pt", "student.onnx"]
