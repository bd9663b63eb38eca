"""Protected classes (calib/protect.py): the frames richest in them, the class-balanced error, the ranking that
keeps the node flipping them in float, and `calibrate --protect-classes` end to end."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest

from vsseg_edge.calib.config import CalibConfig
from vsseg_edge.calib.frames import calibration_frames
from vsseg_edge.calib.pipeline import calibrate
from vsseg_edge.calib.protect import class_disagreement, class_indices, protect_classes, richest_frames
from vsseg_edge.calib.quantize_ort import FrameReader, quantize_ort
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.manifest import manifest_preprocess, read_manifest
from vsseg_edge.onnx_graph import qdq_candidates

from .test_sensitivity_qdq import _badly_scale

FAST = dict(target="trt", quantizer="ort", num_frames=6, eval_frames=4, sensitivity_frames=2, tc_gate=False)


def test_richest_frames_weigh_each_class_by_its_share_of_the_pool():
    # class 1 is common (100 px per frame), class 2 rare: frame 3 holds all of class 2 and wins over frames with
    # more pixels of class 1; class 3 is in no frame and is reported absent
    maps = [np.zeros((10, 10), np.uint8) for _ in range(4)]
    for m, n in zip(maps, (60, 40, 20, 10)):
        m.flat[:n] = 1
    maps[3].flat[10:12] = 2
    order, present = richest_frames(maps, [1, 2, 3], 2, ["a", "b", "c", "d"])
    assert order == [3, 0] and present == [1, 2]
    assert richest_frames(maps, [3], 2, list("abcd")) == ([0, 1], [])  # nothing present: by key


def test_class_disagreement_is_per_class_over_the_reference_pixels():
    ref = np.array([[1, 1, 1, 1, 2, 2, 0, 0]])
    got = np.array([[1, 1, 0, 0, 2, 0, 2, 2]])
    assert class_disagreement(got, ref, [1, 2, 3]) == {1: 0.5, 2: 0.5}  # pixels INT8 adds to a class do not count


def test_unknown_class_names_the_model_classes_in_one_line():
    with pytest.raises(VssegError, match=r"protect_classes: m.onnx has no class 'sgn'; its classes are road, sign"):
        class_indices(["sgn"], ["road", "sign"], "m.onnx")
    assert class_indices(["sign", "road", "sign"], ["road", "sign"], "m") == [1, 0]


@pytest.fixture(scope="module")
def trt_model(tmp_path_factory, cs_root, tiny_onnx):
    """The tiny net's TensorRT-flavour Q/DQ (onnxruntime's quantiser), its spec and a pool of 8 train frames."""
    man = read_manifest(tiny_onnx, kind="onnx")
    spec = manifest_preprocess(man, "tiny")
    pool, _ = calibration_frames(cs_root, 8, seed=0)
    out = tmp_path_factory.mktemp("protect") / "trt.onnx"
    quantize_ort(
        tiny_onnx,
        out,
        target="trt",
        method="minmax",
        cache_path=out.with_suffix(".json"),
        reader=FrameReader(pool.frames, spec, "image"),
        op_types=("Conv",),
    )
    return onnx.load(str(out)), spec, pool, man["classes"]


def _rarest_predicted(tiny_onnx, pool, spec, classes, k=2) -> list[str]:
    from vsseg_edge.calib.gate import Evaluator

    labels = np.stack(Evaluator(tiny_onnx, pool.frames, spec, classes, threads=1, error_frames=0).fp32_labels)
    ids, counts = np.unique(labels, return_counts=True)
    return [classes[i] for i in ids[np.argsort(counts)][:k]]


def test_the_node_that_flips_the_protected_classes_goes_to_float(trt_model, tiny_onnx):
    model, spec, pool, classes = trt_model
    names = _rarest_predicted(tiny_onnx, pool, spec, classes)
    bad = _badly_scale(model, "/down/down.0/Conv", 0.05)  # a range 20× too narrow: clips, flips the rare classes
    logged = []
    out, rec = protect_classes(
        bad, tiny_onnx, pool, spec, classes, names, keep=1, frames=4, threads=1, exact_qdq=True, log=logged.append
    )
    assert rec.kept_in_float == ["/down/down.0/Conv"] == [rec.ranking[0][0]] and rec.ranking[0][1] > 0
    assert "/down/down.0/Conv" not in qdq_candidates(out) and "/down/down.0/Conv" in qdq_candidates(bad)
    assert set(rec.classes) == set(names) and len(rec.frames["keys"]) == 4 and rec.frames["count"] == 8
    worst = min(rec.agreement_before, key=rec.agreement_before.get)
    assert rec.agreement_after[worst] > rec.agreement_before[worst]
    assert "node(s) kept in float" in rec.summary() and any("ranking" in s for s in logged)


def test_a_class_the_frames_never_show_is_refused(trt_model, tiny_onnx):
    model, spec, pool, classes = trt_model
    shown = set(_rarest_predicted(tiny_onnx, pool, spec, classes, k=len(classes)))
    absent = next(c for c in classes if c not in shown)
    with pytest.raises(VssegError, match=rf"--protect-frames .*predicts none of {absent}"):
        protect_classes(model, tiny_onnx, pool, spec, classes, [absent], keep=1, frames=4, threads=1)
    # beside a class they show, it is left out, and the log says so
    logged = []
    _, rec = protect_classes(
        model,
        tiny_onnx,
        pool,
        spec,
        classes,
        [absent, *sorted(shown)[:1]],
        keep=1,
        frames=4,
        threads=1,
        log=logged.append,
    )
    assert absent not in rec.classes and f"FP32 predicts no {absent} there: not protected" in logged[0]


def test_calibrate_protects_classes_records_them_and_judges_again(tmp_path, cs_root, image_folder, tiny_onnx):
    man = read_manifest(tiny_onnx, kind="onnx")
    pool, _ = calibration_frames(cs_root, 12, seed=0)
    names = _rarest_predicted(tiny_onnx, pool, manifest_preprocess(man, "tiny"), man["classes"])
    cfg = CalibConfig(**FAST, protect_classes=tuple(names), protect_nodes=2, protect_frames=3)
    logged = []
    out = tmp_path / "p.int8.qdq.onnx"
    got = calibrate(tiny_onnx, cs_root, out, cfg, protect_source=image_folder, log=logged.append)
    rec = got["protected"]
    assert rec["frames"]["source"] == str(image_folder) and len(rec["frames"]["keys"]) == 3
    assert 1 <= len(rec["kept_in_float"]) <= 2 and rec["ranking"][0][0] == rec["kept_in_float"][0]
    assert set(rec["kept_in_float"]) <= set(got["excluded_layers"])
    assert not set(rec["kept_in_float"]) & set(qdq_candidates(onnx.load(str(out))))
    assert got["quantization"]["protected_in_float"] == rec["kept_in_float"]
    assert any(s.startswith("gates after protecting") for s in logged)  # the gate judged the protected model
    assert read_manifest(out, kind="qdq_onnx", verify=True) == got and got["structure"]["ok"]
    from vsseg_edge.bench.report import calibration_lines
    from vsseg_edge.bench.runner import calibration_facts

    (line,) = calibration_lines({"entries": [{"file": out.name, "calibration": calibration_facts(got)}]})
    assert f"{len(rec['kept_in_float'])} more for {', '.join(rec['classes'])})" in line  # bench names them

    # without --protect-frames: the calibration source's train split (the gate's val frames are another split);
    # without the gates (--no-gate) the protection still runs, and nothing is judged
    plain = calibrate(tiny_onnx, cs_root, tmp_path / "q.onnx", replace(cfg, gate=False), log=lambda s: None)
    assert plain["protected"]["frames"]["split"] == "train" and plain["protected"]["kept_in_float"]
    assert plain["gate"]["result"] is None and plain["gate"]["skipped"] == "disabled"
    assert calibrate(tiny_onnx, cs_root, tmp_path / "r.onnx", CalibConfig(**FAST), log=print)["protected"] is None
    with pytest.raises(VssegError, match="--protect-frames .*: give the classes to protect with --protect-classes"):
        calibrate(tiny_onnx, cs_root, tmp_path / "s.onnx", CalibConfig(**FAST), protect_source=image_folder)


def test_the_pool_leaves_out_the_frames_that_judge(tmp_path, image_folder, tiny_onnx):
    """From a plain folder the gate's held-out frames come from the same files: never ranked on."""
    from vsseg_edge.calib.pipeline import _protect_pool

    cfg = CalibConfig(**FAST, protect_classes=("road",), protect_frames=2)
    _, held = calibration_frames(image_folder, 4, seed=0, holdout=3)
    pool = _protect_pool(cfg, image_folder, held, None)
    assert len(held) == 3 and len(pool) == 10 - 3
    assert not {f.key for f in held.frames} & {f.key for f in pool.frames}


