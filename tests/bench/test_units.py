"""Units of the bench room: frame choice, reference choice, lineage, config checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vsseg_edge.bench.lineage import choose_reference, lineage
from vsseg_edge.bench.runner import BenchConfig, select_frames
from vsseg_edge.core.errors import VssegError


def test_bench_config_checks_backends_and_frames(tmp_path):
    with pytest.raises(VssegError, match="--backends ort,tflite"):
        BenchConfig(dataset=tmp_path, backends=("ort", "tflite"))
    with pytest.raises(VssegError, match="--frames 0"):
        BenchConfig(dataset=tmp_path, frames=0)
    with pytest.raises(VssegError, match="--threads 0"):
        BenchConfig(dataset=tmp_path, threads=0)


def test_select_frames_is_evenly_spaced_and_deterministic():
    refs = [f"f{i}" for i in range(10)]
    ds = SimpleNamespace(frames=lambda: refs, root="r", split="val")
    assert select_frames(ds, 3) == ["f0", "f4", "f9"]
    assert select_frames(ds, 50) == refs
    with pytest.raises(VssegError, match="no frames"):
        select_frames(SimpleNamespace(frames=list, root="r", split="val"), 3)


def _e(i, prec, chain, status="ok", folder="s"):
    """A fake entry: id i, its lineage shas `chain` (itself first)."""
    return {
        "id": i,
        "artifact": f"{folder}/{i}",
        "file": i,
        "precision": prec,
        "sha256": chain[0],
        "status": status,
        "lineage": [{"sha256": sha, "kind": None, "file": sha} for sha in chain],
    }


def test_reference_is_the_nearest_fp32_ancestor_or_the_explicit_one():
    ckpt, onnx = _e("ckpt", "fp32", ["c"]), _e("onnx", "fp32", ["o", "c"])
    int8 = _e("int8", "int8", ["q", "o", "c"])
    entries = [ckpt, onnx, int8]
    assert choose_reference(int8, entries, None)[0] is onnx
    assert choose_reference(onnx, entries, None)[0] is ckpt
    ref, why = choose_reference(ckpt, entries, None)
    assert ref is None and why.startswith("FP32 root")
    onnx["status"] = "unavailable"  # an ancestor that did not run: the next one up
    assert choose_reference(int8, entries, None)[0] is ckpt
    assert choose_reference(int8, entries, "s/ckpt")[0] is ckpt
    assert choose_reference(ckpt, entries, "s/ckpt") == (None, "the --reference itself")


def test_two_students_never_share_a_reference():
    """Student B's INT8 has no FP32 relative among the entries: no reference, never student A's FP32."""
    a_ckpt, a_onnx = _e("a.pt", "fp32", ["ca"], folder="a"), _e("a.onnx", "fp32", ["oa", "ca"], folder="a")
    b_ckpt, b_int8 = _e("b.pt", "fp32", ["cb"], folder="b"), _e("b.int8", "int8", ["qb", "ob", "cb2"], folder="b")
    entries = [a_ckpt, a_onnx, b_ckpt, b_int8]
    ref, why = choose_reference(b_int8, entries, None)
    assert ref is None and "no FP32 entry of the same model" in why and "cb2" in why
    ref, why = choose_reference(b_ckpt, entries, None)
    assert ref is None and why.startswith("FP32 root")  # not compared with student A's checkpoint


def test_reduced_precision_falls_back_to_the_nearest_fp32_relative():
    """An INT8 engine whose ONNX ancestors were not benched: the FP32 engine built from the same ONNX."""
    fp32_eng = _e("fp32.engine", "fp32", ["e32", "o", "c"])
    fp16_eng = _e("fp16.engine", "fp16", ["e16", "o", "c"])
    int8_eng = _e("int8.engine", "int8", ["e8", "q", "o", "c"])
    other = _e("other.onnx", "fp32", ["x", "c2"])
    entries = [other, fp16_eng, fp32_eng, int8_eng]
    assert choose_reference(int8_eng, entries, None)[0] is fp32_eng
    assert choose_reference(fp16_eng, entries, None)[0] is fp32_eng
    assert choose_reference(fp32_eng, entries, None)[0] is None  # a cousin is no reference for FP32


def test_lineage_follows_manifests_and_stops_at_the_checkpoint(artifacts):
    from vsseg_edge.core.manifest import read_manifest

    nodes = lineage(artifacts["int8"])
    assert [n["file"] for n in nodes] == ["tiny.int8.qdq.onnx", "tiny.onnx", "tiny.pt"]
    assert [n["kind"] for n in nodes] == ["qdq_onnx", "onnx", "checkpoint"]
    assert nodes[1]["sha256"] == read_manifest(artifacts["onnx"])["sha256"]
    assert [n["file"] for n in lineage(artifacts["ckpt"])] == ["tiny.pt"]


def test_lineage_finds_a_parent_in_another_folder_among_the_run(artifacts, tmp_path):
    """The demo's layout: the ONNX beside no checkpoint; the checkpoint is found by sha256 among the artifacts."""
    import shutil

    from vsseg_edge.core.manifest import read_manifest

    for suffix in ("", ".json"):
        shutil.copy(str(artifacts["onnx"]) + suffix, tmp_path / ("tiny.onnx" + suffix))
    alone = lineage(tmp_path / "tiny.onnx")
    assert [(n["file"], n["kind"]) for n in alone] == [("tiny.onnx", "onnx"), ("tiny.pt", None)]
    found = lineage(tmp_path / "tiny.onnx", {read_manifest(artifacts["ckpt"])["sha256"]: artifacts["ckpt"]})
    assert [(n["file"], n["kind"]) for n in found] == [("tiny.onnx", "onnx"), ("tiny.pt", "checkpoint")]


