"""Requested (artifact, backend) pairs without figures (`not_run`) and the FP32 reference of two students
benched together."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vsseg_edge.bench.pairs import not_run, trt_installed
from vsseg_edge.bench.report import MD_NAME, write_report
from vsseg_edge.bench.runner import BenchConfig, run_bench
from vsseg_edge.core.labels import CITYSCAPES
from vsseg_edge.core.manifest import write_manifest
from vsseg_edge.core.preprocess import PreprocessSpec


def quick(root, **kw) -> BenchConfig:
    return BenchConfig(dataset=root, runs=1, warmup=0, frames=1, threads=1, progress=False, tc=False, **kw)


def pairs_of(report) -> dict:
    return {(r["id"].rsplit("@", 1)[0], r["backend"]): r for r in report["not_run"]}


def fake_engine(path, **tensorrt):
    path.write_bytes(b"not an engine")
    write_manifest(
        path,
        "engine",
        model="bench-tiny",
        classes=list(CITYSCAPES.classes),
        preprocess=PreprocessSpec(height=64, width=128),
        precision="fp16",
        **tensorrt,
    )
    return path


def test_onnx_with_trt_requested_says_why_there_is_no_trt_row(artifacts, synth_root, tmp_path):
    """`--backends trt` with ONNX inputs: no figures, and one line per pair telling the user to build an engine."""
    report = run_bench([artifacts["onnx"], artifacts["int8"]], quick(synth_root, backends=("trt",)))
    assert [e["status"] for e in report["entries"]] == ["skipped", "skipped"]
    assert report["backends"] == ["trt"]
    rows = pairs_of(report)
    assert set(rows) == {("tiny.onnx", "trt"), ("tiny.int8.qdq.onnx", "trt")}
    assert rows["tiny.onnx", "trt"]["status"] == "needs_engine"
    assert "`vsseg-edge build-engine tiny.onnx --fp16`" in rows["tiny.onnx", "trt"]["reason"]
    assert "`vsseg-edge build-engine tiny.int8.qdq.onnx --int8`" in rows["tiny.int8.qdq.onnx", "trt"]["reason"]
    assert ("TensorRT is not installed here" in rows["tiny.onnx", "trt"]["reason"]) == (not trt_installed())
    write_report(report, tmp_path)
    md = (tmp_path / MD_NAME).read_text()
    assert "**Not run**" in md and "(backends asked: trt)" in md
    assert "- `tiny.onnx` × trt — needs_engine: ONNX input: build an engine first with" in md


def test_default_backends_list_every_pair_without_figures(artifacts, synth_root):
    """All three backends asked: the ONNX's torch pair is covered by its checkpoint, INT8 has no torch path."""
    report = run_bench([artifacts["ckpt"], artifacts["onnx"], artifacts["int8"]], quick(synth_root))
    rows = pairs_of(report)
    assert set(rows) == {
        ("tiny.pt", "ort"),
        ("tiny.pt", "trt"),
        ("tiny.onnx", "torch"),
        ("tiny.onnx", "trt"),
        ("tiny.int8.qdq.onnx", "torch"),
        ("tiny.int8.qdq.onnx", "trt"),
    }
    assert rows["tiny.onnx", "torch"]["status"] == "covered"
    assert "measured as `tiny.pt@torch` (its ancestor tiny.pt)" == rows["tiny.onnx", "torch"]["reason"]
    assert rows["tiny.pt", "ort"]["reason"] == "measured as `tiny.onnx@ort` (built from it: tiny.onnx)"
    assert rows["tiny.int8.qdq.onnx", "torch"]["status"] == "not_applicable"
    assert "vsseg-edge export tiny.pt --out tiny.onnx" in rows["tiny.pt", "trt"]["reason"]


def test_engine_without_tensorrt_and_engine_for_another_gpu(artifacts, synth_root, tmp_path, monkeypatch):
    """The engine's own pair: 'unavailable' when TensorRT is missing, 'failed' when built for another GPU."""
    if trt_installed():
        pytest.skip("tensorrt is installed here; this test is about its absence")
    plain = fake_engine(tmp_path / "plain.engine")
    (entry,) = run_bench([plain], quick(synth_root, backends=("trt",)))["entries"]
    assert entry["status"] == "unavailable" and entry["reason"].startswith("tensorrt is not installed")
    import vsseg_edge.runtime.backends.trt as trt_mod

    prop = SimpleNamespace(name=b"NVIDIA H100 80GB HBM3", major=9, minor=0)
    cudart = SimpleNamespace(
        cudaSetDevice=lambda i: (0,), cudaGetDeviceProperties=lambda i: (0, prop), cudaGetDeviceCount=lambda: (0, 1)
    )
    monkeypatch.setattr(trt_mod, "load_trt_modules", lambda: (SimpleNamespace(__version__="10.3.0"), cudart))
    foreign = fake_engine(
        tmp_path / "foreign.engine",
        tensorrt={"version": "10.3.0", "gpu": {"name": "NVIDIA A100-SXM4-40GB", "compute_capability": [8, 0]}},
    )
    report = run_bench([foreign, artifacts["onnx"]], quick(synth_root, backends=("trt", "ort")))
    rows = pairs_of(report)
    assert rows["foreign.engine", "trt"]["status"] == "failed"
    assert (
        "built for NVIDIA A100-SXM4-40GB (sm_80), this GPU is NVIDIA H100 80GB HBM3 (sm_90)"
        in rows["foreign.engine", "trt"]["reason"]
    )
    assert rows["foreign.engine", "ort"]["status"] == "not_applicable"
    assert rows["tiny.onnx", "trt"]["status"] == "needs_engine"


