"""INT8 without flicker: temporal consistency (TC), accuracy and speed of INT8 models against their FP32 parents.

For the published ESPNet CamVid and Cityscapes models (and a trained student when one is given), every variant —
post-training quantisation (PTQ) through `vsseg-edge calibrate` with its settings, and quantisation-aware
fine-tuning (QAT) through `vsseg-edge train` + `vsseg-edge export` — is measured the same way, on real clips
that no calibration, gate or fine-tuning ever saw:

- TC of FP32 and INT8 and their drop, label flips between frames (all, and INT8-only), argmax agreement with
  FP32: `calib.temporal.TemporalGate` (the gate's own measurement: consecutive frames resized to the model's
  input, OpenCV DIS flow between them, `metrics.tc` with nearest warping, out-of-frame pixels excluded);
- mIoU on CamVid val (CamVid models) through `measure.accuracy.evaluate_runner`;
- the FP32/INT8 latency ratio on this CPU (`calib.speed.measure_speed`, interleaved runs), and where the time
  goes: onnxruntime's per-op-type profile of FP32 and each INT8 model (`--parts speed`).

The TensorRT flavour is judged with exact Q/DQ arithmetic on onnxruntime (no graph optimisation: float math on
quantised values, int32-exact for these layer sizes, as TensorRT computes); it has not run on TensorRT.

Clips (../shared/data/video): held out — `pandaset_sf_front` (80 frames, 10 Hz) and the last third of
`cosmos_highway_sunset.mp4` (frames 156–232); calibration and fine-tuning use the first two thirds of the
cosmos clip (frames 0–155) and CamVid train frames. Results are cached per step under --work, so an
interrupted run continues where it stopped.

    python benchmarks/int8_tc.py --work runs/int8_tc                     # all parts
    python benchmarks/int8_tc.py --work runs/int8_tc --parts camvid      # one model
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VSSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
SPLIT = 156  # cosmos frames [0, SPLIT) calibrate / fine-tune, [SPLIT, 233) are held out for TC
MODELS = {"camvid": ("espnet-camvid", "espnet_p_2_q_8_camvid.pth"),
          "cityscapes": ("espnet-cityscapes", "espnet_p_2_q_8_cityscapes.pth")}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# --- data -------------------------------------------------------------------------------------------------

def decoded_cosmos() -> list[Path]:
    """The cosmos clip's frames, decoded once by the video dataset kind (frame cache)."""
    from vsseg_edge.data.datasets import open_dataset

    ds = open_dataset(SHARED / "video" / "cosmos_highway_sunset.mp4", "train", kind="video")
    return [r.image for r in ds.frames()]