def test_unique_names_prefix_the_folder_only_where_file_names_collide():
    from pathlib import Path

    from vsseg_edge.bench.runner import unique_names

    paths = [Path("/r/a/model.pt"), Path("/r/b/model.pt"), Path("/r/b/student.onnx")]
    assert list(unique_names(paths).values()) == ["a/model.pt", "b/model.pt", "student.onnx"]


def test_int8_deltas_are_int8_minus_its_reference_per_class():
    from vsseg_edge.bench.plots import int8_deltas

    ref = {"id": "r", "status": "ok", "precision": "fp32", "accuracy": {"per_class_iou": {"road": 90.0, "car": 50.0}}}
    q = {
        "id": "q",
        "status": "ok",
        "precision": "int8",
        "agreement": {"reference": "r"},
        "accuracy": {"per_class_iou": {"road": 88.5, "car": None}},
    }
    orphan = {
        "id": "o",
        "status": "ok",
        "precision": "int8",
        "agreement": None,
        "accuracy": {"per_class_iou": {"road": 10.0, "car": 10.0}},
    }
    ((entry, deltas),) = int8_deltas([ref, q, orphan])
    assert entry is q and deltas == {"road": pytest.approx(-1.5)}


def test_artifact_specs_read_typed_backend_options(tmp_path):
    from vsseg_edge.bench.artifacts import parse_artifact

    art = parse_artifact("m.onnx::shift_int8=false,threads=2,providers=CUDAExecutionProvider+CPUExecutionProvider")
    assert art.path.name == "m.onnx" and art.options == {
        "shift_int8": False,
        "threads": 2,
        "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    }
    assert parse_artifact(art.spec()).options == art.options  # the spec reads back
    assert parse_artifact("m.pt").options == {} and parse_artifact("m.pt").tag == ""
    assert parse_artifact(("m.pt", {"fp16": True}), "torch").tag == "[fp16=true]"


def test_random_init_checkpoint_is_seeded_and_complete(tmp_path):
    import torch

    from tests.bench.conftest import TINY
    from vsseg_edge.bench.models import random_init_checkpoint
    from vsseg_edge.core.manifest import read_manifest
    from vsseg_edge.models.checkpoint import load_checkpoint

    a = random_init_checkpoint(TINY, tmp_path / "a.pt", size=(32, 64), seed=3)
    b = random_init_checkpoint(TINY, tmp_path / "b.pt", size=(32, 64), seed=3)
    c = random_init_checkpoint(TINY, tmp_path / "c.pt", size=(32, 64), seed=4)
    sa, sb, sc = (load_checkpoint(p)["state_dict"] for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and not all(torch.equal(sa[k], sc[k]) for k in sa)
    man = read_manifest(a, kind="checkpoint")
    assert man["model"] == TINY and len(man["classes"]) == 19
    assert man["input"]["shape"] == [1, 3, 32, 64]


def test_paired_speed_config_is_isolated_repeated_and_skips_accuracy(tmp_path):
    cfg = BenchConfig.paired_speed(str(tmp_path), runs=5, warmup=1, threads=1, repeats=3)
    assert (cfg.isolate, cfg.accuracy, cfg.progress, cfg.repeats, cfg.frames) == (True, False, False, 3, 2)
    assert cfg.backends == ("ort",) and cfg.dataset == tmp_path and cfg.threads == 1
    with pytest.raises(VssegError, match="--repeats"):
        BenchConfig.paired_speed(tmp_path, runs=5, warmup=1, threads=1, repeats=0)
