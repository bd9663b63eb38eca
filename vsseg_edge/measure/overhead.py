"""What the runtime pipeline costs on top of the backend: frame interval through `runtime.pipeline` against the
backend's own inference time, measured back to back on the same frames with the same runner.

    1. pure runner: every frame of the video decoded up front and preprocessed, then `runner.infer` timed alone;
    2. pipeline: `Pipeline(VideoFileSource, runner, [NullSink])` — capture (decode), preprocess + infer,
       postprocess (host argmax + resize to the frame) and render in their three threads;
    3. pure runner again (on a shared machine the two pure passes bracket the pipeline pass).

Figures (`PipelineOverhead`): overhead = pipeline frame interval p50 / pure infer p50 − 1, and the overlap
ratio fps × max(stage-thread p50), where the stage threads are capture, preprocess+infer and
postprocess+render: 1 when the pipeline runs at the pace of its slowest stage, not of their sum. The first
`skip` pipeline frames (filling the queues) are left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .timing import time_calls

STAGES = ("capture_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "render_ms")


def pure_infer_ms(runner, video: str | Path, warmup: int) -> list[float]:
    """`runner.infer` alone on every frame of `video` (decoded and preprocessed first), in ms."""
    from ..core.preprocess import preprocess
    from ..runtime.sources import VideoFileSource

    src = VideoFileSource(video).start()
    batches = []
    while (frame := src.get()) is not None:
        batches.append(preprocess(frame.image, runner.preprocess_spec))
    return time_calls(lambda i: runner.infer(batches[i]), len(batches), min(warmup, len(batches)))


def pipeline_records(runner, video: str | Path) -> dict:
    """One pass of the threaded pipeline over `video` with a null sink: its summary and per-frame records."""
    from ..runtime.pipeline import Pipeline
    from ..runtime.sinks import NullSink
    from ..runtime.sources import VideoFileSource

    result = Pipeline(VideoFileSource(video), runner, [NullSink()], handle_signals=False).run()
    return result.summary | {"records": result.records}


@dataclass(frozen=True)
class PipelineOverhead:
    """The pipeline's steady-state figures against the pure runner's (milliseconds unless named otherwise)."""

    pure_infer_ms: dict  # p50, p50_before, p50_after, p99
    pipeline_interval_ms: dict  # p50, p99
    pipeline_infer_ms_p50: float
    pipeline_latency_ms_p50: float
    stage_thread_p50_ms: dict  # capture, preprocess+infer, postprocess+render
    stage_p50_ms: dict
    stage_p99_ms: dict
    fps: float
    overhead_p50: float
    overlap_ratio: float
    frames_measured: int

    def to_dict(self) -> dict:
        return asdict(self)


def _p50(values) -> float:
    return float(np.percentile(values, 50))


def analyse(pure_before: list[float], pipe: dict, pure_after: list[float], skip: int) -> PipelineOverhead:
    """Steady-state figures from two pure passes and one pipeline pass (the first `skip` frames left out)."""
    recs = pipe["records"][skip:]
    pure = pure_before + pure_after
    intervals = np.diff([r["t_done"] for r in recs]) * 1e3
    threads = {
        "capture": _p50([r["capture_ms"] for r in recs]),
        "preprocess+infer": _p50([r["preprocess_ms"] + r["infer_ms"] for r in recs]),
        "postprocess+render": _p50([r["postprocess_ms"] + r["render_ms"] for r in recs]),
    }
    fps = (len(recs) - 1) / (recs[-1]["t_done"] - recs[0]["t_done"])
    return PipelineOverhead(
        pure_infer_ms={
            "p50": _p50(pure),
            "p50_before": _p50(pure_before),
            "p50_after": _p50(pure_after),
            "p99": float(np.percentile(pure, 99)),
        },
        pipeline_interval_ms={"p50": _p50(intervals), "p99": float(np.percentile(intervals, 99))},
        pipeline_infer_ms_p50=_p50([r["infer_ms"] for r in recs]),
        pipeline_latency_ms_p50=_p50([r["latency_ms"] for r in recs]),
        stage_thread_p50_ms=threads,
        stage_p50_ms={k: pipe[k]["p50"] for k in STAGES},
        stage_p99_ms={k: pipe[k]["p99"] for k in STAGES},
        fps=fps,
        overhead_p50=_p50(intervals) / _p50(pure) - 1.0,
        overlap_ratio=fps * max(threads.values()) / 1e3,
        frames_measured=len(recs),
    )


def synthetic_video(path: str | Path, count: int, hw: tuple[int, int], fps: float = 30.0) -> Path:
    """`count` deterministic synthetic frames (`export.parity.synthetic_frames`) of size `hw` in an mp4v video:
    frames to measure on when the content does not matter (speed)."""
    import cv2

    from ..core.errors import VssegError
    from ..export.parity import synthetic_frames

    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (hw[1], hw[0]))
    if not writer.isOpened():
        raise VssegError(f"{path}: OpenCV cannot write an mp4v video here")
    for frame in synthetic_frames(count, hw):
        writer.write(frame)
    writer.release()
    return path


def measure_overhead(runner, video: str | Path, *, warmup: int = 2, skip: int = 2) -> PipelineOverhead:
    """Pure runner, pipeline, pure runner again, on every frame of `video`; the figures of `analyse`."""
    before = pure_infer_ms(runner, video, warmup)
    pipe = pipeline_records(runner, video)
    after = pure_infer_ms(runner, video, 0)
    return analyse(before, pipe, after, skip)