def frame_folder(folder: Path, frames: list[Path]) -> Path:
    """A folder of links to `frames` (in order): a clip or a calibration source made of part of another."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        link = folder / f"{i:06d}{f.suffix}"
        if not link.exists():
            link.symlink_to(f.resolve())
    return folder


def prepare_data(work: Path) -> dict:
    cosmos = decoded_cosmos()
    camvid12 = work / "data" / "camvid12"
    sample = sorted((SHARED / "camvid_sample" / "images").glob("*.png"))
    frame_folder(camvid12, sample[0::2])  # the calibration: 12 CamVid train frames
    gate12 = work / "data" / "camvid12_gate"
    for sub in ("images", "labels"):
        frame_folder(gate12 / sub, [SHARED / "camvid_sample" / sub / p.name for p in sample[1::2]])
    return {"cosmos_a": frame_folder(work / "data" / "cosmos_a", cosmos[:SPLIT]),
            "cosmos_b": frame_folder(work / "data" / "cosmos_b", cosmos[SPLIT:]),
            "pandaset": SHARED / "video" / "pandaset_sf_front", "camvid12": camvid12, "camvid12_gate": gate12,
            "camvid_val": SHARED / "camvid_full" / "CamVid"}


# --- artifacts --------------------------------------------------------------------------------------------

def fp32_onnx(work: Path, key: str) -> Path:
    """The published model as FP32 ONNX with its manifest: `vsseg-edge export` of the zoo checkpoint, or, in a
    checkout without the zoo, of a checkpoint made from the published weights with their preprocessing."""
    out = work / key / f"{MODELS[key][0]}.onnx"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        from vsseg_edge.zoo import resolve  # noqa: F401
        source = MODELS[key][0]
    except ImportError:
        source = str(published_checkpoint(work, key))
    cli("export", source, "--out", str(out))
    return out


def published_checkpoint(work: Path, key: str) -> Path:
    from vsseg_edge.core.labels import get_label_set
    from vsseg_edge.models import create_model
    from vsseg_edge.models.checkpoint import save_checkpoint
    from vsseg_edge.models.espnet import published_preprocess

    out = work / key / f"{MODELS[key][0]}.pt"
    if not out.is_file():
        labels = get_label_set(key)
        model = create_model("espnet", labels.num_classes, weights=str(SHARED / "weights" / MODELS[key][1]))
        save_checkpoint(out, model, model_name="espnet", classes=list(labels.classes),
                        preprocess=published_preprocess(key), model_kwargs=dict(model.arch_kwargs))
    return out


def cli(*args: str) -> None:
    log("vsseg-edge", " ".join(args))
    subprocess.run([sys.executable, "-m", "vsseg_edge.cli", *args], check=True)


def calibrated(work: Path, key: str, name: str, fp32: Path, frames: Path, preset: str, tc_frames: Path | None,
               eval_source: Path | None, **settings) -> Path:
    """`calibrate` with a preset and settings (the library call behind `vsseg-edge calibrate`); kept on failure."""
    from vsseg_edge.calib.config import load_calib_config
    from vsseg_edge.calib.pipeline import calibrate

    out = work / key / f"{name}.int8.qdq.onnx"
    if out.is_file() and (out.parent / (out.name + ".json")).is_file():
        return out
    cfg = load_calib_config(REPO / "calib" / preset, **settings)
    t0 = time.perf_counter()
    calibrate(fp32, frames, out, cfg, eval_source=eval_source, keep_failed=True, tc_source=tc_frames,
              log=lambda s: log("   ", s))
    log(f"{name}: calibrated in {time.perf_counter() - t0:.0f} s")
    return out


# --- measurement ------------------------------------------------------------------------------------------

def predictor(threads: int):
    """predict(model, frames) → label maps at model resolution; INT8 files of the TensorRT flavour under exact
    Q/DQ arithmetic, other INT8 files on onnxruntime's kernels (as the runtime runs them), FP32 as is."""
    from vsseg_edge.core.manifest import read_manifest
    from vsseg_edge.measure.predict import predict
    from vsseg_edge.runtime.backends import open_backend

    def run(model, frames):
        man = read_manifest(model)
        exact = man["kind"] == "qdq_onnx" and man.get("target") == "trt"
        with open_backend(model, "ort", providers=["CPUExecutionProvider"], threads=threads,
                          exact_qdq=exact) as runner:
            return predict(runner, frames, at_frame_size=False).labels

    return run


def tc_clip(path: Path, max_frames: int):
    from vsseg_edge.calib.temporal import tc_frames_from

    return tc_frames_from(path, max_frames=max_frames, clip_frames=max_frames, how="held out for the report")


def measure_variant(fp32: Path, model: Path, clips: dict, gates: dict, threads: int) -> dict:
    out = {}
    for name, gate in gates.items():
        r = gate.measure(model, 1.0)
        out[name] = r.to_dict()
        log(f"   {model.name} on {name}: {r.summary()}, agreement {r.agreement:.2f} %")
    return out


def camvid_miou(model: Path, camvid_root: Path, threads: int) -> dict:
    from vsseg_edge.core.manifest import read_manifest
    from vsseg_edge.data.datasets import open_dataset
    from vsseg_edge.measure.accuracy import evaluate_runner
    from vsseg_edge.runtime.backends import open_backend

    man = read_manifest(model)
    exact = man["kind"] == "qdq_onnx" and man.get("target") == "trt"
    ds = open_dataset(camvid_root, "val", kind="camvid")
    with open_backend(model, "ort", providers=["CPUExecutionProvider"], threads=threads, exact_qdq=exact) as r:
        acc = evaluate_runner(r, ds, None, tc=False, progress=False)
    return {"miou": acc.miou, "frames": acc.labelled_frames, "per_class": acc.per_class_iou}


def speed(fp32: Path, model: Path, frame_source: Path, threads: int, runs: int) -> dict:
    from vsseg_edge.calib.speed import measure_speed
    from vsseg_edge.core.manifest import manifest_preprocess, read_manifest
    from vsseg_edge.data.frame_source import open_frame_source

    man = read_manifest(fp32)
    ds = open_frame_source(frame_source, "val")
    frame = ds.read_image(ds.frames()[0])
    return measure_speed(fp32, model, manifest_preprocess(man, str(fp32)), frame, runs=runs, threads=threads,
                         classes=man["classes"])


