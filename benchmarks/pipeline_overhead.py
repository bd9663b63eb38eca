"""Pipeline overhead: end-to-end frame time through the runtime (null sink) vs the pure backend time.

A driver over the package: the model is a seeded random-init registry model (`bench.models`; speed does not
depend on the weights) exported by `export.onnx_export.export_checkpoint` at 512×1024, FP32, onnxruntime
CPU; the frames are synthetic (`measure.overhead.synthetic_video`); the measurement is
`measure.overhead.measure_overhead` (pure backend, pipeline, pure backend again, on the same frames):
overhead = pipeline frame interval p50 / pure infer p50 − 1 (goal ≤ 10 %), and the overlap ratio
fps × max(stage-thread p50) (goal ≥ 0.9: the pipeline runs at the pace of its slowest stage).

    python benchmarks/pipeline_overhead.py [--frames 16] [--threads 2] [--model pspnet18] [--onnx M.onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPORTS = Path(__file__).resolve().parent / "reports"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_onnx(workdir: Path, model_name: str, size: tuple[int, int]) -> Path:
    """A seeded random-init checkpoint of `model_name`, exported to ONNX with its manifest."""
    from vsseg_edge.bench.models import random_init_checkpoint
    from vsseg_edge.export.onnx_export import export_checkpoint
    from vsseg_edge.export.presets import ExportPreset

    ckpt = random_init_checkpoint(model_name, workdir / f"{model_name}.pt", size=size)
    out = workdir / f"{model_name}.onnx"
    export_checkpoint(ckpt, out, ExportPreset(size=size, parity_count=1))
    return out


def write_report(out_dir: Path, fig: dict, meta: dict) -> None:
    from vsseg_edge.core.fileio import atomic_write, write_json

    write_json(out_dir / "pipeline_overhead.json", {**meta, **fig})
    ok_o, ok_t = fig["overhead_p50"] <= 0.10, fig["overlap_ratio"] >= 0.9
    st = fig["stage_thread_p50_ms"]
    pure = fig["pure_infer_ms"]
    spread = abs(pure["p50_before"] - pure["p50_after"]) / pure["p50"]
    lines = [
        "# Pipeline overhead (runtime, onnxruntime CPU)",
        "",
        f"Model: {meta['model']} (seeded random weights; exported by vsseg_edge.export at {meta['size']}), FP32 ONNX, "
        f"onnxruntime {meta['onnxruntime']} {meta['provider']}, intra-op threads {meta['threads']}.",
        f"Frames: {meta['frames']} synthetic {meta['frame_hw']} frames in an mp4v video, decoded by OpenCV; "
        f"first {meta['skip']} pipeline frames (queue filling) left out.",
        f"Machine: {meta['machine']} — {meta['cpus']} CPU cores shared with other work; 1-min load average "
        f"{meta['load_avg_1min'][0]} before, {meta['load_avg_1min'][1]} after (timings are noisy).",
        f"Command: `{meta['command']}` ({meta['date']}).",
        "",
        "| figure | value | goal |",
        "|---|---|---|",
        f"| pure backend infer p50 (before / after) | {fig['pure_infer_ms']['p50']:.1f} ms "
        f"({fig['pure_infer_ms']['p50_before']:.1f} / {fig['pure_infer_ms']['p50_after']:.1f}) | |",
        f"| pipeline frame interval p50 / p99 | {fig['pipeline_interval_ms']['p50']:.1f} / "
        f"{fig['pipeline_interval_ms']['p99']:.1f} ms | |",
        f"| **overhead at p50** | **{100 * fig['overhead_p50']:+.1f} %** | ≤ 10 % {'✅' if ok_o else '❌'} |",
        f"| stage threads p50: capture / preprocess+infer / postprocess+render | {st['capture']:.1f} / "
        f"{st['preprocess+infer']:.1f} / {st['postprocess+render']:.1f} ms | |",
        f"| throughput | {fig['fps']:.3f} FPS | |",
        f"| **overlap ratio** fps × max(stage) | **{fig['overlap_ratio']:.3f}** | ≥ 0.9 {'✅' if ok_t else '❌'} |",
        f"| infer inside the pipeline p50 | {fig['pipeline_infer_ms_p50']:.1f} ms | |",
        f"| latency (end of capture → rendered) p50 | {fig['pipeline_latency_ms_p50']:.1f} ms | |",
        "",
        "Per stage p50 / p99 (ms): "
        + ", ".join(
            f"{k.replace('_ms', '')} {fig['stage_p50_ms'][k]:.2f} / {fig['stage_p99_ms'][k]:.2f}"
            for k in fig["stage_p50_ms"]
        ),
        "",
        f"Noise: the two pure-backend passes bracketing the pipeline differ by {100 * spread:.1f} %; an overhead "
        "smaller than that (including a negative one) is within the noise of this shared machine.",
        "",
        "Latency includes the wait in the file source's prefetch queue (files are read ahead; live sources keep "
        "only the latest frame instead). No GPU figures: this run had no GPU.",
    ]
    with atomic_write(out_dir / "pipeline_overhead.md", "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="pspnet18")
    ap.add_argument("--onnx", type=Path, help="use this ONNX (with manifest) instead of exporting --model")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--frame-hw", default="1024x2048")
    ap.add_argument("--size", default="512x1024")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPORTS)
    args = ap.parse_args()
    import onnxruntime as ort

    from vsseg_edge.core.config import parse_size
    from vsseg_edge.measure.machine import cpu_flags, cpu_model, load_average
    from vsseg_edge.measure.overhead import measure_overhead, synthetic_video
    from vsseg_edge.runtime.backends import open_backend

    size, frame_hw = parse_size(args.size), parse_size(args.frame_hw, "--frame-hw")
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log(f"model: {args.onnx or 'exporting ' + args.model}")
        onnx_path = args.onnx or make_onnx(tmp, args.model, size)
        video = synthetic_video(tmp / "frames.mp4", args.frames, frame_hw)
        with open_backend(onnx_path, "ort", threads=args.threads) as be:
            log("pure backend, pipeline, pure backend")
            fig = measure_overhead(be, video, warmup=2, skip=args.skip).to_dict()
            provider = be.device
    meta = {
        "model": args.onnx.name if args.onnx else args.model,
        "size": args.size,
        "frames": args.frames,
        "frame_hw": args.frame_hw,
        "threads": args.threads,
        "skip": args.skip,
        "onnxruntime": ort.__version__,
        "provider": provider,
        "machine": f"{cpu_model()} ({', '.join(cpu_flags()) or 'no ISA flags read'})",
        "cpus": os.cpu_count(),
        "load_avg_1min": [(load_before or [None])[0], (load_average() or [None])[0]],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python " + " ".join(["benchmarks/pipeline_overhead.py", *sys.argv[1:]]),
    }
    write_report(args.out, fig, meta)
    print(
        json.dumps(
            {
                k: fig[k]
                for k in (
                    "pure_infer_ms",
                    "pipeline_interval_ms",
                    "overhead_p50",
                    "fps",
                    "stage_thread_p50_ms",
                    "overlap_ratio",
                )
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