def test_not_run_of_an_engine_built_from_the_onnx_points_at_it():
    """The ONNX × trt pair of an ONNX whose engine is among the entries refers to that engine's row."""
    onnx = {
        "id": "m.onnx@ort",
        "artifact": "m.onnx",
        "file": "m.onnx",
        "backend": "ort",
        "precision": "fp32",
        "status": "ok",
        "sha256": "o",
        "lineage": [{"sha256": "o", "file": "m.onnx"}],
    }
    eng = {
        "id": "m.engine@trt",
        "artifact": "m.engine",
        "file": "m.engine",
        "backend": "trt",
        "precision": "fp16",
        "status": "unavailable",
        "reason": "tensorrt is not installed",
        "sha256": "e",
        "lineage": [{"sha256": "e", "file": "m.engine"}, {"sha256": "o", "file": "m.onnx"}],
    }
    rows = {(r["file"], r["backend"]): r for r in not_run([onnx, eng], ("ort", "trt"))}
    assert rows["m.onnx", "trt"]["status"] == "unavailable"
    assert rows["m.onnx", "trt"]["reason"] == "see `m.engine@trt` (built from it: m.engine): tensorrt is not installed"
    assert rows["m.engine", "trt"]["reason"] == "tensorrt is not installed"
    assert rows["m.engine", "ort"]["reason"] == "measured as `m.onnx@ort` (its ancestor m.onnx, fp32 there)"
    rows = {(r["file"], r["backend"]): r for r in not_run([eng], ("ort",))}
    assert "bench the ONNX it was built from (m.onnx)" in rows["m.engine", "ort"]["reason"]


def _fake(file, backend, precision, chain, kind):
    return {
        "id": f"{file}@{backend}",
        "artifact": file,
        "file": file,
        "backend": backend,
        "precision": precision,
        "status": "ok",
        "reason": None,
        "sha256": chain[0],
        "lineage": [{"sha256": sha, "file": sha, "kind": kind if i == 0 else None} for i, sha in enumerate(chain)],
    }


def test_checkpoint_run_in_fp16_on_a_gpu():
    """torch runs the checkpoint in FP16 on CUDA: its FP32 ONNX export is its reference and covers its ort pair."""
    from vsseg_edge.bench.lineage import choose_reference

    pt = _fake("model.pt", "torch", "fp16", ["c"], "checkpoint")
    onnx = _fake("student.onnx", "ort", "fp32", ["o", "c"], "onnx")
    int8 = _fake("student.int8.qdq.onnx", "ort", "int8", ["q", "o", "c"], "qdq_onnx")
    entries = [pt, onnx, int8]
    assert choose_reference(pt, entries, None)[0] is onnx
    assert choose_reference(int8, entries, None)[0] is onnx
    rows = {(r["file"], r["backend"]): r for r in not_run(entries, ("ort", "torch"))}
    assert rows["model.pt", "ort"]["reason"] == (
        "measured as `student.onnx@ort` (built from it: student.onnx, fp32 there)"
    )
    assert rows["student.onnx", "torch"]["reason"] == "measured as `model.pt@torch` (its ancestor model.pt, fp16 there)"
    assert rows["student.int8.qdq.onnx", "torch"]["status"] == "not_applicable"


def test_two_students_each_compared_with_their_own_fp32(artifacts, student_b, synth_root, tmp_path):
    """Student A's ONNX + INT8 and student B's checkpoint + INT8 (B's ONNX not benched): nobody crosses over."""
    a, b = artifacts, student_b
    report = run_bench([a["onnx"], a["int8"], b["ckpt"], b["int8"]], quick(synth_root, backends=("ort", "torch")))
    e = {x["artifact"]: x for x in report["entries"]}
    a_onnx, a_int8, b_ckpt, b_int8 = (e[str(p)] for p in (a["onnx"], a["int8"], b["ckpt"], b["int8"]))
    assert a_int8["agreement"]["reference"] == a_onnx["id"]
    assert b_int8["agreement"]["reference"] == b_ckpt["id"]  # B's checkpoint, two generations up
    assert a_onnx["agreement"] is None and b_ckpt["agreement"] is None  # two roots, not compared with each other
    assert a_int8["agreement"]["percent"] > 50 and b_int8["agreement"]["percent"] > 50
    alone = run_bench([a["onnx"], b["int8"]], quick(synth_root, backends=("ort",)))
    b_alone = {x["artifact"]: x for x in alone["entries"]}[str(b["int8"])]
    assert b_alone["agreement"] is None
    assert "no FP32 entry of the same model (source tiny.pt" in b_alone["reference_note"]
    files = write_report(alone, tmp_path)
    md = files["markdown"].read_text()
    assert "no FP32 reference: no FP32 entry of the same model" in md.split("\n\n")[0]  # in the table's note
    assert "int8_delta" not in files  # no INT8 entry with a reference → no delta plot, and the report says so
