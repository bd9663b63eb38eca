"""GPU figures for every model at 512×1024 (torch CUDA), and the runtime's pipeline on CUDA.

One prepared call on a lent GPU machine (torch with CUDA, opencv-python-headless, numpy, pyyaml):

    python benchmarks/gpu_models.py OUT [--parts torch pipeline]

Two parts, each written to OUT as soon as it ends (a later part failing loses nothing):
  1. `torch_cuda.json` — compute-only latency of every registry model (seeded random weights: speed does not
     depend on them), batch 1, 512×1024, CUDA events around the forward pass, after warm-up, cudnn.benchmark on:
     FP32 (TF32 off), TF32, FP16, FP16 + channels-last, FP16 + channels-last + CUDA graph replay; and the
     runtime's torch backend end to end (`TorchBackend.infer`: host batch → device → forward → argmax → host
     labels) with its GPU defaults (FP16, channels-last) and with `cuda_graph=True`.
  2. `pipeline_cuda.json` — benchmarks/pipeline_overhead.py's measurement with the torch CUDA backend:
     pipeline frame interval vs pure backend time, per-stage p50/p99, overlap of the three stage threads.
onnxruntime INT8 on the host CPU of the same machine: benchmarks/int8_ort_cpu_vnni.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

MODELS = ("pspnet18", "mobilenetv2_psp", "espnet", "bisenetv2", "pspnet50")
SIZE = (512, 1024)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def save(out: Path, name: str, data: dict) -> None:
    (out / name).write_text(json.dumps(data, indent=1))
    log(f"wrote {out / name}")


def cuda_times(fn, warmup: int, runs: int) -> dict:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b))
    ms.sort()
    return {"p50_ms": statistics.median(ms), "p90_ms": ms[int(0.9 * (len(ms) - 1))], "min_ms": ms[0],
            "fps_at_p50": 1e3 / statistics.median(ms), "runs": runs, "warmup": warmup}


def torch_modes(name: str, warmup: int, runs: int) -> dict:
    """Compute-only latency of one model in each precision/layout mode."""
    import torch

    from vsseg_edge.models import create_model

    torch.manual_seed(0)
    base = create_model(name, 19).eval().cuda()
    x32 = torch.randn(1, 3, *SIZE, device="cuda")
    res = {"params_m": sum(p.numel() for p in base.parameters()) / 1e6}
    with torch.inference_mode():
        for mode, tf32 in (("fp32", False), ("tf32", True)):
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            res[mode] = cuda_times(lambda: base(x32), warmup, runs)
        torch.backends.cudnn.allow_tf32 = True
        half = base.half()
        x16 = x32.half()
        res["fp16"] = cuda_times(lambda: half(x16), warmup, runs)
        cl = half.to(memory_format=torch.channels_last)
        x16cl = x16.contiguous(memory_format=torch.channels_last)
        res["fp16_channels_last"] = cuda_times(lambda: cl(x16cl), warmup, runs)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode():
            with torch.cuda.stream(side):
                for _ in range(3):
                    cl(x16cl)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                cl(x16cl)
        res["fp16_channels_last_cuda_graph"] = cuda_times(graph.replay, warmup, runs)
    except RuntimeError as exc:
        res["fp16_channels_last_cuda_graph"] = {"error": str(exc).splitlines()[0]}
    return res


def backend_e2e(name: str, tmp: Path, warmup: int, runs: int) -> dict:
    """The runtime's torch backend, host batch in → host labels out, wall clock."""
    import numpy as np
    import torch

    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.models import create_model
    from vsseg_edge.models.checkpoint import save_checkpoint
    from vsseg_edge.runtime.backends.torch_backend import TorchBackend

    torch.manual_seed(0)
    ckpt = tmp / f"{name}.pt"
    save_checkpoint(ckpt, create_model(name, 19).eval(), model_name=name, classes=list(CITYSCAPES.classes),
                    preprocess=PreprocessSpec(height=SIZE[0], width=SIZE[1]))
    batch = np.random.default_rng(0).standard_normal((1, 3, *SIZE)).astype(np.float32)
    out = {}
    for label, opts in (("defaults", {}), ("cuda_graph", {"cuda_graph": True})):
        be = TorchBackend.from_checkpoint(ckpt, device="cuda", **opts)
        for _ in range(warmup):
            be.infer(batch)
        ms = []
        for _ in range(runs):
            t0 = time.perf_counter()
            be.infer(batch)
            ms.append((time.perf_counter() - t0) * 1e3)
        out[label] = {"p50_ms": statistics.median(ms), "p90_ms": sorted(ms)[int(0.9 * (runs - 1))],
                      "fps_at_p50": 1e3 / statistics.median(ms), "fp16": be.fp16,
                      "channels_last": be.channels_last}
    return out