def op_profile(model: Path, threads: int, runs: int = 5) -> dict:
    """Milliseconds per op type of onnxruntime's optimised graph (CPU provider, its profiler) for one model, as
    the runtime's onnxruntime backend loads it (a TensorRT-flavour model with activations shifted to uint8)."""
    import tempfile
    from collections import defaultdict

    import numpy as np
    import onnx

    from vsseg_edge.core.manifest import manifest_preprocess, read_manifest
    from vsseg_edge.onnx_graph import shift_activations_to_uint8
    from vsseg_edge.runtime.backends.ort import ort_session

    man = read_manifest(model)
    proto = onnx.load(str(model))
    if man["kind"] == "qdq_onnx":
        proto = shift_activations_to_uint8(proto)
    x = np.zeros(manifest_preprocess(man, str(model)).input_shape(1), np.float32)
    with tempfile.TemporaryDirectory(prefix="vsseg-profile-") as tmp:
        sess = ort_session(proto, threads=threads, profile=str(Path(tmp) / "p"))
        name = sess.get_inputs()[0].name
        for _ in range(runs + 1):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: dict = defaultdict(float)
    runs_seen = sum(1 for e in events if e.get("name") == "model_run")
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"] / 1e3
    n = max(runs_seen, 1)
    return {op: round(ms / n, 3) for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])}


# --- the parts --------------------------------------------------------------------------------------------

def part_model(work: Path, key: str, data: dict, args) -> dict:
    from vsseg_edge.calib.temporal import TemporalGate
    from vsseg_edge.core.manifest import manifest_preprocess, read_manifest

    fp32 = fp32_onnx(work, key)
    man = read_manifest(fp32)
    spec, classes = manifest_preprocess(man, str(fp32)), man["classes"]
    predict = predictor(args.threads)
    clips = {"pandaset": tc_clip(data["pandaset"], args.tc_frames),
             "cosmos_b": tc_clip(data["cosmos_b"], args.tc_frames)}
    gates = {n: TemporalGate(fp32, c, spec, classes, predict) for n, c in clips.items()}
    common = dict(num_frames=args.calib_frames, threads=args.threads, speed_runs=0)
    variants = {}
    if key == "camvid":
        # the setting: 12 CamVid train frames calibrate, 12 others judge, no TC gate
        variants["ptq_ort_issue"] = calibrated(work, key, "ptq_ort_issue", fp32, data["camvid12"], "ort_cpu.yaml",
                                               None, data["camvid12_gate"], tc_gate=False, num_frames=12,
                                               threads=args.threads, speed_runs=0)
    for flavour, preset in (("ort", "ort_cpu.yaml"), ("trt", "cityscapes_percentile.yaml")):
        variants[f"ptq_{flavour}"] = calibrated(work, key, f"ptq_{flavour}", fp32, data["cosmos_a"], preset,
                                                None, None, **common)
    for q in sorted((work / key).glob("qat_*.int8.qdq.onnx")):
        variants[q.name.split(".")[0]] = q
    results = {"fp32": {"file": fp32.name}}
    for name, path in variants.items():
        log(f"== {key} {name}")
        res = {"file": path.name, "manifest": _manifest_facts(path), "tc": measure_variant(fp32, path, clips, gates,
                                                                                          args.threads)}
        if key == "camvid" and data["camvid_val"].is_dir():
            res["camvid_val"] = camvid_miou(path, data["camvid_val"], args.threads)
        res["speed"] = speed(fp32, path, data["pandaset"], args.threads, args.speed_runs)
        results[name] = res
        _save(work, key, results)
    if key == "camvid" and data["camvid_val"].is_dir():
        results["fp32"]["camvid_val"] = camvid_miou(fp32, data["camvid_val"], args.threads)
    results["fp32"]["tc"] = {n: {"tc": round(100 * g.fp32_tc.tc(), 4)} for n, g in gates.items()}
    _save(work, key, results)
    return results


def _manifest_facts(path: Path) -> dict:
    from vsseg_edge.bench.runner import calibration_facts
    from vsseg_edge.core.manifest import read_manifest

    man = read_manifest(path)
    return {**(calibration_facts(man) or {}), "kept_in_float": man.get("kept_in_float"),
            "quantizer": (man.get("quantization") or {}).get("quantizer")}


def _save(work: Path, key: str, results: dict) -> None:
    (work / f"{key}.json").write_text(json.dumps(results, indent=1, default=float))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=str(REPO / "runs" / "int8_tc"))
    ap.add_argument("--parts", default="camvid,cityscapes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib-frames", type=int, default=48)
    ap.add_argument("--tc-frames", type=int, default=80, help="frames per held-out clip")
    ap.add_argument("--speed-runs", type=int, default=10)
    args = ap.parse_args(argv)
    work = Path(args.work)
    data = prepare_data(work)
    for part in args.parts.split(","):
        part_model(work, part, data, args)


if __name__ == "__main__":
    main()