def test_cli_protect_classes_parses_names_and_refuses_bad_ones_in_one_line(tmp_path, cs_root, tiny_onnx):
    import subprocess
    import sys

    def cli(out: str, classes: str) -> subprocess.CompletedProcess:
        args = ["calibrate", str(tiny_onnx), "--frames", str(cs_root), "--num-frames", "4", "--target", "ort"]
        args += ["--out", str(tmp_path / out), "--protect-classes", classes]
        return subprocess.run([sys.executable, "-m", "vsseg_edge.cli", *args], capture_output=True, text=True)

    for out, classes, msg in (
        ("e.onnx", " , ", "--protect-classes ' , ': expected class names"),
        ("n.onnx", "road, no such class", "has no class 'no such class'; its classes are road, sidewalk"),
    ):
        proc = cli(out, classes)
        assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and msg in proc.stderr, proc.stderr
        assert not (tmp_path / out).exists()
    with pytest.raises(VssegError, match="protect_nodes and protect_frames must be positive"):
        CalibConfig(protect_nodes=0)


def test_the_classes_that_lose_most_tc_are_named_until_some_are_protected():
    from vsseg_edge.calib.pipeline import _protect_hint
    from vsseg_edge.calib.temporal import TcResult

    per_class = {
        "road": [90.0, 89.5],
        "sign": [30.0, 20.0],
        "pole": [40.0, 37.0],
        "sky": [None, 0.0],
        "car": [50, 47.5],
    }
    tc = TcResult(False, 1.0, 60.0, 55.0, 5.0, 1.0, 2.0, 1.0, 10, 11, per_class=per_class)
    assert [c for c, _ in tc.class_drops()] == ["sign", "pole", "car", "road"]  # sky: one model only
    assert _protect_hint(CalibConfig(), tc) == ["sign", "pole", "car"]
    assert _protect_hint(CalibConfig(tc_threshold=1.3), tc) == ["sign", "pole"]  # twice the threshold: 2.6 points
    assert _protect_hint(CalibConfig(), None) == []


