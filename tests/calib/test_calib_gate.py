"""`calibrate` end to end on the tiny model: manifest, accuracy gate, sensitive-layer search, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest

from vsseg_edge.calib.config import QUANTIZED_READERS, CalibConfig, load_calib_config
from vsseg_edge.calib.pipeline import calibrate
from vsseg_edge.calib.sensitivity import exclusion_rounds
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.manifest import read_manifest

# onnxruntime's quantiser (ModelOpt's Q/DQ, the default where installed, is tested in test_calib_quantize.py)
FAST = dict(target="ort", quantizer="ort", num_frames=6, eval_frames=4, sensitivity_frames=2)


def test_benign_model_passes_the_gate_with_a_full_manifest(tmp_path, cs_root, tiny_onnx):
    out = tmp_path / "tiny.int8.qdq.onnx"
    man = calibrate(tiny_onnx, cs_root, out, CalibConfig(**FAST), log=lambda s: None)
    assert out.is_file() and read_manifest(out, kind="qdq_onnx", verify=True) == man
    assert man["parent"] == {"file": "tiny.onnx", "sha256": read_manifest(tiny_onnx)["sha256"]}
    assert man["precision"] == "int8" and man["target"] == "ort" and man["input"]["shape"] == [1, 3, 64, 128]
    frames = man["calibration"]["frames"]
    assert frames["split"] == "train" and frames["count"] == 6 and frames["seed"] == 0 and len(frames["sha1"]) == 40
    gate = man["gate"]["result"]
    assert gate["passed"] and gate["criterion"] == "miou_drop" and gate["frames"] == 4
    assert gate["agreement"] > 95.0 and gate["drop"] <= 1.0 and gate["miou_fp32"] is not None
    assert man["gate"]["frames"]["split"] == "val" and man["gate"]["rounds"] == []
    assert man["gate"]["evaluated_with"].startswith("onnxruntime CPU integer kernels")  # judged as deployed
    assert man["gate"]["searched"]["evaluated_with"].startswith("exact Q/DQ arithmetic")  # after the exact search
    from vsseg_edge.onnx_graph import qdq_candidates, require_qdq_structure

    assert man["structure"]["ok"] and "/Resize" not in qdq_candidates(onnx.load(str(out)))  # the final Resize: float

    assert require_qdq_structure(out, flavour=None).flavour == "ort"  # flavour read from the manifest
    with pytest.raises(VssegError, match="--out"):
        calibrate(tiny_onnx, cs_root, tiny_onnx, CalibConfig(**FAST), log=lambda s: None)


def test_low_threshold_triggers_the_sensitivity_search(tmp_path, cs_root, image_folder, tiny_onnx):
    # unlabelled held-out frames: the criterion is 100 - agreement, > 0 for any real quantisation; every reader of
    # a quantised tensor reads it through Q/DQ (quantized_readers: []), so the Add is a candidate too
    cfg = CalibConfig(**FAST, threshold=0.0, max_rounds=2, op_types=(), quantized_readers=())
    out = tmp_path / "strict.qdq.onnx"
    with pytest.raises(VssegError, match="accuracy gate failed after 2 round") as err:
        calibrate(tiny_onnx, cs_root, out, cfg, eval_source=image_folder, log=lambda s: None)
    assert "\n" not in str(err.value) and not out.exists() and not list(tmp_path.glob(".strict*"))

    man = calibrate(tiny_onnx, cs_root, out, cfg, eval_source=image_folder, keep_failed=True, log=lambda s: None)
    g = man["gate"]
    assert g["result"]["criterion"] == "disagreement" and not g["result"]["passed"]
    ranked = [name for name, _ in g["sensitivity"]]
    convs = ["/down/down.0/Conv", "/head/Conv", "/res/res.0/Conv", "/stem/stem.0/Conv"]
    assert set(convs) < set(ranked) and "/Add" in ranked  # every node behind Q/DQ, not only convolutions
    scores = [s for _, s in g["sensitivity"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert [r["kept_in_float"] for r in g["rounds"]] == [ranked[:1], ranked[:2]]
    candidates = [(g["initial"]["drop"], [])] + [(r["drop"], r["kept_in_float"]) for r in g["rounds"]]
    best_drop, best_keep = min(candidates, key=lambda c: c[0])
    assert man["kept_in_float"] == best_keep  # the best model is kept, not the last
    assert sorted(man["structure"]["float_convs"]) == sorted(n for n in best_keep if n in convs)
    assert man["excluded_layers"] == list(dict.fromkeys(["/Resize", *best_keep]))
    assert abs(g["result"]["drop"] - best_drop) < 1e-3


def test_gate_passes_once_the_sensitive_layers_are_kept_in_float(tmp_path, cs_root, image_folder, tiny_onnx):
    """A threshold between the first quantisation's error and the best round's: the loop stops at that round."""
    probe = calibrate(
        tiny_onnx,
        cs_root,
        tmp_path / "probe.onnx",
        CalibConfig(**FAST, threshold=0.0, max_rounds=3),
        eval_source=image_folder,
        keep_failed=True,
        log=lambda s: None,
    )["gate"]
    best = min(probe["rounds"], key=lambda r: r["drop"])
    assert best["drop"] < probe["initial"]["drop"]  # keeping layers in float helped on this model
    cfg = CalibConfig(**FAST, threshold=best["drop"] + 1e-4, max_rounds=3)  # drops are stored to 4 decimals
    man = calibrate(tiny_onnx, cs_root, tmp_path / "ok.onnx", cfg, eval_source=image_folder, log=lambda s: None)
    gate = man["gate"]
    assert gate["result"]["passed"] and not gate["initial"]["passed"]
    expected = next(r for r in probe["rounds"] if r["drop"] <= cfg.threshold)
    assert gate["rounds"][-1]["kept_in_float"] == expected["kept_in_float"]
    assert all(not r["passed"] for r in gate["rounds"][:-1])
    assert set(expected["kept_in_float"]) <= set(man["excluded_layers"])


def test_trt_target_without_modelopt_is_symmetric_and_judged_with_exact_qdq(tmp_path, cs_root, tiny_onnx):
    out = tmp_path / "tiny.trt.qdq.onnx"
    man = calibrate(tiny_onnx, cs_root, out, CalibConfig(**{**FAST, "target": "trt"}), log=lambda s: None)
    assert man["target"] == "trt" and man["structure"]["flavour"] == "trt" and man["structure"]["ok"]
    assert man["quantization"]["quantizer"] == "onnxruntime.quantize_static (trt settings)"
    assert man["quantization"]["settings"]["extra_options"]["QuantizeBias"] is False
    assert man["gate"]["evaluated_with"].startswith("exact Q/DQ arithmetic")
    assert man["gate"]["result"]["passed"] and man["excluded_layers"] == []


def test_only_convolutions_read_through_qdq_by_default(tmp_path, cs_root, tiny_onnx):
    """The residual Add reads the float tensors behind the Q/DQ its convolutions read (calib float_readers)."""

    from vsseg_edge.onnx_graph import qdq_candidates

    out = tmp_path / "readers.qdq.onnx"
    cfg = CalibConfig(**{**FAST, "target": "trt"}, threshold=100.0)
    man = calibrate(tiny_onnx, cs_root, out, cfg, log=lambda s: None)
    ops = {n.name: n.op_type for n in onnx.load(str(out)).graph.node}
    assert {ops[n] for n in qdq_candidates(onnx.load(str(out)))} == {"Conv"}
    assert man["quantization"]["readers_in_float"] == ["/Add"] and man["structure"]["ok"]
    assert man["quantization"]["quantized_readers"] == ["Conv", "ConvTranspose", "MatMul", "Gemm"]
    assert CalibConfig(target="ort").readers == QUANTIZED_READERS  # both flavours (round 5)
    assert CalibConfig(target="ort", quantized_readers=[]).readers == ()


def test_exclusion_rounds_are_bounded_and_never_exclude_everything():
    ranked = [(f"c{i}", 10 - i) for i in range(6)]
    assert exclusion_rounds(ranked, 4) == [
        ["c0"],
        ["c0", "c1"],
        ["c0", "c1", "c2", "c3"],
        ["c0", "c1", "c2", "c3", "c4"],
    ]
    assert exclusion_rounds(ranked, 2) == [["c0"], ["c0", "c1"]]
    assert exclusion_rounds([("only", 1.0)], 4) == []
    assert exclusion_rounds([("helps", 1.0)], 4, candidates=2) == [["helps"]]  # the other node stays quantised


def test_calibration_never_uses_gate_frames(tmp_path, cs_root, tiny_onnx):
    cfg = CalibConfig(**{**FAST, "num_frames": 3}, split="val", eval_split="val")
    with pytest.raises(VssegError, match="also calibration frames"):
        calibrate(tiny_onnx, cs_root, tmp_path / "x.onnx", cfg, log=lambda s: None)


def test_fp32_model_without_manifest_is_refused(tmp_path, cs_root, tiny_onnx):
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(tiny_onnx.read_bytes())
    with pytest.raises(VssegError, match="no manifest"):
        calibrate(bare, cs_root, tmp_path / "x.onnx", CalibConfig(**FAST), log=lambda s: None)


def test_presets_load_and_unknown_keys_are_rejected(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "calib"
    assert load_calib_config(root / "cityscapes_entropy.yaml").target == "trt"
    ort = load_calib_config(root / "ort_cpu.yaml", ["num_frames=20"], method="minmax")
    assert (ort.target, ort.num_frames, ort.method) == ("ort", 20, "minmax")
    bad = tmp_path / "bad.yaml"
    bad.write_text("methd: entropy\n")
    with pytest.raises(VssegError, match="unknown key"):
        load_calib_config(bad)
    with pytest.raises(VssegError, match="method must be one of"):
        CalibConfig(method="kl")


def test_cli_empty_frames_folder_is_one_line_error(tmp_path, tiny_onnx):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vsseg_edge.cli",
            "calibrate",
            str(tiny_onnx),
            "--frames",
            str(empty),
            "--out",
            str(tmp_path / "o.onnx"),
            "--target",
            "ort",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "folder is empty" in proc.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_ort_path_runs_without_torch(tmp_path, cs_root, tiny_onnx):
    """The calib ORT path imports and runs without torch (an edge box has none)."""
    code = (
        "import sys; from pathlib import Path\n"
        "from vsseg_edge.calib.config import CalibConfig\n"
        "from vsseg_edge.calib.pipeline import calibrate\n"
        "from vsseg_edge.calib import legacy, frames, gate, sensitivity, commands\n"
        "from vsseg_edge import onnx_graph\n"
        f"calibrate(Path({str(tiny_onnx)!r}), Path({str(cs_root)!r}), Path({str(tmp_path / 'q.onnx')!r}),\n"
        "          CalibConfig(target='ort', num_frames=4, eval_frames=2), log=lambda s: None)\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"
    assert json.loads((tmp_path / "q.onnx.json").read_text())["kind"] == "qdq_onnx"


def test_cli_calibrate_writes_model_and_manifest(tmp_path, cs_root, tiny_onnx):
    from typer.testing import CliRunner

    from vsseg_edge.cli import app

    out = tmp_path / "cli.int8.qdq.onnx"
    res = CliRunner().invoke(
        app,
        [
            "calibrate",
            str(tiny_onnx),
            "--frames",
            str(cs_root),
            "--out",
            str(out),
            "--target",
            "ort",
            "--method",
            "minmax",
            "--num-frames",
            "4",
            "--seed",
            "7",
            "--override",
            "eval_frames=2",
        ],
    )
    assert res.exit_code == 0, res.output
    man = read_manifest(out, kind="qdq_onnx", verify=True)
    assert man["calibration"]["method"] == "minmax" and man["calibration"]["frames"]["seed"] == 7
    assert man["calibration"]["frames"]["count"] == 4 and man["gate"]["result"]["frames"] == 2


def test_onnxruntime_flavour_searches_as_the_tensorrt_flavour_then_is_judged_on_its_kernels(
    tmp_path, cs_root, image_folder, tiny_onnx
):
    """With ModelOpt's Q/DQ and the same ranges, the onnxruntime flavour's exact search ranks the nodes and keeps them
    in float as the TensorRT flavour's does: its model is that one, re-encoded exactly (the same verdict to the last
    digit); then both gates judge it again on onnxruntime's kernels. `search_arithmetic: kernels` searches there."""
    pytest.importorskip("modelopt.onnx.quantization")
    same = dict(num_frames=6, eval_frames=4, sensitivity_frames=2, threshold=0.0, max_rounds=1, protect_classes=[])

    def run(name, **cfg):
        return calibrate(
            tiny_onnx,
            cs_root,
            tmp_path / f"{name}.onnx",
            CalibConfig(**same, **cfg),
            eval_source=image_folder,
            keep_failed=True,
            log=lambda s: None,
        )["gate"]

    trt, ort = run("trt", target="trt"), run("ort", target="ort", integer_weights="uint8")
    assert trt["searched"] is None and trt["evaluated_with"].startswith("exact Q/DQ arithmetic")
    assert ort["sensitivity"] == trt["sensitivity"] and ort["sensitivity"][0][1] > 0
    assert ort["rounds"] == trt["rounds"] and len(ort["rounds"]) == 1
    searched = {k: v for k, v in ort["searched"].items() if k != "evaluated_with"}
    assert searched == trt["result"] | {"tc": trt["tc"]["result"], "passed_both": trt["passed"]}
    assert ort["searched"]["evaluated_with"].startswith("exact Q/DQ arithmetic")
    assert ort["evaluated_with"].startswith("onnxruntime CPU integer kernels") and ort["result"]["agreement"] > 90.0

    kernels = run("kernels", target="ort", search_arithmetic="kernels")
    assert kernels["searched"] is None and kernels["evaluated_with"].startswith("onnxruntime CPU integer kernels")
    assert len(kernels["rounds"]) == 1
    with pytest.raises(VssegError, match="search_arithmetic: kernels is for target 'ort'"):
        CalibConfig(target="trt", search_arithmetic="kernels")
    with pytest.raises(VssegError, match="search_arithmetic must be one of"):
        CalibConfig(target="ort", search_arithmetic="fast")


