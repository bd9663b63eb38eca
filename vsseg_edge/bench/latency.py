"""Latency harness: compute-only and end-to-end timings of one backend on a fixed list of frames.

Two figures per backend, both measured in this process, one frame at a time (batch 1), after warm-up:

- compute-only: `backend.infer(batch)` on a batch already prepared by `core.preprocess` (what the backend's
  own call costs: for ORT the session run, for torch the forward pass with its on-device argmax and the copy
  of the labels to the host, for TensorRT H2D copy + execute + D2H copy);
- end-to-end: `preprocess_batch` + `infer` + `to_labels` + `labels_to_frame_size`, from the BGR frame as
  decoded to a label map at the frame's size (decoding the image file is NOT included: every entry sees
  the same frames already in memory).

numpy only at import time; the backend brings its own libraries.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..core.errors import VssegError
from ..core.preprocess import labels_to_frame_size, preprocess_batch

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class TimingConfig:
    """How many timed runs and warm-up runs each figure gets (runs cycle over the bench frames)."""

    runs: int = 50
    warmup: int = 10

    def __post_init__(self):
        if self.runs < 1:
            raise VssegError(f"--runs {self.runs}: need at least 1 timed run")
        if self.warmup < 0:
            raise VssegError(f"--warmup {self.warmup}: must be 0 or more")


def latency_stats(ms: Sequence[float]) -> dict:
    """p50/p90/p99/mean/min/max in milliseconds and FPS = 1000 / mean (frames per second, one at a time)."""
    arr = np.asarray(ms, np.float64)
    if arr.size == 0:
        raise ValueError("no timings")
    out = {f"p{p}_ms": round(float(np.percentile(arr, p)), 4) for p in PERCENTILES}
    mean = float(arr.mean())
    out.update(mean_ms=round(mean, 4), min_ms=round(float(arr.min()), 4), max_ms=round(float(arr.max()), 4),
               fps=round(1000.0 / mean, 3) if mean > 0 else None, runs=int(arr.size))
    return out


def time_calls(fn: Callable[[int], object], runs: int, warmup: int) -> list[float]:
    """Call `fn(i)` `warmup` times untimed, then `runs` times timed each with perf_counter; return ms."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def end_to_end(backend, frame_bgr: np.ndarray) -> np.ndarray:
    """The whole per-frame path: BGR frame → uint8 label map at the frame's size (what a user's loop does)."""
    batch = preprocess_batch([frame_bgr], backend.preprocess_spec)
    labels = backend.to_labels(backend.infer(batch))[0]
    return labels_to_frame_size(labels, frame_bgr.shape[:2])


def end_to_end_stages(backend, frame_bgr: np.ndarray) -> tuple[float, float, float]:
    """`end_to_end` with each stage timed: (preprocess, infer, postprocess) in ms."""
    t0 = time.perf_counter()
    batch = preprocess_batch([frame_bgr], backend.preprocess_spec)
    t1 = time.perf_counter()
    out = backend.infer(batch)
    t2 = time.perf_counter()
    labels_to_frame_size(backend.to_labels(out)[0], frame_bgr.shape[:2])
    t3 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3


def stage_breakdown(backend, frames: Sequence[np.ndarray], runs: int) -> dict:
    """p50 of each end-to-end stage over `runs` extra frames (a separate pass, so the total stays untouched)."""
    per = np.asarray([end_to_end_stages(backend, frames[i % len(frames)]) for i in range(runs)])
    return {name: round(float(np.percentile(per[:, k], 50)), 4)
            for k, name in enumerate(("preprocess_p50_ms", "infer_p50_ms", "postprocess_p50_ms"))}


def measure_latency(backend, frames: Sequence[np.ndarray], timing: TimingConfig) -> dict:
    """Compute-only and end-to-end timings of `backend` over `frames` (cycled), batch 1, after warm-up."""
    if not frames:
        raise VssegError("bench: no frames to time (the dataset split is empty)")
    spec = backend.preprocess_spec
    batches = [preprocess_batch([f], spec) for f in frames]
    compute = time_calls(lambda i: backend.infer(batches[i % len(batches)]), timing.runs, timing.warmup)
    e2e = time_calls(lambda i: end_to_end(backend, frames[i % len(frames)]), timing.runs, timing.warmup)
    h, w = frames[0].shape[:2]
    return {
        "compute": latency_stats(compute),
        "end_to_end": latency_stats(e2e),
        "end_to_end_stages": stage_breakdown(backend, frames, min(timing.runs, 20)),
        "runs": timing.runs,
        "warmup": timing.warmup,
        "batch": 1,
        "frames": len(frames),
        "frame_size": [int(h), int(w)],
        "input_size": [spec.height, spec.width],
        "input_dtype": spec.dtype,
        "input_layout": spec.layout,
    }


def predict_frames(backend, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """End-to-end label maps of `frames` (for the argmax agreement between entries)."""
    return [end_to_end(backend, f) for f in frames]


def argmax_agreement(preds: Sequence[np.ndarray], ref_preds: Sequence[np.ndarray]) -> float:
    """Percent of pixels where two lists of label maps (same frames, same sizes) give the same class."""
    if len(preds) != len(ref_preds) or not preds:
        raise ValueError("agreement needs two non-empty lists of predictions of the same frames")
    same = sum(int(np.count_nonzero(a == b)) for a, b in zip(preds, ref_preds))
    total = sum(a.size for a in preds)
    return round(100.0 * same / total, 4)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux; 'model name', or 'Hardware'/'Model' on ARM)."""
    try:
        with open("/proc/cpuinfo") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    for key in ("model name", "Hardware", "Model", "cpu model"):
        for line in lines:
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def library_versions() -> dict:
    """Installed versions of the libraries that shape the figures, read from package metadata (no import)."""
    from importlib import metadata

    out = {}
    for name, dists in (("onnxruntime", ("onnxruntime", "onnxruntime-gpu")), ("torch", ("torch",)),
                        ("numpy", ("numpy",)),
                        ("opencv", ("opencv-python-headless", "opencv-python", "opencv-contrib-python")),
                        ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"))):
        out[name] = None
        for dist in dists:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs `nvidia-smi` sees (empty when there is none or no driver); no torch import."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        res = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in res.stdout.splitlines() if line.strip()] if res.returncode == 0 else []


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (Unix), so a report shows whether other processes shared the CPU."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment() -> dict:
    """Where the figures were measured: CPU model and cores, GPUs, OS, Python, library versions."""
    from .. import __version__

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "gpus": gpu_names(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "vsseg_edge": __version__,
        "libraries": library_versions(),
    }
