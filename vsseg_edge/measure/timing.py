"""Latency of one runner on a fixed list of frames: compute-only and end-to-end, batch 1, after warm-up.

- compute-only: `runner.infer(batch)` on a batch already prepared by the one preprocessing (what the
  runner's own call costs: for onnxruntime the session run, for torch the forward pass with its on-device
  argmax and the copy of the labels to the host, for TensorRT H2D copy + execute + D2H copy);
- end-to-end: `prediction.end_to_end`, from the BGR frame as decoded to a label map at the frame's size
  (decoding the image file is NOT included: every entry sees the same frames already in memory).

FPS = 1000 / mean latency (frames per second, one at a time). Every function takes the clock it reads
(`time.perf_counter` by default), so tests drive the arithmetic with a fake clock instead of sleeping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..core.errors import VssegError
from ..core.preprocess import preprocess_batch
from .prediction import STAGES, end_to_end

PERCENTILES = (50, 90, 99)
Clock = Callable[[], float]


@dataclass(frozen=True)
class TimingConfig:
    """How many timed runs and warm-up runs each figure gets (runs cycle over the frames)."""

    runs: int = 50
    warmup: int = 10

    def __post_init__(self):
        if self.runs < 1:
            raise VssegError(f"--runs {self.runs}: need at least 1 timed run")
        if self.warmup < 0:
            raise VssegError(f"--warmup {self.warmup}: must be 0 or more")


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles, mean, min and max of a list of timings (ms), and FPS = 1000 / mean."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    fps: float | None
    runs: int

    @classmethod
    def of(cls, ms: Sequence[float]) -> LatencyStats:
        arr = np.asarray(ms, np.float64)
        if arr.size == 0:
            raise ValueError("no timings")
        p = {q: round(float(np.percentile(arr, q)), 4) for q in PERCENTILES}
        mean = float(arr.mean())
        return cls(
            p[50],
            p[90],
            p[99],
            round(mean, 4),
            round(float(arr.min()), 4),
            round(float(arr.max()), 4),
            round(1000.0 / mean, 3) if mean > 0 else None,
            int(arr.size),
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def time_calls(fn: Callable[[int], object], runs: int, warmup: int, clock: Clock = time.perf_counter) -> list[float]:
    """Call `fn(i)` `warmup` times untimed, then `runs` times, each timed with `clock`; return milliseconds."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(runs):
        t0 = clock()
        fn(i)
        times.append((clock() - t0) * 1e3)
    return times


@dataclass(frozen=True)
class Latency:
    """Compute-only and end-to-end figures of one runner, with the per-stage p50s of the end-to-end path."""

    compute: LatencyStats
    end_to_end: LatencyStats
    stages_p50_ms: dict
    runs: int
    warmup: int
    frames: int
    frame_size: tuple[int, int]
    input_size: tuple[int, int]
    input_dtype: str
    input_layout: str
    batch: int = 1

    def to_dict(self) -> dict:
        return {
            "compute": self.compute.to_dict(),
            "end_to_end": self.end_to_end.to_dict(),
            "end_to_end_stages": {f"{k}_p50_ms": v for k, v in self.stages_p50_ms.items()},
            "runs": self.runs,
            "warmup": self.warmup,
            "batch": self.batch,
            "frames": self.frames,
            "frame_size": list(self.frame_size),
            "input_size": list(self.input_size),
            "input_dtype": self.input_dtype,
            "input_layout": self.input_layout,
        }


def stage_breakdown(runner, frames: Sequence[np.ndarray], runs: int, clock: Clock = time.perf_counter) -> dict:
    """p50 of each end-to-end stage over `runs` extra frames (a separate pass, so the total stays untouched)."""
    stages: list = []
    for i in range(runs):
        end_to_end(runner, frames[i % len(frames)], stages=stages, clock=clock)
    per = np.asarray(stages)
    return {name: round(float(np.percentile(per[:, k], 50)), 4) for k, name in enumerate(STAGES)}


def measure_latency(
    runner, frames: Sequence[np.ndarray], timing: TimingConfig, clock: Clock = time.perf_counter
) -> Latency:
    """Compute-only and end-to-end timings of `runner` over `frames` (cycled), batch 1, after warm-up."""
    if not frames:
        raise VssegError("bench: no frames to time (the dataset split is empty)")
    spec = runner.preprocess_spec
    batches = [preprocess_batch([f], spec) for f in frames]
    compute = time_calls(lambda i: runner.infer(batches[i % len(batches)]), timing.runs, timing.warmup, clock)
    e2e = time_calls(lambda i: end_to_end(runner, frames[i % len(frames)]), timing.runs, timing.warmup, clock)
    h, w = frames[0].shape[:2]
    return Latency(
        LatencyStats.of(compute),
        LatencyStats.of(e2e),
        stage_breakdown(runner, frames, min(timing.runs, 20), clock),
        timing.runs,
        timing.warmup,
        len(frames),
        (int(h), int(w)),
        (spec.height, spec.width),
        spec.dtype,
        spec.layout,
    )