def part_torch(out: Path, warmup: int, runs: int) -> None:
    import torch

    torch.backends.cudnn.benchmark = True
    res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
           "input": f"1x3x{SIZE[0]}x{SIZE[1]}", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            try:
                res["models"][name] = torch_modes(name, warmup, runs)
                res["models"][name]["backend_e2e"] = backend_e2e(name, Path(tmp), warmup, runs)
            except Exception as exc:  # noqa: BLE001 — one model failing must not lose the others
                res["models"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{name}: {json.dumps(res['models'][name])[:300]}")
            save(out, "torch_cuda.json", res)


def part_pipeline(out: Path, frames: int) -> None:
    import pipeline_overhead as po
    import torch

    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.models import create_model
    from vsseg_edge.models.checkpoint import save_checkpoint
    from vsseg_edge.runtime.backends.torch_backend import TorchBackend

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        ckpt = tmp / "pspnet18.pt"
        save_checkpoint(ckpt, create_model("pspnet18", 19).eval(), model_name="pspnet18",
                        classes=list(CITYSCAPES.classes), preprocess=PreprocessSpec(height=SIZE[0], width=SIZE[1]))
        po.make_video(tmp / "frames.mp4", frames, (1024, 2048))
        be = TorchBackend.from_checkpoint(ckpt, device="cuda")
        pure_a = po.pure_backend(be, tmp / "frames.mp4", warmup=5)
        pipe = po.pipeline_pass(be, tmp / "frames.mp4")
        pure_b = po.pure_backend(be, tmp / "frames.mp4", warmup=0)
        fig = po.analyse(pure_a, pipe, pure_b, skip=5)
    save(out, "pipeline_cuda.json", {"gpu": torch.cuda.get_device_name(0), "model": "pspnet18 (torch CUDA backend, "
                                     "FP16, channels-last)", "frames": frames, "frame_hw": "1024x2048",
                                     "size": f"{SIZE[0]}x{SIZE[1]}", "cpus": os.cpu_count(), **fig})


MODES = (("fp32", "FP32 (TF32 off)"), ("tf32", "TF32"), ("fp16", "FP16"), ("fp16_channels_last", "FP16 + channels-last"),
         ("fp16_channels_last_cuda_graph", "FP16 + CL + CUDA graph"))


def cell(r: dict) -> str:
    return f"{r['p50_ms']:.2f}" if "p50_ms" in r else "failed"


def render(out: Path, date: str) -> str:
    """Markdown report from the JSON files a run left in `out` (run on the development machine)."""
    t = json.loads((out / "torch_cuda.json").read_text())
    lines = [f"# torch CUDA on an {t['gpu']}: every model at {SIZE[0]}×{SIZE[1]}", "",
             (f"{date}, torch {t['torch']}, cuDNN {t['cudnn']}, batch 1, input {t['input']}, seeded random weights "
             "(speed does not depend on them), cudnn.benchmark on. Compute-only: CUDA events around the forward "
             "pass, p50 of 100 runs after 20 warm-up runs (ms). Backend e2e: the runtime's `TorchBackend.infer` "
             "(float32 NCHW host batch → device → forward → argmax → uint8 labels on the host), wall clock."), "",
             "| model | params (M) | " + " | ".join(m[1] for m in MODES) + " | backend e2e (FP16+CL) | "
             "backend e2e + CUDA graph | FPS (backend e2e + graph) |",
             "|---|---|" + "---|" * (len(MODES) + 3)]
    for name, r in t["models"].items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} |")
            continue
        be = r["backend_e2e"]
        lines.append(f"| {name} | {r['params_m']:.2f} | " + " | ".join(cell(r[m]) for m, _ in MODES)
                     + f" | {cell(be['defaults'])} | {cell(be['cuda_graph'])} | {be['cuda_graph']['fps_at_p50']:.0f} |")
    p = json.loads((out / "pipeline_cuda.json").read_text())
    st, p99 = p["stage_p50_ms"], p["stage_p99_ms"]
    lines += ["", f"## The runtime pipeline on the GPU ({p['model']})", "",
              (f"{p['frames']} synthetic {p['frame_hw']} frames in an mp4v file, decoded by OpenCV, resized and "
              f"normalised on the CPU ({p['cpus']} cores), inference at {p['size']}, null sink; first 5 frames left "
              "out. Same method as benchmarks/pipeline_overhead.py."), "",
              "| figure | value |", "|---|---|",
              f"| pure backend infer p50 | {p['pure_infer_ms']['p50']:.2f} ms |",
              (f"| pipeline frame interval p50 / p99 | {p['pipeline_interval_ms']['p50']:.1f} / "
              f"{p['pipeline_interval_ms']['p99']:.1f} ms ({p['fps']:.1f} FPS) |"),
              f"| overhead at p50 vs pure infer | {100 * p['overhead_p50']:+.0f} % |",
              (f"| stage threads p50: capture / preprocess+infer / postprocess+render | "
              f"{p['stage_thread_p50_ms']['capture']:.1f} / {p['stage_thread_p50_ms']['preprocess+infer']:.1f} / "
              f"{p['stage_thread_p50_ms']['postprocess+render']:.1f} ms |"),
              f"| overlap ratio fps × max(stage) | {p['overlap_ratio']:.2f} |",
              "| per stage p50 / p99 (ms) | " + ", ".join(
                  f"{k.replace('_ms', '')} {st[k]:.1f} / {p99[k]:.1f}" for k in st) + " |",
              (f"| latency p50 (end of capture → rendered, incl. the file prefetch queue) | "
              f"{p['pipeline_latency_ms_p50']:.0f} ms |")]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--render", metavar="DATE", help="write OUT/gpu_models.md from the JSON files there and stop")
    ap.add_argument("--parts", nargs="*", default=["torch", "pipeline"], choices=["torch", "pipeline"])
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    if args.render:
        (args.out / "gpu_models.md").write_text(render(args.out, args.render))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        t0 = time.perf_counter()
        try:
            if part == "torch":
                part_torch(args.out, args.warmup, args.runs)
            elif part == "pipeline":
                part_pipeline(args.out, frames=60)
        except Exception as exc:  # noqa: BLE001 — report and go on to the next part
            log(f"part {part} failed: {type(exc).__name__}: {exc}")
        log(f"part {part}: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
