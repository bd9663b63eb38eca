"""The S8→U8 activation shift on another x86 CPU (one with VNNI, where onnxruntime's u8×s8 kernel does not
saturate int16 pair sums): is the optimised shifted model exact there, and how fast is it?

Companion of benchmarks/int8_ort_cpu.py for a machine without torch-free exports: it takes already-built
artifacts from `--models DIR` (no torch needed):
  NAME.int8.qdq.onnx (+ NAME.onnx.json): the onnxruntime-CPU flavour (u8 activations) of a student at 512×1024;
    an FP32-equivalent is rebuilt from it by removing every Q/DQ (weights dequantised: same graph and FLOPs
    as the FP32 model, so the same speed), and the TensorRT flavour (s8 symmetric activations, zero point 0)
    is calibrated from that with `calib.quantize_ort` (target trt, minmax, 4 synthetic frames);
  espnet_camvid.onnx + espnet_camvid.trt.int8.qdq.onnx (+ manifests) and PNG frames in DIR/frames: the
    published ESPNet CamVid weights and their TensorRT flavour (ModelOpt, sensitive nodes in float).
For each: argmax agreement and max |Δlogit| of onnxruntime's optimised run (ORT_ENABLE_ALL) against exact
Q/DQ arithmetic (ORT_DISABLE_ALL), for the shifted and the unshifted TensorRT flavour (and the u8 flavour);
then latency, each model in its own process, one process per kind back to back per repeat, speedups as
medians of paired FP32/INT8 ratios.

    python benchmarks/int8_ort_cpu_vnni.py --models DIR --out OUT.json [--threads 2 --repeats 3 --runs 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cpu_info() -> dict:
    text = Path("/proc/cpuinfo").read_text()
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    import onnxruntime as ort

    return {"cpu": name, "isa": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags],
            "onnxruntime": ort.__version__, "logical_cpus": text.count("processor\t:")}


def shifted(path: str):
    import onnx

    from vsseg_edge.onnx_graph import shift_activations_to_uint8

    return shift_activations_to_uint8(onnx.load(path))


def time_one(path: str, shift: bool, threads: int, runs: int, warmup: int) -> dict:
    from int8_ort_cpu import time_session

    from vsseg_edge.runtime.backends.ort import ort_session

    sess = ort_session(shifted(path) if shift else path, threads=threads)
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
    times = time_session(sess, {inp.name: x}, runs, warmup)
    return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2)}


def timed(path: Path, shift: bool, args) -> dict:
    cmd = [sys.executable, __file__, "--time-one", str(path), "--threads", str(args.threads), "--runs",
           str(args.runs), "--warmup", str(args.warmup)] + (["--shift"] if shift else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def agreement(path: Path, inputs: list[np.ndarray], threads: int) -> dict:
    """Optimised (ENABLE_ALL) vs exact (DISABLE_ALL) Q/DQ arithmetic, shifted and not."""
    from vsseg_edge.measure.compare import compare_outputs
    from vsseg_edge.runtime.backends.ort import ort_session

    exact = ort_session(path, threads=threads, exact_qdq=True)
    name = exact.get_inputs()[0].name
    refs = [exact.run(None, {name: x})[0] for x in inputs]
    out = {}
    for label, model in (("unshifted", path), ("shifted", shifted(str(path)))):
        sess = ort_session(model, threads=threads)
        cmp = compare_outputs([sess.run(None, {name: x})[0] for x in inputs], refs)
        out[label] = {"argmax_agreement_pct": round(cmp.agreement.percent, 4),
                      "max_abs_logit_diff": round(cmp.max_abs, 5), "logit_range": round(float(np.abs(refs[0]).max()), 3)}
    return out


def strip_qdq(src: Path, dst: Path) -> int:
    """FP32-equivalent of a Q/DQ model (`onnx_graph.strip_qdq`); returns the Q/DQ nodes left."""
    import onnx

    from vsseg_edge.onnx_graph import QDQ_OPS
    from vsseg_edge.onnx_graph import strip_qdq as strip

    out = strip(onnx.load(str(src)))
    onnx.save(out, str(dst))
    return sum(n.op_type in QDQ_OPS for n in out.graph.node)


def synthetic_frames(h: int, w: int, n: int) -> list:
    from vsseg_edge.calib.frames import Frame

    rng = np.random.default_rng(0)
    imgs = []
    for _ in range(n):
        img = np.empty((h, w, 3), np.float32)
        img[:] = rng.uniform(40, 200, 3)
        for _ in range(12):
            y0, x0 = rng.integers(0, h - 64), rng.integers(0, w - 96)
            img[y0:y0 + rng.integers(16, 64), x0:x0 + rng.integers(24, 96)] = rng.uniform(0, 255, 3)
        imgs.append(np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8))
    return [Frame(f"synthetic{i}", (lambda im=im: im)) for i, im in enumerate(imgs)]


def spec_of(manifest: Path):
    from vsseg_edge.core.manifest import manifest_preprocess

    return manifest_preprocess(json.loads(manifest.read_text()), str(manifest))


def student(name: str, src: Path, work: Path, args, log) -> dict:
    from vsseg_edge.calib.quantize_ort import FrameReader, quantize_ort
    from vsseg_edge.core.preprocess import preprocess_batch

    spec = spec_of(src / f"{name}.onnx.json")
    int8 = src / f"{name}.int8.qdq.onnx"
    fp32 = work / f"{name}.fp32eq.onnx"
    left = strip_qdq(int8, fp32)
    import onnx

    input_name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    shape = spec.input_shape(1)
    h, w = (shape[2], shape[3]) if spec.layout == "nchw" else (shape[1], shape[2])
    frames = synthetic_frames(h, w, 6)
    trt = work / f"{name}.trt.int8.qdq.onnx"
    t0 = time.perf_counter()
    quantize_ort(fp32, trt, target="trt", method="minmax", cache_path=work / f"{name}.ranges.json",
                 reader=FrameReader(frames[:4], spec, input_name))
    log(f"{name}: FP32-equivalent ({left} Q/DQ left), TensorRT flavour calibrated in {time.perf_counter() - t0:.0f} s")
    inputs = [preprocess_batch([f.read()], spec) for f in frames[4:]]
    res = {"model": name, "input": list(shape), "qdq_left_in_fp32_equivalent": left,
           "agreement_trt_flavour": agreement(trt, inputs, args.exact_threads),
           "agreement_ort_flavour": agreement(int8, inputs, args.exact_threads)["unshifted"]}
    log(f"{name}: {json.dumps(res['agreement_trt_flavour'])}")
    res["timing"] = timing({"fp32": (fp32, False), "int8_ort_flavour": (int8, False),
                            "trt_flavour_unshifted": (trt, False), "trt_flavour_shifted": (trt, True)}, args, log)
    return res


def espnet(src: Path, args, log) -> dict:
    import cv2

    from vsseg_edge.core.preprocess import preprocess_batch

    spec = spec_of(src / "espnet_camvid.onnx.json")
    pngs = sorted((src / "frames").glob("*.png"))
    inputs = [preprocess_batch([cv2.imread(str(p))], spec) for p in pngs]
    trt = src / "espnet_camvid.trt.int8.qdq.onnx"
    res = {"model": "espnet_camvid", "frames": [p.name for p in pngs],
           "agreement_trt_flavour": agreement(trt, inputs, args.exact_threads)}
    log(f"espnet_camvid: {json.dumps(res['agreement_trt_flavour'])}")
    res["timing"] = timing({"fp32": (src / "espnet_camvid.onnx", False), "trt_flavour_unshifted": (trt, False),
                            "trt_flavour_shifted": (trt, True)}, args, log)
    return res


def timing(kinds: dict, args, log) -> dict:
    best: dict[str, dict] = {}
    ratios: dict[str, list[float]] = {k: [] for k in kinds if k != "fp32"}
    for rep in range(args.repeats):
        pair = {k: timed(path, shift, args) for k, (path, shift) in kinds.items()}
        for k, t in pair.items():
            if k not in best or t["median_ms"] < best[k]["median_ms"]:
                best[k] = t
        for k, values in ratios.items():
            values.append(round(pair["fp32"]["median_ms"] / pair[k]["median_ms"], 3))
        log(f"  repeat {rep + 1}: " + ", ".join(f"{k} {t['median_ms']:.1f} ms" for k, t in pair.items()))
    return {"best_median_ms": {k: t["median_ms"] for k, t in best.items()}, "paired_ratios": ratios,
            "paired_ratio_median": {k: statistics.median(v) for k, v in ratios.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="runs/bench_int8_ort_cpu")
    ap.add_argument("--students", nargs="*", default=["pspnet18", "mobilenetv2_psp"])
    ap.add_argument("--no-espnet", action="store_true")
    ap.add_argument("--out", default="int8_ort_cpu_vnni.json")
    ap.add_argument("--work", default="/tmp/int8_vnni")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exact-threads", type=int, default=8, help="threads of the agreement sessions")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--time-one")
    ap.add_argument("--shift", action="store_true")
    args = ap.parse_args()
    if args.time_one:
        print(json.dumps(time_one(args.time_one, args.shift, args.threads, args.runs, args.warmup)))
        return

    def log(s: str) -> None:
        print(s, flush=True)

    src, work = Path(args.models), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = {"machine": cpu_info(), "threads": args.threads, "repeats": args.repeats, "runs": args.runs,
              "load_start": Path("/proc/loadavg").read_text().split()[:3], "results": []}
    log(json.dumps(report["machine"]))
    for name in args.students:
        report["results"].append(student(name, src, work, args, log))
        Path(args.out).write_text(json.dumps(report, indent=1))
    if not args.no_espnet:
        report["results"].append(espnet(src, args, log))
    report["load_end"] = Path("/proc/loadavg").read_text().split()[:3]
    Path(args.out).write_text(json.dumps(report, indent=1))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
