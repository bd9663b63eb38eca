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
Q/DQ arithmetic (no graph optimisation), for the shifted and the unshifted TensorRT flavour (and the u8
flavour), through `measure`; then latency by `vsseg-edge bench --isolate --repeats N --speed-only`: each model
in its own process, one process per kind back to back per round, speedups the medians of paired FP32/INT8
ratios. A driver over the package: no torch needed.

    python benchmarks/int8_ort_cpu_vnni.py --models DIR --out OUT.json [--threads 2 --repeats 3 --runs 10]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

CPU = "providers=CPUExecutionProvider"


def agreement(path: Path, frames: list[np.ndarray], threads: int) -> dict:
    """Optimised (ENABLE_ALL) vs exact (no graph optimisation) Q/DQ arithmetic, unshifted and shifted, on the
    frames through the one preprocessing (`measure.predict`, `measure.compare.compare_outputs`)."""
    from vsseg_edge.measure.compare import compare_outputs
    from vsseg_edge.measure.prediction import predict
    from vsseg_edge.runtime.backends import open_backend

    cpu = {"providers": ["CPUExecutionProvider"], "threads": threads}
    with open_backend(path, exact_qdq=True, **cpu) as exact:
        refs = predict(exact, frames, keep_outputs=len(frames)).outputs
    out = {}
    for label, shift in (("unshifted", False), ("shifted", True)):
        with open_backend(path, shift_int8=shift, **cpu) as runner:
            cmp = compare_outputs(predict(runner, frames, keep_outputs=len(frames)).outputs, refs)
        out[label] = {
            "argmax_agreement_pct": round(cmp.agreement.percent, 4),
            "max_abs_logit_diff": round(cmp.max_abs, 5),
            "logit_range": round(cmp.ref_abs_max, 3),
        }
    return out


def fp32_equivalent(int8: Path, dst: Path) -> int:
    """The FP32-equivalent of a Q/DQ model (`onnx_graph.strip_qdq`), with the Q/DQ model's manifest as an FP32
    ONNX of the same parent; returns the Q/DQ nodes left."""
    import onnx

    from vsseg_edge.core.manifest import manifest_preprocess, read_manifest, write_manifest
    from vsseg_edge.onnx_graph import QDQ_OPS, strip_qdq

    man = read_manifest(int8, kind="qdq_onnx")
    out = strip_qdq(onnx.load(str(int8)))
    onnx.save(out, str(dst))
    write_manifest(
        dst,
        "onnx",
        model=man["model"],
        classes=man["classes"],
        preprocess=manifest_preprocess(man, "x"),
        output=man.get("output", "logits"),
        precision="fp32",
        parent=int8,
    )
    return sum(n.op_type in QDQ_OPS for n in out.graph.node)


