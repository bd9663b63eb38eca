"""GPU figures for every model at 512×1024 (torch CUDA), and the runtime's pipeline on CUDA.

One prepared call on a lent GPU machine (torch with CUDA, opencv-python-headless, numpy, pyyaml):

    python benchmarks/gpu_models.py OUT [--parts torch pipeline] [--device cuda]

A driver over the package. Two parts, each written to OUT as soon as it ends (a later part failing loses
nothing):
  1. `torch_cuda.json` — compute-only latency of every registry model (seeded random-init checkpoints,
     `bench.models`: speed does not depend on the weights), batch 1, 512×1024, timed by
     `measure.timing.time_calls` on a CUDA-event clock (GPU time between events around the forward pass),
     after warm-up, cudnn.benchmark on: FP32 (TF32 off), TF32, FP16, FP16 + channels-last, FP16 +
     channels-last + CUDA graph replay; and the runtime's torch backend end to end (`TorchBackend.infer`:
     host batch → device → forward → argmax → host labels) with its GPU defaults (FP16, channels-last) and
     with `cuda_graph=True`, wall clock. Statistics are `measure.timing.LatencyStats` (FPS = 1000 / mean).
  2. `pipeline_cuda.json` — `measure.overhead.measure_overhead` with the torch CUDA backend: pipeline frame
     interval vs pure backend time, per-stage p50/p99, overlap of the three stage threads.
`--device cpu` runs the same parts on the CPU (a check of the driver, host clock; slow at 512×1024).
onnxruntime INT8 on the host CPU of the same machine: benchmarks/int8_ort_cpu_vnni.py.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

MODELS = ("pspnet18", "mobilenetv2_psp", "espnet", "bisenetv2", "pspnet50")
SIZE = (512, 1024)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def save(out: Path, name: str, data: dict) -> None:
    from vsseg_edge.core.fileio import write_json

    write_json(out / name, data)
    log(f"wrote {out / name}")


class CudaEventClock:
    """A clock for `measure.timing.time_calls` that reads GPU time: each reading records a CUDA event and waits
    for it, so two readings around a call give the GPU time of the work the call enqueued."""

    def __init__(self):
        import torch

        self._torch = torch
        self._base = torch.cuda.Event(enable_timing=True)
        self._base.record()

    def __call__(self) -> float:
        event = self._torch.cuda.Event(enable_timing=True)
        event.record()
        event.synchronize()
        return self._base.elapsed_time(event) / 1e3


def timed(fn, warmup: int, runs: int, clock) -> dict:
    from vsseg_edge.measure.timing import LatencyStats, time_calls

    return LatencyStats.of(time_calls(lambda i: fn(), runs, warmup, clock)).to_dict()


def torch_modes(ckpt: Path, device: str, warmup: int, runs: int) -> dict:
    """Compute-only latency of one checkpoint's model in each precision/layout mode."""
    import torch

    from vsseg_edge.models.checkpoint import model_from_checkpoint

    base, _ = model_from_checkpoint(ckpt)
    base = base.eval().to(device)
    cuda = device.startswith("cuda")
    clock = CudaEventClock() if cuda else time.perf_counter
    x32 = torch.randn(1, 3, *SIZE, device=device)
    res = {"params_m": sum(p.numel() for p in base.parameters()) / 1e6}
    with torch.inference_mode():
        for mode, tf32 in (("fp32", False), ("tf32", True)):
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            res[mode] = timed(lambda: base(x32), warmup, runs, clock)
        torch.backends.cudnn.allow_tf32 = True
        if not cuda:  # half precision and CUDA graphs are GPU modes
            return res
        half = base.half()
        x16 = x32.half()
        res["fp16"] = timed(lambda: half(x16), warmup, runs, clock)
        cl = half.to(memory_format=torch.channels_last)
        x16cl = x16.contiguous(memory_format=torch.channels_last)
        res["fp16_channels_last"] = timed(lambda: cl(x16cl), warmup, runs, clock)
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
        res["fp16_channels_last_cuda_graph"] = timed(graph.replay, warmup, runs, clock)
    except RuntimeError as exc:
        res["fp16_channels_last_cuda_graph"] = {"error": str(exc).splitlines()[0]}
    return res


