"""Triton serving on this CPU: `vsseg-edge serve` under 1/2/4/8 concurrent client streams, robustness, and the
same model without a server for comparison.

    python benchmarks/triton_cpu.py [--seconds 15] [--streams 1,2,4,8] [--threads 2]
        → benchmarks/reports/triton_cpu.{json,md}

Model: ESPNet (p=2, q=8) with the published CamVid weights (../shared/data/weights, MIT) when present, else seeded
random weights (speed does not depend on them); exported by the project's exporter with `--dynamic-batch` at
CamVid's 360×480, FP32 ONNX, served by the onnxruntime CPU backend.
Frames: the first 32 frames of ../shared/data/video/cosmos_highway_sunset.mp4 (1280×704, as the camera gives
them; the server resizes with the model's own preprocessing), else synthetic street frames of that size.

Each server configuration runs `vsseg-edge serve MODEL --port P --max-batch B --threads T` in its own process and
`vsseg-edge serve --check grpc://127.0.0.1:P+1 --streams … --seconds S` in another, on the same machine, so the
client's work (gRPC, copies) competes with the server's for the same cores. Configurations: dynamic batching up to
8 frames, and no batching (max batch 1). The first also runs the robustness cases and compares the served labels
with the local backend on 8 frames (exact). The baseline: the same model in this process through the serving code
path without Triton (`FrameSegmenter`: preprocess, infer, labels resized to the frame) at batch 1 and 8.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vsseg_edge.serve.ports import free_port_run

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
VIDEO = SHARED / "video" / "cosmos_highway_sunset.mp4"
WEIGHTS = SHARED / "weights" / "espnet_p_2_q_8_camvid.pth"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_model(work: Path) -> tuple[Path, str]:
    """ESPNet CamVid (published weights when present) → dynamic-batch FP32 ONNX with its manifest."""
    out = work / "espnet_camvid_batch.onnx"
    weights = str(WEIGHTS) if WEIGHTS.is_file() else None
    what = f"espnet, published CamVid weights ({WEIGHTS.name})" if weights else "espnet, seeded random weights"
    if out.is_file():
        return out, what
    import torch

    from vsseg_edge.core.labels import CAMVID
    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.export.onnx_export import export_onnx
    from vsseg_edge.export.presets import ExportPreset
    from vsseg_edge.models import create_model
    from vsseg_edge.models.espnet import PUBLISHED_PREPROCESS

    torch.manual_seed(0)
    model = create_model("espnet", CAMVID.num_classes, **({"weights": weights} if weights else {})).eval()
    export_onnx(
        model,
        out,
        model_name="espnet",
        classes=list(CAMVID.classes),
        preprocess=PreprocessSpec(**PUBLISHED_PREPROCESS["camvid"]),
        preset=ExportPreset(dynamic_batch=True, parity_count=1),
    )
    return out, what


def make_source(work: Path) -> tuple[str, str]:
    if VIDEO.is_file():
        return str(VIDEO), f"{VIDEO.name} (first 32 frames, 1280×704)"
    import cv2

    folder = work / "frames"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(32):
        img = np.zeros((704, 1280, 3), np.uint8)
        img[:352] = (200, 120, 60)
        img[352:] = (90, 90, 90)
        x = (40 * i) % 1100
        img[250:400, x : x + 180] = (30, 30, 220)
        img = np.clip(img.astype(np.int16) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return str(folder), "synthetic street frames (32, 1280×704)"


def shown(text: str) -> str:
    """Paths in a report as a reader of the repository sees them (./…, ../shared/…)."""
    return text.replace(str(REPO.parent / "shared"), "../shared").replace(str(REPO) + "/", "")


def baseline(model: Path, source: str, threads: int, runs: int = 16) -> dict:
    """The serving code path without Triton: FrameSegmenter on the same frames, batch 1 and 8, ms per frame."""
    from vsseg_edge.measure.timing import time_calls
    from vsseg_edge.runtime.backends import open_backend
    from vsseg_edge.serve.client import load_frames
    from vsseg_edge.serve.segmenter import FrameSegmenter

    frames = np.stack(load_frames(source, 8))
    out = {}
    with open_backend(model, threads=threads) as be:
        seg = FrameSegmenter(be)
        for batch in (1, 8):
            calls = time_calls(lambda i, b=batch: seg(frames[:b]), max(4, runs // batch), warmup=1)
            times = [ms / batch for ms in calls]
            out[f"batch{batch}"] = {
                "ms_per_frame_p50": round(float(np.median(times)), 2),
                "frames_per_s": round(1000 / float(np.median(times)), 2),
                "runs": len(times),
            }
    return out


def serve_and_check(
    model: Path,
    source: str,
    *,
    max_batch: int,
    threads: int,
    streams: str,
    seconds: float,
    extra: list[str],
    work: Path,
) -> dict:
    port = free_port_run()
    serve_cmd = [
        "vsseg-edge",
        "serve",
        str(model),
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--threads",
        str(threads),
        "--name",
        "espnet",
    ]
    server = subprocess.Popen(
        [sys.executable, "-m", "vsseg_edge.cli", *serve_cmd[1:]],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )  # `-m` from the repository
    try:
        t0 = time.perf_counter()
        for line in server.stderr:
            if line.startswith("ready") or server.poll() is not None:
                break
        if server.poll() is not None:
            raise RuntimeError(f"vsseg-edge serve did not start: {server.stderr.read()[-400:]}")
        start_s = round(time.perf_counter() - t0, 1)
        log(f"server up in {start_s} s (max batch {max_batch})")
        out = work / f"check_b{max_batch}.json"
        check_cmd = [
            "vsseg-edge",
            "serve",
            "--check",
            f"grpc://127.0.0.1:{port + 1}",
            "--model-name",
            "espnet",
            "--source",
            source,
            "--frames",
            "32",
            "--streams",
            streams,
            "--seconds",
            str(seconds),
            "--max-batch",
            str(max_batch),
            "--threads",
            str(threads),
            *extra,
            "--out",
            str(out),
        ]
        subprocess.run([sys.executable, "-m", "vsseg_edge.cli", *check_cmd[1:]], check=True, cwd=REPO)
        report = json.loads(out.read_text())
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            rest = server.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            server.kill()
            rest = "killed after 60 s"
    report["server"] = {
        "command": shown(" ".join(serve_cmd)),
        "start_s": start_s,
        "exit_code": server.returncode,
        "stopped": "stopped the Triton server" in rest,
    }
    report["client_command"] = shown(" ".join(check_cmd))
    report["command"], report["source"] = shown(report["command"]), shown(report["source"])
    if "reference" in report:
        report["reference"]["reference"] = shown(report["reference"]["reference"])
    return report


def write_md(rep: dict, path: Path) -> None:
    env = rep["environment"]
    lines = [
        "# Triton serving on a 2-core CPU (PyTriton, onnxruntime backend)",
        "",
        f"Command: `{rep['command']}`. Created {rep['created']}.",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, shared with other jobs: load average (1/5/15 min) "
        f"{env['load_avg']} at the start, {rep['load_avg_end']} at the end. Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in {**env["serving"], **env["libraries"]}.items() if v)
        + ".",
        "",
        f"Model: {rep['model']['what']}, `{Path(rep['model']['path']).name}`, exported with `--dynamic-batch`, "
        f"input 360×480 (its manifest's preprocessing: resize, BGR, mean/std, /255), FP32 ONNX on onnxruntime's CPU "
        f"provider with {rep['threads']} intra-op threads, one model instance.",
        f"Frames: {rep['frames']}; each request is one frame, 1×704×1280×3 uint8 (2.7 MB), answered with "
        "1×704×1280 uint8 labels (0.9 MB).",
        "",
        "## What the figures include",
        "",
        "- **frames/s**: answers received per second over the timed window (after a 1 s warm-up), all streams "
        "together. Each stream is a client thread with its own gRPC connection sending the next frame as soon as the "
        "previous answer is back (closed loop, like a camera that sends as fast as it is served).",
        "- **latency**: the client's time around one request: serialisation, loopback transport, Triton's queue and "
        "dynamic batcher, the shared-memory hop to the PyTriton proxy, preprocessing (resize 1280×704 → 480×360, "
        "normalise), inference, labels resized back to 1280×704, and the way back. p50/p90/p99 over every request "
        "sent in the window.",
        "- Server and client run on the same 2 cores: the client's gRPC and copies take CPU from the server.",
        "- **no server**: the same code path (`FrameSegmenter`: preprocess, infer, labels to the frame size) called "
        "in one process on the same frames, batch 1 and batch 8, ms per frame: what Triton and the transport add.",
        "",
        "## Results",
        "",
        "| server | streams | frames/s | p50 ms | p90 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cfg in rep["servers"]:
        for run in cfg["runs"]:
            lat = run["latency_ms"]
            lines.append(
                f"| {cfg['label']} | {run['streams']} | {run['frames_per_s']:.2f} | {lat['p50']} | "
                f"{lat['p90']} | {lat['p99']} | {run['errors']} |"
            )
    b = rep["no_server"]
    lines += [
        "",
        f"No server (same process, same frames): batch 1 {b['batch1']['ms_per_frame_p50']} ms/frame "
        f"({b['batch1']['frames_per_s']} frames/s), batch 8 {b['batch8']['ms_per_frame_p50']} ms/frame "
        f"({b['batch8']['frames_per_s']} frames/s).",
        "",
    ]
    first = rep["servers"][0]
    if first.get("reference"):
        r = first["reference"]
        lines.append(
            f"Served labels vs the same ONNX run locally (`--reference`): {r['identical']}/{r['frames']} "
            f"frames identical ({r.get('agreement_percent', 'n/a')} % of pixels agree)."
        )
        lines.append("")
    if first.get("robustness"):
        lines += [
            "## Robustness (dynamic-batching server)",
            "",
            "| case | error response | a valid request answered right after | response |",
            "| --- | --- | --- | --- |",
        ]
        for c in first["robustness"]:
            resp = c["response"].replace("|", "/")[:110]
            lines.append(
                f"| {c['case']} | {'yes' if c['error_response'] else 'no'} | "
                f"{'yes' if c['served_after'] else 'NO'} | {resp} |"
            )
        lines.append("")
    lines += ["## Commands", ""]
    for cfg in rep["servers"]:
        lines += [
            f"- {cfg['label']}: `{cfg['server']['command']}` (up in {cfg['server']['start_s']} s, exit code "
            f"{cfg['server']['exit_code']} after SIGTERM), then `{cfg['client_command']}`"
        ]
    lines += ["", "## Reading the figures", "", *rep["notes"], ""]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "triton_cpu")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports" / "triton_cpu")
    ap.add_argument("--notes", type=Path, help="Markdown lines for 'Reading the figures' (written after a run)")
    ap.add_argument("--render-only", action="store_true", help="re-write the .md (and notes) from the .json")
    args = ap.parse_args()
    from vsseg_edge.core.fileio import write_json
    from vsseg_edge.serve.client import environment

    notes = args.notes.read_text().splitlines() if args.notes else []
    if args.render_only:
        report = json.loads(args.out.with_suffix(".json").read_text())
        report["notes"] = notes or report.get("notes", [])
        write_json(args.out.with_suffix(".json"), report)
        write_md(report, args.out.with_suffix(".md"))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    env = environment()
    model, what = make_model(args.work)
    source, frames = make_source(args.work)
    log(f"model {model} ({what}); frames {frames}")
    no_server = baseline(model, source, args.threads)
    log(f"no server: {no_server}")
    servers = []
    for label, max_batch, extra in (
        ("dynamic batching ≤ 8", 8, ["--robustness", "--reference", str(model)]),
        ("no batching (max batch 1)", 1, []),
    ):
        rep = serve_and_check(
            model,
            source,
            max_batch=max_batch,
            threads=args.threads,
            streams=args.streams,
            seconds=args.seconds,
            extra=extra,
            work=args.work,
        )
        rep["label"] = label
        servers.append(rep)
    report = {
        "schema": "vsseg-edge-triton-cpu/1",
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/triton_cpu.py " + " ".join(sys.argv[1:]),
        "environment": env,
        "load_avg_end": [round(v, 2) for v in os.getloadavg()],
        "threads": args.threads,
        "model": {"path": shown(str(model)), "what": what},
        "frames": frames,
        "no_server": no_server,
        "servers": servers,
        "notes": notes,
    }
    write_json(args.out.with_suffix(".json"), report)
    write_md(report, args.out.with_suffix(".md"))
    log(f"wrote {args.out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