def synthetic_frames(hw: tuple[int, int], n: int, folder: Path) -> list[np.ndarray]:
    """`n` frames of coloured rectangles at the model's input size, also written as PNGs into `folder` (the
    frame folder bench times on)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = hw
    imgs = []
    for i in range(n):
        img = np.empty((h, w, 3), np.float32)
        img[:] = rng.uniform(40, 200, 3)
        for _ in range(12):
            y0, x0 = rng.integers(0, h - 64), rng.integers(0, w - 96)
            img[y0 : y0 + rng.integers(16, 64), x0 : x0 + rng.integers(24, 96)] = rng.uniform(0, 255, 3)
        imgs.append(np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8))
        cv2.imwrite(str(folder / f"{i:03d}.png"), imgs[-1])
    return imgs


def trt_flavour(fp32: Path, out: Path, frames: list[np.ndarray], work: Path) -> None:
    """The TensorRT flavour (s8 symmetric activations, minmax) of an FP32 ONNX, with its manifest."""
    import onnx

    from vsseg_edge.calib.frames import SampledFrame
    from vsseg_edge.calib.quantize_ort import FrameReader, quantize_ort
    from vsseg_edge.core.manifest import manifest_preprocess, read_manifest, write_manifest

    man = read_manifest(fp32, kind="onnx")
    spec = manifest_preprocess(man, str(fp32))
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    reader = FrameReader([SampledFrame(f"synthetic{i}", (lambda im=im: im)) for i, im in enumerate(frames)], spec, name)
    info = quantize_ort(
        fp32, out, target="trt", method="minmax", cache_path=work / f"{fp32.stem}.ranges.json", reader=reader
    )
    write_manifest(
        out,
        "qdq_onnx",
        model=man["model"],
        classes=man["classes"],
        preprocess=spec,
        output=man.get("output", "logits"),
        precision="int8",
        parent=fp32,
        target="trt",
        quantization=info,
    )


def timing(models: dict[str, str], frames: Path, args, log) -> dict:
    """Each kind timed by `vsseg-edge bench --isolate --repeats N --speed-only` against the FP32 model."""
    from vsseg_edge.bench.runner import BenchConfig, run_bench

    cfg = BenchConfig.paired_speed(
        frames, runs=args.runs, warmup=args.warmup, threads=args.threads, repeats=args.repeats
    )
    report = run_bench([f"{spec},{CPU}" if "::" in spec else f"{spec}::{CPU}" for spec in models.values()], cfg)
    kinds = dict(zip(models, report["entries"]))
    for kind, e in kinds.items():
        if e["status"] != "ok":
            raise SystemExit(f"{kind}: {e['status']}: {e['reason']}")
        log(f"  {kind}: rounds {[r['compute_p50_ms'] for r in e['latency_rounds']]} ms")
    return {
        "median_round_ms": {k: e["latency"]["compute"]["p50_ms"] for k, e in kinds.items()},
        "paired_ratios": {k: e["speed_vs_reference"]["compute_rounds"] for k, e in kinds.items() if k != "fp32"},
        "paired_ratio_median": {k: e["speed_vs_reference"]["compute"] for k, e in kinds.items() if k != "fp32"},
    }


def student(name: str, src: Path, work: Path, args, log) -> dict:
    from vsseg_edge.core.manifest import manifest_preprocess, read_manifest

    int8 = src / f"{name}.int8.qdq.onnx"
    spec = manifest_preprocess(read_manifest(int8, kind="qdq_onnx"), str(int8))
    fp32 = work / f"{name}.fp32eq.onnx"
    left = fp32_equivalent(int8, fp32)
    frames = synthetic_frames(spec.size, 6, work / f"{name}_frames")
    trt = work / f"{name}.trt.int8.qdq.onnx"
    t0 = time.perf_counter()
    trt_flavour(fp32, trt, frames[:4], work)
    log(f"{name}: FP32-equivalent ({left} Q/DQ left), TensorRT flavour calibrated in {time.perf_counter() - t0:.0f} s")
    res = {
        "model": name,
        "input": list(spec.input_shape(1)),
        "qdq_left_in_fp32_equivalent": left,
        "agreement_trt_flavour": agreement(trt, frames[4:], args.exact_threads),
        "agreement_ort_flavour": agreement(int8, frames[4:], args.exact_threads)["unshifted"],
    }
    log(f"{name}: {json.dumps(res['agreement_trt_flavour'])}")
    res["timing"] = timing(
        {
            "fp32": str(fp32),
            "int8_ort_flavour": str(int8),
            "trt_flavour_unshifted": f"{trt}::shift_int8=false",
            "trt_flavour_shifted": str(trt),
        },
        work / f"{name}_frames",
        args,
        log,
    )
    return res


def espnet(src: Path, args, log) -> dict:
    from vsseg_edge.core.fileio import read_image

    pngs = sorted((src / "frames").glob("*.png"))
    trt = src / "espnet_camvid.trt.int8.qdq.onnx"
    res = {
        "model": "espnet_camvid",
        "frames": [p.name for p in pngs],
        "agreement_trt_flavour": agreement(trt, [read_image(p) for p in pngs], args.exact_threads),
    }
    log(f"espnet_camvid: {json.dumps(res['agreement_trt_flavour'])}")
    res["timing"] = timing(
        {
            "fp32": str(src / "espnet_camvid.onnx"),
            "trt_flavour_unshifted": f"{trt}::shift_int8=false",
            "trt_flavour_shifted": str(trt),
        },
        src / "frames",
        args,
        log,
    )
    return res


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
    args = ap.parse_args()

    def log(s: str) -> None:
        print(s, flush=True)

    src, work = Path(args.models), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from vsseg_edge.core.fileio import write_json
    from vsseg_edge.measure.machine import environment, load_average

    report = {
        "machine": environment(),
        "threads": args.threads,
        "repeats": args.repeats,
        "runs": args.runs,
        "load_start": load_average(),
        "results": [],
    }
    log(json.dumps(report["machine"]))
    for name in args.students:
        report["results"].append(student(name, src, work, args, log))
        write_json(Path(args.out), report)
    if not args.no_espnet:
        report["results"].append(espnet(src, args, log))
    report["load_end"] = load_average()
    write_json(Path(args.out), report)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