def backend_e2e(ckpt: Path, device: str, warmup: int, runs: int) -> dict:
    """The runtime's torch backend, host batch in → host labels out, wall clock."""
    import numpy as np

    from vsseg_edge.runtime.backends.torch_backend import TorchBackend

    batch = np.random.default_rng(0).standard_normal((1, 3, *SIZE)).astype(np.float32)
    out = {}
    variants = (
        (("defaults", {}), ("cuda_graph", {"cuda_graph": True})) if device.startswith("cuda") else (("defaults", {}),)
    )
    for label, opts in variants:
        with TorchBackend.from_checkpoint(ckpt, device=device, **opts) as be:
            out[label] = {
                **timed(lambda: be.infer(batch), warmup, runs, time.perf_counter),
                "fp16": be.fp16,
                "channels_last": be.channels_last,
            }
    return out


def part_torch(out: Path, device: str, warmup: int, runs: int, models=MODELS) -> None:
    import torch

    from vsseg_edge.bench.models import random_init_checkpoint

    torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none (CPU run)"
    res = {
        "gpu": gpu,
        "device": device,
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "input": f"1x3x{SIZE[0]}x{SIZE[1]}",
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            try:
                ckpt = random_init_checkpoint(name, Path(tmp) / f"{name}.pt", size=SIZE)
                res["models"][name] = torch_modes(ckpt, device, warmup, runs)
                res["models"][name]["backend_e2e"] = backend_e2e(ckpt, device, warmup, runs)
            except Exception as exc:  # noqa: BLE001 — one model failing must not lose the others
                res["models"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{name}: {json.dumps(res['models'][name])[:300]}")
            save(out, "torch_cuda.json", res)


def part_pipeline(out: Path, device: str, frames: int) -> None:
    import torch

    from vsseg_edge.bench.models import random_init_checkpoint
    from vsseg_edge.measure.overhead import measure_overhead, synthetic_video
    from vsseg_edge.runtime.backends.torch_backend import TorchBackend

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = random_init_checkpoint("pspnet18", tmp / "pspnet18.pt", size=SIZE)
        video = synthetic_video(tmp / "frames.mp4", frames, (1024, 2048))
        with TorchBackend.from_checkpoint(ckpt, device=device) as be:
            fig = measure_overhead(be, video, warmup=5, skip=5).to_dict()
            what = f"pspnet18 (torch {device} backend{', FP16, channels-last' if be.fp16 else ''})"
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none (CPU run)"
    save(
        out,
        "pipeline_cuda.json",
        {
            "gpu": gpu,
            "model": what,
            "frames": frames,
            "frame_hw": "1024x2048",
            "size": f"{SIZE[0]}x{SIZE[1]}",
            "cpus": os.cpu_count(),
            **fig,
        },
    )


MODES = (
    ("fp32", "FP32 (TF32 off)"),
    ("tf32", "TF32"),
    ("fp16", "FP16"),
    ("fp16_channels_last", "FP16 + channels-last"),
    ("fp16_channels_last_cuda_graph", "FP16 + CL + CUDA graph"),
)


def cell(r: dict | None) -> str:
    if r is None:
        return "—"
    return f"{r['p50_ms']:.2f}" if "p50_ms" in r else "failed"


def render(out: Path, date: str) -> str:
    """Markdown report from the JSON files a run left in `out` (run on the development machine)."""
    t = json.loads((out / "torch_cuda.json").read_text())
    lines = [
        f"# torch CUDA on an {t['gpu']}: every model at {SIZE[0]}×{SIZE[1]}",
        "",
        (
            f"{date}, torch {t['torch']}, cuDNN {t['cudnn']}, batch 1, input {t['input']}, seeded random weights "
            "(speed does not depend on them), cudnn.benchmark on. Compute-only: GPU time between CUDA events "
            "around the forward pass, p50 of the timed runs after warm-up (ms). Backend e2e: the runtime's "
            "`TorchBackend.infer` (float32 NCHW host batch → device → forward → argmax → uint8 labels on the "
            "host), wall clock. FPS = 1000 / mean latency, as in `vsseg-edge bench`."
        ),
        "",
        "| model | params (M) | " + " | ".join(m[1] for m in MODES) + " | backend e2e (FP16+CL) | "
        "backend e2e + CUDA graph | FPS (backend e2e + graph) |",
        "|---|---|" + "---|" * (len(MODES) + 3),
    ]
    for name, r in t["models"].items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} |")
            continue
        be = r["backend_e2e"]
        graph = be.get("cuda_graph") or {}
        fps = f"{graph['fps']:.0f}" if graph.get("fps") else "—"
        lines.append(
            f"| {name} | {r['params_m']:.2f} | "
            + " | ".join(cell(r.get(m)) for m, _ in MODES)
            + f" | {cell(be['defaults'])} | {cell(be.get('cuda_graph'))} | {fps} |"
        )
    p = json.loads((out / "pipeline_cuda.json").read_text())
    st, p99 = p["stage_p50_ms"], p["stage_p99_ms"]
    lines += [
        "",
        f"## The runtime pipeline on the GPU ({p['model']})",
        "",
        (
            f"{p['frames']} synthetic {p['frame_hw']} frames in an mp4v file, decoded by OpenCV, resized and "
            f"normalised on the CPU ({p['cpus']} cores), inference at {p['size']}, null sink; first 5 frames "
            "left out. `measure.overhead`, as benchmarks/pipeline_overhead.py."
        ),
        "",
        "| figure | value |",
        "|---|---|",
        f"| pure backend infer p50 | {p['pure_infer_ms']['p50']:.2f} ms |",
        (
            f"| pipeline frame interval p50 / p99 | {p['pipeline_interval_ms']['p50']:.1f} / "
            f"{p['pipeline_interval_ms']['p99']:.1f} ms ({p['fps']:.1f} FPS) |"
        ),
        f"| overhead at p50 vs pure infer | {100 * p['overhead_p50']:+.0f} % |",
        (
            f"| stage threads p50: capture / preprocess+infer / postprocess+render | "
            f"{p['stage_thread_p50_ms']['capture']:.1f} / {p['stage_thread_p50_ms']['preprocess+infer']:.1f} / "
            f"{p['stage_thread_p50_ms']['postprocess+render']:.1f} ms |"
        ),
        f"| overlap ratio fps × max(stage) | {p['overlap_ratio']:.2f} |",
        "| per stage p50 / p99 (ms) | "
        + ", ".join(f"{k.replace('_ms', '')} {st[k]:.1f} / {p99[k]:.1f}" for k in st)
        + " |",
        (
            f"| latency p50 (end of capture → rendered, incl. the file prefetch queue) | "
            f"{p['pipeline_latency_ms_p50']:.0f} ms |"
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--render", metavar="DATE", help="write OUT/gpu_models.md from the JSON files there and stop")
    ap.add_argument("--parts", nargs="*", default=["torch", "pipeline"], choices=["torch", "pipeline"])
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--frames", type=int, default=60, help="frames of the pipeline part's video")
    ap.add_argument("--device", default="cuda", help="cuda (the report) or cpu (a check of the driver)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="registry models of the torch part")
    args = ap.parse_args()
    if args.render:
        from vsseg_edge.core.fileio import atomic_write

        with atomic_write(args.out / "gpu_models.md", "w") as fh:
            fh.write(render(args.out, args.render))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        t0 = time.perf_counter()
        try:
            if part == "torch":
                part_torch(args.out, args.device, args.warmup, args.runs, args.models)
            elif part == "pipeline":
                part_pipeline(args.out, args.device, args.frames)
        except Exception as exc:  # noqa: BLE001 — report and go on to the next part
            log(f"part {part} failed: {type(exc).__name__}: {exc}")
        log(f"part {part}: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
