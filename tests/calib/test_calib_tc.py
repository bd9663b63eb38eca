"""`calibrate` with the temporal-consistency gate: a candidate that flickers fails it (with the QAT command in
the message), the flip-based ranking finds the node whose quantisation causes the flicker, and the manifest
records both gates, the TC frames and flow, and the FP32/INT8 speed ratio.

The flickering model is built so that the cause is known. Its frames show a static scene with sensor noise:
a white block (so the calibrated input range is exactly [0, 1]: min/max ranges, scale 1/127), black, and a
grey block whose pixels are 129 or 130 at random in every frame. Node `tie` computes logit1 − logit0 =
K·(grey − m) with m between 129/255 and the int8 level below it: in FP32 the grey block is class 1 in every
frame, but its input quantised to int8 (1/127 steps) lands on the level under m (class 0) for 129 and above
it (class 1) for 130 — the labels flicker with the noise while FP32's do not. Node `decoy` adds a small
smooth term through the same quantised input and flips nothing. Keeping `tie` in float cures the flicker.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vsseg_edge.calib.config import CalibConfig
from vsseg_edge.calib.pipeline import calibrate
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.manifest import read_manifest, write_manifest
from vsseg_edge.core.preprocess import PreprocessSpec

H, W = 24, 48
SPEC = PreprocessSpec(height=H, width=W, channel_order="bgr", mean=(0, 0, 0), std=(1, 1, 1), scale=1 / 255)
K = 100.0
M = (129 / 255 + 64 / 127) / 2  # between the int8 level 64/127 (= 0.5039) and FP32's 129/255 (= 0.5059)
# ranges from min/max (exact), TensorRT-style symmetric int8 by onnxruntime's quantiser, convolutions only, these
# 3 → 2-channel ones too (placement "all": TensorRT would leave them in float)
CFG = dict(
    target="trt",
    quantizer="ort",
    placement="all",
    method="minmax",
    op_types=("Conv",),
    num_frames=6,
    eval_frames=3,
    threshold=100.0,
    tc_threshold=1.0,
    sensitivity_frames=3,
    speed_runs=2,
    tc_clip_frames=6,
)


def flicker_model(path) -> None:
    """input → tie (1×1 conv: logit1 = K·(mean(x) − M), logit0 = 0) + decoy (tiny 1×1 conv) → logits."""
    w_tie = np.zeros((2, 3, 1, 1), np.float32)
    w_tie[1, :, 0, 0] = K / 3
    b_tie = np.array([0.0, -K * M], np.float32)
    w_decoy = np.full((2, 3, 1, 1), 1e-3, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w_tie, "w_tie"), (b_tie, "b_tie"), (w_decoy, "w_decoy"))]
    nodes = [
        helper.make_node("Conv", ["image", "w_tie", "b_tie"], ["t"], name="tie"),
        helper.make_node("Conv", ["image", "w_decoy"], ["d"], name="decoy"),
        helper.make_node("Add", ["t", "d"], ["logits"], name="sum"),
    ]
    graph = helper.make_graph(
        nodes,
        "flicker",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, H, W])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    write_manifest(path, "onnx", model="flicker", classes=["dark", "bright"], preprocess=SPEC, opset=17)


def noisy_clip(folder, n: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.zeros((H, W, 3), np.uint8)
        img[:, :12] = 255
        img[:, 24:] = rng.choice([129, 130], size=(H, W - 24))[..., None]
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("flicker")
    flicker_model(root / "flicker.onnx")
    return root / "flicker.onnx", noisy_clip(root / "clip")


def test_the_flickering_candidate_fails_the_tc_gate_and_the_message_names_qat(setup, tmp_path):
    model, clip = setup
    out = tmp_path / "f.int8.qdq.onnx"
    with pytest.raises(VssegError) as err:
        calibrate(model, clip, out, CalibConfig(**CFG, max_rounds=0), log=lambda s: None)
    msg = str(err.value)
    assert "TC gate failed" in msg and "vsseg-edge train" in msg and "quant" not in msg.split("train")[0]
    assert "--target trt" in msg and "\n" not in msg
    assert not out.exists() and not list(tmp_path.iterdir())
    # the classes that lost most TC on the gate's frames are named, with the flag that protects them, before QAT
    assert msg.index("--protect-classes 'dark,bright'") < msg.index("vsseg-edge train")


def test_flip_ranking_finds_the_flickering_node_and_keeping_it_in_float_passes(setup, tmp_path):
    model, clip = setup
    out = tmp_path / "f.int8.qdq.onnx"
    man = calibrate(model, clip, out, CalibConfig(**CFG, max_rounds=2), log=lambda s: None)
    gate, tc = man["gate"], man["gate"]["tc"]
    assert gate["initial"]["passed"]  # per frame the disagreement is within the (loose) accuracy threshold
    first = tc["initial"]
    assert not first["passed"] and first["drop"] > 5 and first["tc_fp32"] == 100.0
    assert first["extra_flips"] > 5 and first["flips_fp32"] == 0.0
    assert gate["ranked_by"] == ["INT8-only flips"]
    (top, top_score), (other, other_score) = gate["sensitivity"]
    assert (top, other) == ("tie", "decoy") and top_score > 0.05 and abs(other_score) < 1e-3
    assert man["kept_in_float"] == ["tie"] and gate["passed"]
    assert tc["result"]["passed"] and tc["result"]["drop"] == 0.0
    # the TC frames: the clip's last frames, none of them a calibration frame
    frames = tc["frames"]
    assert frames["how"].startswith("the calibration clip's frames") and frames["pairs"] == frames["frames"] - 1
    assert frames["clips"][0]["last"] == "015.png" and tc["flow"].startswith("OpenCV DIS")
    assert man["calibration"]["frames"]["count"] == 6
    speed = man["speed"]
    assert (
        speed["fp32_ms"] > 0
        and speed["int8_ms"] > 0
        and speed["ratio"] == pytest.approx(speed["fp32_ms"] / speed["int8_ms"], rel=0.05)
    )
    assert read_manifest(out, kind="qdq_onnx", verify=True)["gate"]["tc"]["result"]["passed"]
    # bench shows both gates and the speed ratio from the manifest
    from vsseg_edge.bench.report import calibration_lines
    from vsseg_edge.bench.runner import calibration_facts

    facts = calibration_facts(read_manifest(out))
    assert (facts["tc_fp32"], facts["tc_drop"], facts["kept_in_float"]) == (100.0, 0.0, 1)
    (line,) = calibration_lines({"entries": [{"file": out.name, "calibration": facts}]})
    assert "TC 100.00 → 100.00 (drop 0.00, 90 % interval 0.00 to 0.00)" in line
    assert f"FP32/INT8 speed {speed['ratio']}×" in line and "bound" not in line  # no confidence asked
    assert calibration_facts(read_manifest(model)) is None


def test_tc_frames_given_and_the_gate_switched_off(setup, tmp_path):
    model, clip = setup
    other = noisy_clip(tmp_path / "other", n=5, seed=3)
    man = calibrate(
        model,
        clip,
        tmp_path / "a.onnx",
        CalibConfig(**{**CFG, "tc_threshold": 100.0}, max_rounds=0),
        tc_source=other,
        log=lambda s: None,
    )
    assert man["gate"]["tc"]["frames"]["how"] == "given (--tc-frames)"
    assert man["gate"]["tc"]["frames"]["frames"] == 5 and man["gate"]["tc"]["result"]["pairs"] == 4
    off = calibrate(model, clip, tmp_path / "b.onnx", CalibConfig(**CFG, tc_gate=False), log=lambda s: None)
    assert off["gate"]["tc"] == {"result": None, "initial": None, "frames": None, "flow": None, "skipped": "disabled"}


def test_a_tc_confidence_judges_the_bound_and_is_recorded(setup, tmp_path):
    model, clip = setup
    cfg = CalibConfig(**{**CFG, "tc_threshold": 100.0, "tc_confidence": 0.9}, max_rounds=0)
    res = calibrate(model, clip, tmp_path / "a.onnx", cfg, log=lambda s: None)["gate"]["tc"]["result"]
    assert res["confidence"] == 0.9 and np.isfinite(res["drop_bound"]) and res["passed"]
    assert read_manifest(tmp_path / "a.onnx")["config"]["tc_confidence"] == 0.9
    from vsseg_edge.bench.report import calibration_lines
    from vsseg_edge.bench.runner import calibration_facts

    (line,) = calibration_lines(
        {"entries": [{"file": "a.onnx", "calibration": calibration_facts(read_manifest(tmp_path / "a.onnx"))}]}
    )
    assert f"judged on its 90 % bound {res['drop_bound']:.2f}" in line
    for bad in (1.0, -0.1):
        with pytest.raises(VssegError, match="tc_confidence must be in"):
            CalibConfig(**{**CFG, "tc_confidence": bad})


def test_several_tc_clips_are_judged_each_on_its_own(setup, tmp_path):
    """A folder of two clips: every verdict lists each clip's drop, the worst one decides (`tc_per_clip`, the
    default), and bench's calibration line names it."""
    from vsseg_edge.bench.report import calibration_lines
    from vsseg_edge.bench.runner import calibration_facts

    model, clip = setup
    clips = tmp_path / "clips"
    noisy_clip(clips / "a", n=5, seed=4)
    noisy_clip(clips / "b", n=5, seed=5)
    cfg = CalibConfig(**{**CFG, "tc_threshold": 100.0, "tc_max_frames": 10}, max_rounds=0)
    res = calibrate(model, clip, tmp_path / "a.onnx", cfg, tc_source=clips, log=lambda s: None)["gate"]["tc"]
    result = res["result"]
    assert result["per_clip"] and set(result["clips"]) == {"a", "b"} and result["pairs"] == 8
    facts = calibration_facts(read_manifest(tmp_path / "a.onnx"))
    (line,) = calibration_lines({"entries": [{"file": "a.onnx", "calibration": facts}]})
    worst = max(result["clips"], key=lambda n: result["clips"][n]["drop"])
    assert f"per clip, the worst {worst}: {result['clips'][worst]['drop']:.2f}" in line