def test_the_default_is_the_class_sets_thin_classes_and_none_turns_it_off():
    from vsseg_edge.calib.commands import _class_list
    from vsseg_edge.calib.pipeline import protected_classes
    from vsseg_edge.core.labels import CAMVID, CITYSCAPES

    assert protected_classes(CalibConfig(), CAMVID.classes) == (("sign symbol", "pole"), True)
    assert protected_classes(CalibConfig(), CITYSCAPES.classes) == ((), False)  # not measured: none
    assert protected_classes(CalibConfig(), ["a", "b"]) == ((), False)
    assert protected_classes(CalibConfig(protect_classes=()), CAMVID.classes) == ((), False)
    assert protected_classes(CalibConfig(protect_classes=("pole",)), CAMVID.classes) == (("pole",), False)
    assert _class_list(" sign symbol , pole ") == ("sign symbol", "pole") and _class_list("None") == ()
    assert _class_list(None) is None


@pytest.fixture(scope="module")
def camvid_tiny(tmp_path_factory):
    """The tiny net with 11 outputs and CamVid's class names (read-only)."""
    from vsseg_edge.core.labels import CAMVID
    from vsseg_edge.core.manifest import write_manifest
    from vsseg_edge.core.preprocess import PreprocessSpec

    from .conftest import H, W, export_tiny_onnx

    path = export_tiny_onnx(tmp_path_factory.mktemp("camvid") / "tiny_camvid.onnx", num_classes=11)
    write_manifest(
        path, "onnx", model="tiny", classes=list(CAMVID.classes), preprocess=PreprocessSpec(height=H, width=W), opset=17
    )
    return path


def test_camvid_models_are_protected_by_default_and_skipped_without_the_classes(
    tmp_path, cs_root, camvid_tiny, monkeypatch
):
    """The default protects the class set's thin classes; where the frames show none of them, a log line skips it."""
    from dataclasses import replace as dc_replace

    from vsseg_edge.core import labels

    man = read_manifest(camvid_tiny, kind="onnx")
    pool, _ = calibration_frames(cs_root, 12, seed=0)
    spec = manifest_preprocess(man, "tiny")
    shown = _rarest_predicted(camvid_tiny, pool, spec, man["classes"], k=len(man["classes"]))
    absent = next(c for c in man["classes"] if c not in shown)
    cfg = CalibConfig(**FAST, protect_nodes=1, protect_frames=3, gate=False)  # the frames' labels are Cityscapes'
    for thin, expect in ((shown[:1], True), ((absent,), False)):
        monkeypatch.setitem(labels.LABEL_SETS, "camvid", dc_replace(labels.CAMVID, thin=tuple(thin)))
        logged = []
        got = calibrate(camvid_tiny, cs_root, tmp_path / f"{expect}.onnx", cfg, log=logged.append)
        if expect:
            assert got["protected"]["default"] and got["protected"]["classes"] == list(thin)
            assert any("(the class set default)" in s for s in logged)
        else:
            assert got["protected"] is None
            assert any(s.startswith("protected classes: skipped, the FP32 model predicts none of") for s in logged)
