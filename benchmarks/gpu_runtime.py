"""Does the runtime run at the speed of the model? Backend-only FPS vs `vsseg-edge run` FPS, and live latency.

    python benchmarks/gpu_runtime.py gpu --out OUT      on a machine with an NVIDIA GPU (benchmarks/gpu_check.sh)
    python benchmarks/gpu_runtime.py cpu                on any machine: the CPU-side figures
    python benchmarks/gpu_runtime.py render --out DIR   DIR/gpu_runtime.md from DIR/gpu_runtime.json

Each measuring part writes its section into OUT/gpu_runtime.json (default benchmarks/reports), starting from the
committed report so that a GPU run keeps the CPU section, and renders OUT/gpu_runtime.md beside it.

gpu, per model (PSPNet-18, BiSeNetV2, ESPNet; seeded random weights at 512×1024: speed does not depend on them):
  - backend only: the backend's `infer` on a batch already prepared on the host (the figure the model's speed is
    quoted by: torch FP16 + channels-last + CUDA graph, host batch → device → model → argmax → labels on the host);
  - `vsseg-edge run` on a 1024×2048 mp4v file (decoded by OpenCV, null sink), with the device stage (the
    default on CUDA) and with `--preprocess host` (the host path, side by side), steady-state FPS from `--stats`;
    pipeline_over_backend = run FPS ÷ backend-only FPS (goal ≥ 0.8);
  - live: the same frames replayed as a live source (latest-frame capture) at the backend-only rate, latency
    (end of capture → result) p50/p99 and p50 ÷ the source's frame interval (goal ≤ 2);
  - onnxruntime (CUDA / TensorRT execution providers, I/O binding) and TensorRT engines when installed.
cpu: the device preprocessing against OpenCV on realistic frames (max difference, share of pixels off by one), and
  its time on CPU tensors against the host path (cv2 + numpy), interleaved; the onnxruntime CPU pipeline overhead
  comes from benchmarks/pipeline_overhead.py (its committed JSON).
`--smoke` runs the gpu part on the CPU with tiny sizes, to check this script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "benchmarks" / "reports"
MODELS = ("pspnet18", "bisenetv2", "espnet")
NAME = "gpu_runtime"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def p(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q))


def environment() -> dict:
    from vsseg_edge.measure.machine import environment as env
    from vsseg_edge.measure.machine import load_average

    return {**env(), "load_avg": load_average()}


# -- inputs ------------------------------------------------------------------------------------------------------
def make_checkpoint(workdir: Path, name: str, size: tuple[int, int]) -> Path:
    from vsseg_edge.bench.models import random_init_checkpoint

    return random_init_checkpoint(name, workdir / f"{name}.pt", size=size)


def make_video(path: Path, frames: list[np.ndarray]) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()


def street_frames(n: int, hw: tuple[int, int]) -> list[np.ndarray]:
    """Moving smooth scenes (the parity check's synthetic frames, shifted a little each frame)."""
    from vsseg_edge.export.parity import synthetic_frames

    base = synthetic_frames(4, hw)
    return [np.roll(base[i % 4], 8 * i, axis=1) for i in range(n)]


# -- measurements ------------------------------------------------------------------------------------------------
def backend_only(be, batch: np.ndarray, warmup: int, runs: int) -> dict:
    """The backend's own call on a prepared batch, timed by the measurement core (`measure.timing`)."""
    from vsseg_edge.measure.timing import LatencyStats, time_calls

    stats = LatencyStats.of(time_calls(lambda i: be.infer(batch), runs, warmup))
    return {"p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms, "fps": 1e3 / stats.p50_ms, "runs": runs}


def steady(records: list[dict], skip: int) -> dict:
    """FPS, latency and per-stage p50 over the records after the first `skip` (warm-up, graph capture)."""
    recs = records[skip:]
    if len(recs) < 2:
        return {"error": f"only {len(records)} frames"}
    t = [r["t_done"] for r in recs]
    lat = [r["latency_ms"] for r in recs]
    stages = ("capture_ms", "upload_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "download_ms", "render_ms")
    return {
        "fps": (len(recs) - 1) / (t[-1] - t[0]),
        "frames": len(recs),
        "latency_p50_ms": p(lat, 50),
        "latency_p99_ms": p(lat, 99),
        "drops": recs[-1]["drops"] - recs[0]["drops"],
        "stage_p50_ms": {s.removesuffix("_ms"): p([r.get(s, 0.0) for r in recs], 50) for s in stages},
    }


def run_cli(model: Path, video: Path, stats: Path, *, options: list[str], max_frames: int, skip: int) -> dict:
    """`vsseg-edge run MODEL --source VIDEO` in its own process; the figures from its --stats file."""
    cmd = [
        sys.executable,
        "-m",
        "vsseg_edge.cli",
        "run",
        str(model),
        "--source",
        str(video),
        "--stats",
        str(stats),
        "--max-frames",
        str(max_frames),
        *options,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)  # `-m` from the repository: its package
    out = {
        "command": "vsseg-edge "
        + " ".join(cmd[3:]).replace(str(model.parent) + "/", "").replace(str(video.parent) + "/", ""),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    if proc.returncode != 0:
        return {**out, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
    records = [json.loads(line) for line in stats.read_text().splitlines()]
    return {**out, **steady(records, skip)}


class PacedCamera:
    """A capture-like object replaying `frames` at `fps` forever (a camera for LiveSource's opener)."""

    def __init__(self, frames: list[np.ndarray], fps: float):
        self.frames, self.period = frames, 1.0 / fps
        self.i, self._next = 0, time.perf_counter()

    def isOpened(self):
        return True

    def read(self):
        self._next += self.period
        delay = self._next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            self._next = time.perf_counter()  # behind (a GC pause): do not burst to catch up
        self.i += 1
        return True, self.frames[self.i % len(self.frames)]

    def release(self):
        pass

    def get(self, prop):
        return 0.0


def live(be, frames: list[np.ndarray], fps: float, n: int, skip: int, preprocess: str) -> dict:
    """The frames as a live source at `fps`: latency of what is shown, against the source's frame interval."""
    from vsseg_edge.runtime.pipeline import Pipeline
    from vsseg_edge.runtime.sinks import NullSink
    from vsseg_edge.runtime.sources import LiveSource

    src = LiveSource(lambda: PacedCamera(frames, fps), f"paced replay at {fps:.0f} FPS", stall_timeout=10.0)
    result = Pipeline(src, be, [NullSink()], max_frames=n, handle_signals=False, preprocess=preprocess).run()
    fig = steady(list(result.records), skip)
    interval = 1e3 / fps
    return {
        "source_fps": fps,
        "source_interval_ms": interval,
        **fig,
        "latency_over_interval": fig.get("latency_p50_ms", float("nan")) / interval,
    }


# -- the gpu part ------------------------------------------------------------------------------------------------
def torch_entry(ckpt: Path, video: Path, frames: list[np.ndarray], tmp: Path, cfg: dict) -> dict:
    from vsseg_edge.core.preprocess import preprocess
    from vsseg_edge.runtime.backends.torch_backend import TorchBackend

    gpu = cfg["device"] == "cuda"
    opts = {"cuda_graph": True} if gpu else {}
    be = TorchBackend.from_checkpoint(ckpt, device=cfg["device"], **opts)
    entry = {
        "backend": "torch",
        "settings": f"FP16 {be.fp16}, channels-last {be.channels_last}, CUDA graph {be.cuda_graph}",
    }
    batch = preprocess(frames[0], be.preprocess_spec)
    entry["backend_only"] = backend_only(be, batch, cfg["warmup"], cfg["runs"])
    log(f"  torch backend only: {entry['backend_only']['fps']:.1f} FPS")
    cli = ["--cuda-graph"] if gpu else []
    pipe = {}
    for key, mode, n in (("runtime", "device", cfg["frames"]), ("host", "host", cfg["host_frames"])):
        pipe[key] = run_cli(
            ckpt,
            video,
            tmp / f"{ckpt.stem}.{mode}.jsonl",
            options=cli + ["--preprocess", mode],
            max_frames=n,
            skip=cfg["skip"],
        )
        log(f"  run --preprocess {mode}: {pipe[key].get('fps', pipe[key].get('error'))}")
    entry["pipeline"] = pipe
    fps = entry["backend_only"]["fps"]
    entry["live"] = live(be, frames, fps, cfg["live_frames"], cfg["skip"], "device")
    log(f"  live at {fps:.0f} FPS: latency p50 {entry['live'].get('latency_p50_ms', float('nan')):.2f} ms")
    be.close()
    if "fps" in pipe["runtime"]:
        entry["pipeline_over_backend"] = pipe["runtime"]["fps"] / fps
    entry["latency_over_interval"] = entry["live"].get("latency_over_interval")
    return entry


def camera_onnx(ckpt: Path, frame_hw: tuple[int, int]) -> Path:
    """The deployment graph of `ckpt`: camera frames in (resize + normalisation inside), uint8 labels out."""
    from vsseg_edge.export.onnx_export import export_checkpoint
    from vsseg_edge.export.presets import load_preset

    out = ckpt.with_suffix(".camera.onnx")
    if not out.exists():
        export_checkpoint(
            ckpt, out, load_preset(REPO / "export" / "uint8_argmax.yaml", frame_size=tuple(frame_hw), parity_count=1)
        )
    return out


def ort_entry(ckpt: Path, video: Path, frames: list[np.ndarray], cfg: dict) -> dict:
    """onnxruntime on its CUDA execution provider, in this process (the CLI would pick TensorRT's provider when
    installed, whose engine build per process would dominate): backend only, the runtime's pipeline, live."""
    import onnxruntime as ort

    from vsseg_edge.core.preprocess import preprocess
    from vsseg_edge.runtime.backends import open_backend
    from vsseg_edge.runtime.pipeline import Pipeline
    from vsseg_edge.runtime.sinks import NullSink
    from vsseg_edge.runtime.sources import open_source

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cfg["device"] == "cuda" else None
    if providers and "CUDAExecutionProvider" not in ort.get_available_providers():
        return {
            "backend": "ort",
            "status": "unavailable",
            "reason": f"onnxruntime {ort.__version__} has no CUDA provider ({ort.get_available_providers()})",
        }
    onnx_path = camera_onnx(ckpt, cfg["frame_hw"])
    with open_backend(onnx_path, providers=providers) as be:
        entry = {"backend": "ort", "settings": f"onnxruntime {ort.__version__} {be.device}, camera-frame graph"}
        entry["backend_only"] = backend_only(be, preprocess(frames[0], be.preprocess_spec), cfg["warmup"], cfg["runs"])
        result = Pipeline(
            open_source(str(video)), be, [NullSink()], max_frames=cfg["frames"], handle_signals=False
        ).run()
        entry["pipeline"] = {
            "runtime": {
                "command": "Pipeline(VideoFileSource, OrtBackend, [NullSink]) in process",
                **steady(list(result.records), cfg["skip"]),
            }
        }
        fps = entry["backend_only"]["fps"]
        entry["live"] = live(be, frames, fps, cfg["live_frames"], cfg["skip"], "auto")
    if "fps" in entry["pipeline"]["runtime"]:
        entry["pipeline_over_backend"] = entry["pipeline"]["runtime"]["fps"] / fps
    entry["latency_over_interval"] = entry["live"].get("latency_over_interval")
    return entry


def trt_entry(ckpt: Path, video: Path, frames: list[np.ndarray], tmp: Path, cfg: dict) -> dict:
    """A TensorRT FP16 engine of the camera-frame graph: backend only, `vsseg-edge run`, live."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 — ImportError, or a wheel without its libraries
        return {"backend": "trt", "status": "unavailable", "reason": f"tensorrt not importable ({exc})"[:200]}
    from vsseg_edge.core.preprocess import preprocess
    from vsseg_edge.runtime.backends import open_backend

    onnx_path = camera_onnx(ckpt, cfg["frame_hw"])
    engine = onnx_path.with_suffix(".fp16.engine")
    cmd = [
        sys.executable,
        "-m",
        "vsseg_edge.cli",
        "build-engine",
        str(onnx_path),
        "--fp16",
        "--out",
        str(engine),
        "--timing-cache",
        str(tmp / "timing.cache"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        return {"backend": "trt", "status": "failed", "reason": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
    with open_backend(engine) as be:
        entry = {"backend": "trt", "settings": f"TensorRT {tensorrt.__version__} FP16, camera-frame engine"}
        entry["backend_only"] = backend_only(be, preprocess(frames[0], be.preprocess_spec), cfg["warmup"], cfg["runs"])
        fps = entry["backend_only"]["fps"]
        entry["live"] = live(be, frames, fps, cfg["live_frames"], cfg["skip"], "auto")
    entry["pipeline"] = {
        "runtime": run_cli(
            engine, video, tmp / f"{engine.stem}.jsonl", options=[], max_frames=cfg["frames"], skip=cfg["skip"]
        )
    }
    if "fps" in entry["pipeline"]["runtime"]:
        entry["pipeline_over_backend"] = entry["pipeline"]["runtime"]["fps"] / fps
    entry["latency_over_interval"] = entry["live"].get("latency_over_interval")
    return entry


def gpu_name(device: str) -> str:
    if device != "cuda":
        from vsseg_edge.measure.machine import cpu_model

        return f"none (smoke run on the CPU: {cpu_model()})"
    import torch

    return torch.cuda.get_device_name(0)


def part_gpu(out: Path, smoke: bool, backends: list[str]) -> dict:
    import torch

    if not smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_runtime.py gpu: no CUDA device visible to torch (use --smoke to check the script on CPU)")
    cfg = dict(
        device="cuda",
        size=(512, 1024),
        frame_hw=(1024, 2048),
        frames=600,
        host_frames=150,
        live_frames=400,
        skip=20,
        warmup=30,
        runs=300,
        models=MODELS,
    )
    if smoke:
        cfg.update(
            device="cpu",
            size=(32, 64),
            frame_hw=(64, 128),
            frames=12,
            host_frames=8,
            live_frames=10,
            skip=2,
            warmup=2,
            runs=5,
            models=("espnet",),
        )
    if cfg["device"] == "cuda":
        torch.backends.cudnn.benchmark = True
    card = gpu_name(cfg["device"])
    section = {
        "card": card,
        "torch": torch.__version__,
        "environment": environment(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {k: v for k, v in cfg.items() if k != "models"},
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = street_frames(24, cfg["frame_hw"])
        video = tmp / "frames.mp4"
        make_video(video, [frames[i % len(frames)] for i in range(max(cfg["frames"], cfg["host_frames"]) + 5)])
        ckpts = {name: make_checkpoint(tmp, name, cfg["size"]) for name in cfg["models"]}
        # backend by backend, so the torch figures (the goal's) are saved before the optional ones are tried
        for key in backends:
            for name, ckpt in ckpts.items():
                log(f"{name} / {key}")
                model = section["models"].setdefault(name, {"card": card})
                try:
                    if key == "torch":
                        model[key] = torch_entry(ckpt, video, frames, tmp, cfg)
                    elif key == "ort":
                        model[key] = ort_entry(ckpt, video, frames, cfg)
                    else:
                        model[key] = trt_entry(ckpt, video, frames, tmp, cfg)
                except Exception as exc:  # noqa: BLE001 — one failure must not lose the other figures
                    model[key] = {
                        "backend": key,
                        "status": "failed",
                        "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                    }
                    log(f"  failed: {model[key]['reason']}")
                if key == "torch":
                    model["pipeline_over_backend"] = model[key].get("pipeline_over_backend")
                    model["latency_over_interval"] = model[key].get("latency_over_interval")
                save(out, "gpu", section)
    return section


# -- the cpu part ------------------------------------------------------------------------------------------------
def realistic_frames() -> list[tuple[str, np.ndarray]]:
    """A synthetic 1024×2048 street scene and, where the shared CamVid sample is present, a real CamVid frame."""
    import cv2

    from vsseg_edge.export.parity import synthetic_frames

    out = [("synthetic 1024x2048", synthetic_frames(1, (1024, 2048))[0])]
    camvid = sorted((REPO.parent / "shared" / "data" / "camvid_sample" / "images").glob("*.png"))
    if not camvid:
        camvid = sorted(Path("/work/shared/data/camvid_sample/images").glob("*.png"))
    if camvid:
        img = cv2.imread(str(camvid[0]))
        out.append((f"CamVid {camvid[0].name} {img.shape[0]}x{img.shape[1]}", img))
    return out


def equality() -> list[dict]:
    import cv2
    import torch

    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.runtime.device import DevicePreprocess

    flags = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}
    rows = []
    for label, frame in realistic_frames():
        h, w = frame.shape[:2]
        for oh, ow in dict.fromkeys(((h // 2, w // 2), (512, 1024), (720, 1280), (2 * h, 2 * w))):
            for mode, flag in flags.items():
                spec = PreprocessSpec(height=oh, width=ow, interpolation=mode)
                dp = DevicePreprocess(spec, (h, w))
                got = dp.resize(torch.from_numpy(frame)).numpy().astype(np.int16)
                diff = np.abs(got - cv2.resize(frame, (ow, oh), interpolation=flag).astype(np.int16))
                rows.append(
                    {
                        "frame": label,
                        "to": f"{oh}x{ow}",
                        "interpolation": mode,
                        "max_diff": int(diff.max()),
                        "off_by_one_pct": round(100 * float((diff > 0).mean()), 3),
                        "rounding": dp.rounding,
                    }
                )
    return rows


def cpu_timings(runs: int) -> dict:
    """core.preprocess (cv2 + numpy) vs the device implementation on CPU tensors, 1024×2048 → 512×1024, interleaved."""
    import torch

    from vsseg_edge.core.preprocess import PreprocessSpec, preprocess
    from vsseg_edge.measure.timing import time_calls
    from vsseg_edge.runtime.device import DevicePreprocess

    frame = realistic_frames()[0][1]
    out = {}
    for mode in ("linear", "area", "nearest"):
        spec = PreprocessSpec(height=512, width=1024, interpolation=mode)
        dp = DevicePreprocess(spec, frame.shape[:2])
        t = torch.from_numpy(frame)
        host, dev = [], []
        with torch.inference_mode():
            for i in range(runs + 2):  # interleaved, one call of each at a time; the first two are warm-up
                h, d = (
                    time_calls(fn, 1, 0)[0]
                    for fn in (lambda _, s=spec: preprocess(frame, s), lambda _, f=dp, x=t: f(x))
                )
                if i >= 2:
                    host.append(h)
                    dev.append(d)
        out[mode] = {
            "host_p50_ms": p(host, 50),
            "device_path_on_cpu_p50_ms": p(dev, 50),
            "ratio": p(dev, 50) / p(host, 50),
        }
    return {
        "frame": "1024x2048 → 512x1024 float32 NCHW",
        "runs": runs,
        "torch_threads": torch.get_num_threads(),
        "modes": out,
    }


def part_cpu(out: Path, runs: int) -> dict:
    section = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "environment": environment(),
        "equality": equality(),
        "timings": cpu_timings(runs),
    }
    po = REPORTS / "pipeline_overhead.json"
    if po.exists():
        d = json.loads(po.read_text())
        section["ort_cpu_overhead"] = {
            k: d.get(k)
            for k in (
                "model",
                "date",
                "command",
                "overhead_p50",
                "overlap_ratio",
                "fps",
                "pure_infer_ms",
                "pipeline_interval_ms",
                "load_avg_1min",
            )
        }
    save(out, "cpu", section)
    return section


# -- the report --------------------------------------------------------------------------------------------------
def save(out: Path, part: str, section: dict) -> None:
    from vsseg_edge.core.fileio import atomic_write, write_json

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{NAME}.json"
    base = path if path.exists() else REPORTS / f"{NAME}.json"
    data = json.loads(base.read_text()) if base.exists() else {"schema": "vsseg-edge-gpu-runtime/1"}
    data[part] = section
    gpu_models = data.get("gpu", {}).get("models", {})
    data["models"] = {
        name: {k: m.get(k) for k in ("card", "pipeline_over_backend", "latency_over_interval")}
        for name, m in gpu_models.items()
    } or {
        name: {
            "card": None,
            "pipeline_over_backend": None,
            "latency_over_interval": None,
            "status": "pending: no GPU run yet (bash benchmarks/gpu_check.sh)",
        }
        for name in MODELS
    }
    write_json(path, data)
    with atomic_write(out / f"{NAME}.md", "w") as fh:
        fh.write(render(data))


TABLE_HEAD = (
    "| model | backend | backend-only FPS | `run` FPS | run ÷ backend (≥ 0.8) | `run` FPS "
    "(host path) | live latency p50 / p99 ms | p50 ÷ interval (≤ 2) |",
    "|---|---|---|---|---|---|---|---|",
)


def _f(v, fmt: str = ".1f", none: str = "pending") -> str:
    return none if v is None else format(v, fmt)


def render(data: dict) -> str:
    lines = [
        "# GPU runtime at the speed of the model",
        "",
        "Goal: `vsseg-edge run` on a 1024×2048 file at ≥ 0.8× the backend-only FPS, and on a live source a "
        "capture → result latency p50 of at most 2 frame intervals. Command: `python benchmarks/gpu_runtime.py "
        "gpu --out OUT` (called by `bash benchmarks/gpu_check.sh`) and `python benchmarks/gpu_runtime.py cpu`.",
        "",
    ]
    g = data.get("gpu")
    lines += ["## On a GPU", ""]
    if not g:
        lines += [
            "**Pending**: no GPU was available where this report was written. `bash benchmarks/gpu_check.sh` "
            "on a machine with an NVIDIA GPU measures the table below and rewrites this report.",
            "",
            *TABLE_HEAD,
        ]
        lines += [
            f"| {m} | torch FP16 + CUDA graph | pending | pending | pending | pending | pending | pending |"
            for m in MODELS
        ]
    else:
        s = g["settings"]
        lines += [
            f"Card: **{g['card']}**; torch {g['torch']}; {g['date']}. Models with seeded random weights at "
            f"{s['size'][0]}×{s['size'][1]}; a {s['frame_hw'][0]}×{s['frame_hw'][1]} mp4v file "
            f"({s['frames']} frames with the device stage, {s['host_frames']} on the host path), null sink; "
            f"the first {s['skip']} frames of every run left out. Backend only: `infer` on a host batch "
            f"({s['runs']} runs after {s['warmup']}); live: the frames replayed as a latest-frame source at "
            "the backend-only rate.",
            "",
            *TABLE_HEAD,
        ]
        for name, m in g["models"].items():
            for key in ("torch", "ort", "trt"):
                e = m.get(key)
                if not e:
                    continue
                if "backend_only" not in e:
                    lines.append(f"| {name} | {key}: {e.get('status', 'not run')} — {e.get('reason', '')} |")
                    continue
                pd, ph, lv = e["pipeline"].get("runtime", {}), e["pipeline"].get("host", {}), e.get("live", {})
                ok = e.get("pipeline_over_backend")
                lines.append(
                    f"| {name} | {key} ({e['settings']}) | {e['backend_only']['fps']:.0f} | "
                    f"{_f(pd.get('fps'), '.0f', pd.get('error', '—'))} | "
                    f"{_f(ok, '.2f', '—')} {'✅' if ok and ok >= 0.8 else '❌' if ok else ''} | "
                    f"{_f(ph.get('fps'), '.0f', ph.get('error', '—'))} | "
                    f"{_f(lv.get('latency_p50_ms'), '.2f', '—')} / {_f(lv.get('latency_p99_ms'), '.2f', '—')} | "
                    f"{_f(lv.get('latency_over_interval'), '.2f', '—')} "
                    f"{'✅' if (lv.get('latency_over_interval') or 9) <= 2 else '❌'} |"
                )
        lines += [
            "",
            "`run` FPS: torch and TensorRT with their device stage (the default on CUDA), onnxruntime with "
            "the host stage and I/O binding on its CUDA provider; host path: `--preprocess host`, the runtime "
            "before the device stage.",
            "",
            "Per-stage p50 (ms) of `run` (device stages: CUDA events; upload includes the copy into the pinned "
            "buffer):",
            "",
        ]
        for name, m in g["models"].items():
            for key in ("torch", "ort", "trt"):
                st = (m.get(key) or {}).get("pipeline", {}).get("runtime", {}).get("stage_p50_ms")
                if st:
                    lines.append(f"- {name} / {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in st.items()))
    c = data.get("cpu")
    lines += ["", "## On the CPU", ""]
    if c:
        env = c["environment"]
        lines += [
            f"{c['date']}, {env.get('cpu')} ({env.get('cpu_count')} cores, shared; load {env.get('load_avg')}).",
            "",
            "### The device preprocessing against OpenCV (CPU tensors; the same code runs on CUDA)",
            "",
            "Resized uint8 frames, `runtime/device.py` vs `cv2.resize` (the test suite asserts ≤ 1 everywhere, "
            "0 for integer shrinks and nearest; model inputs within one uint8 step, label maps identical). "
            "Off by one: OpenCV's bilinear (and area zoom) uses 11-bit fixed-point weights, the device float "
            "weights rounded the same way:",
            "",
            "| frame | to | interpolation | max diff | pixels off by one | rounding |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['frame']} | {r['to']} | {r['interpolation']} | {r['max_diff']} | {r['off_by_one_pct']:.3f} % "
            f"| {r['rounding']} |"
            for r in c["equality"]
        ]
        t = c["timings"]
        lines += [
            "",
            f"### Time on the CPU: host path vs the device path on CPU tensors ({t['frame']}, "
            f"p50 of {t['runs']} interleaved runs, torch threads {t['torch_threads']})",
            "",
            "| interpolation | core.preprocess (cv2 + numpy) ms | device path on CPU tensors ms | ratio |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {v['host_p50_ms']:.1f} | {v['device_path_on_cpu_p50_ms']:.1f} | {v['ratio']:.1f}× |"
            for k, v in t["modes"].items()
        ]
        lines += [
            "",
            "On the CPU the host path stays the default (`--preprocess auto` picks the device stage only on "
            "a GPU); `--preprocess device` runs the device stage on CPU tensors (the CPU tests do).",
        ]
        o = c.get("ort_cpu_overhead")
        if o:
            lines += [
                "",
                "### onnxruntime CPU pipeline overhead (benchmarks/pipeline_overhead.py)",
                "",
                f"{o['model']}, `{o['command']}` ({o['date']}): overhead at p50 "
                f"**{100 * o['overhead_p50']:+.1f} %** (goal ≤ 10 %), overlap ratio {o['overlap_ratio']:.3f}, "
                f"{o['fps']:.3f} FPS; pure infer p50 {o['pure_infer_ms']['p50']:.0f} ms, pipeline interval p50 "
                f"{o['pipeline_interval_ms']['p50']:.0f} ms; 1-min load {o['load_avg_1min']}. "
                "Details: pipeline_overhead.md.",
            ]
    else:
        lines += ["Not measured yet: `python benchmarks/gpu_runtime.py cpu`."]
    lines += ["", "## What ran where", ""] + where(data)
    return "\n".join(lines) + "\n"


def where(data: dict) -> list[str]:
    """Which figures ran on which machine, and what has not run anywhere yet."""
    c, g = data.get("cpu"), data.get("gpu")
    out = []
    if c:
        out.append(
            f"- CPU section: {c['environment'].get('cpu')}, {c['date']}, no GPU. The equality of the device "
            "preprocessing with core.preprocess / OpenCV is also asserted by the test suite on CPU tensors "
            "(tests/runtime/test_device_preprocess.py, test_device_stage.py), and on CUDA tensors where a GPU "
            "is present (the same tests, marked `gpu`)."
        )
    if g and g["card"].startswith("none"):
        out.append(
            f"- GPU section: a SMOKE run on the CPU ({g['date']}): it checks the script, its figures are not "
            "GPU figures."
        )
    elif g:
        out.append(f"- GPU section: {g['card']}, {g['date']}, by benchmarks/gpu_check.sh.")
    else:
        out.append(
            "- GPU section: **pending** — nothing in this report ran on a GPU. The torch device stage "
            "(CUDA streams, pinned slots, CUDA graphs) and the CUDA tests have not run yet; "
            "`bash benchmarks/gpu_check.sh` runs both."
        )
    trt = any((m.get("trt") or {}).get("backend_only") for m in (g or {}).get("models", {}).values())
    if not trt:
        out.append(
            "- TensorRT: never ran (not installable on the machines this report was written on); the TensorRT "
            "stage is checked against a test double of tensorrt / cuda-python only."
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["gpu", "cpu", "render"])
    ap.add_argument("--out", type=Path, default=REPORTS)
    ap.add_argument("--smoke", action="store_true", help="gpu part on the CPU with tiny sizes (checks the script)")
    ap.add_argument("--runs", type=int, default=10, help="cpu part: timed runs per interpolation")
    ap.add_argument(
        "--backends",
        nargs="*",
        default=["torch", "ort", "trt"],
        choices=["torch", "ort", "trt"],
        help="gpu part: which backends (ort and trt only where installed)",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.part == "gpu":
        part_gpu(args.out, args.smoke, args.backends)
    elif args.part == "cpu":
        part_cpu(args.out, args.runs)
    else:
        data = json.loads((args.out / f"{NAME}.json").read_text())
        (args.out / f"{NAME}.md").write_text(render(data))
    log(f"{args.part}: {time.perf_counter() - t0:.0f} s; report {args.out / (NAME + '.md')}")


if __name__ == "__main__":
    main()