def test_the_kernels_verdict_decides_after_the_exact_search(tmp_path, cs_root, tiny_onnx, monkeypatch):
    """A model that passes under exact arithmetic but not on onnxruntime's kernels (as when int8 weights saturate on
    a CPU without VNNI) fails, and the message says so and what to change, not QAT."""
    from vsseg_edge.calib import gate as gate_module

    real = gate_module.Evaluator.gate

    def worse_on_kernels(self, model, threshold):
        result = real(self, model, threshold)
        if not self.exact_qdq:
            result.drop, result.passed = threshold + 5.0, False
        return result

    monkeypatch.setattr(gate_module.Evaluator, "gate", worse_on_kernels)
    cfg, out = CalibConfig(**FAST, max_rounds=0), tmp_path / "k.onnx"
    with pytest.raises(VssegError, match="after passing under exact Q/DQ arithmetic") as err:
        calibrate(tiny_onnx, cs_root, out, cfg, log=lambda s: None)
    assert "integer_weights" in str(err.value) and "qat" not in str(err.value) and not out.exists()
    man = calibrate(tiny_onnx, cs_root, out, cfg, keep_failed=True, log=lambda s: None)
    assert man["gate"]["searched"]["passed_both"] and not man["gate"]["passed"]
    with pytest.raises(VssegError, match="integer_outputs=false"):  # the rounding it added is the suspect
        calibrate(
            tiny_onnx, cs_root, tmp_path / "i.onnx", CalibConfig(**FAST, integer_outputs=True), log=lambda s: None
        )


def test_trt_flavour_search_keeps_nodes_in_float_and_stays_a_valid_trt_model(
    tmp_path, cs_root, image_folder, tiny_onnx
):
    cfg = CalibConfig(**{**FAST, "target": "trt"}, threshold=0.0, max_rounds=1)
    man = calibrate(
        tiny_onnx, cs_root, tmp_path / "t.onnx", cfg, eval_source=image_folder, keep_failed=True, log=lambda s: None
    )
    g = man["gate"]
    assert g["evaluated_with"].startswith("exact Q/DQ arithmetic") and len(g["rounds"]) == 1
    kept = g["rounds"][0]["kept_in_float"]
    assert len(kept) == 1 and kept[0] == g["sensitivity"][0][0] and g["sensitivity"][0][1] > 0
    assert man["structure"]["ok"] and man["structure"]["flavour"] == "trt"  # still symmetric int8 elsewhere
    if g["result"]["drop"] < g["initial"]["drop"]:  # the round helped: its model is the one written
        assert man["kept_in_float"] == kept and man["excluded_layers"] == kept