def test_camvid_has_no_consecutive_frames_so_tc_is_skipped_with_the_reason(setup, tmp_path):
    model, _ = setup
    root = tmp_path / "camvid"
    for split in ("train", "val"):
        for sub in (split, f"{split}annot"):
            (root / sub).mkdir(parents=True)
        for i in range(6):
            name = f"0001TP_{6690 + 30 * i:06d}.png"
            cv2.imwrite(str(root / split / name), np.full((H, W, 3), 40 * i, np.uint8))
            cv2.imwrite(str(root / f"{split}annot" / name), np.zeros((H, W), np.uint8))
    man = calibrate(model, root, tmp_path / "c.onnx", CalibConfig(**{**CFG, "speed_runs": 0}), log=lambda s: None)
    assert man["gate"]["tc"]["result"] is None and "--tc-frames" in man["gate"]["tc"]["skipped"]
    assert man["speed"] is None


def test_ort_session_profiles_when_asked(setup, tmp_path):
    """The speed analysis reads onnxruntime's profiler through the one session factory."""
    import json

    from vsseg_edge.runtime.backends.ort import ort_session

    model, _ = setup
    sess = ort_session(model, threads=1, profile=str(tmp_path / "prof"))
    sess.run(None, {"image": np.zeros((1, 3, H, W), np.float32)})
    events = json.loads(open(sess.end_profiling()).read())
    ops = {e["args"]["op_name"] for e in events if e.get("cat") == "Node" and "op_name" in e.get("args", {})}
    assert "Conv" in ops  # (onnxruntime fuses the Add into the convolution)
