"""Per-frame timings of the runtime pipeline: JSONL records and the p50/p99 summary printed at the end.

Each processed frame gives one record with the time of every stage in milliseconds (capture, preprocess,
infer, postprocess, render), its latency (end of capture → end of rendering) and the running drop and
decode-failure counts. The summary gives p50/p99 per stage and the throughput measured from the
intervals between finished frames, so that "FPS" is what a viewer sees, not 1/infer time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

STAGES = ("capture_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "render_ms")


@dataclass
class FrameTimes:
    """Timings of one frame as it moves through the pipeline (perf_counter seconds and stage milliseconds)."""

    index: int
    t_captured: float
    capture_ms: float
    preprocess_ms: float = 0.0
    infer_ms: float = 0.0
    postprocess_ms: float = 0.0
    render_ms: float = 0.0
    t_done: float = 0.0

    def record(self, drops: int, decode_failures: int) -> dict:
        rec = {"frame": self.index}
        for name in STAGES:
            rec[name] = round(getattr(self, name), 3)
        rec["latency_ms"] = round((self.t_done - self.t_captured) * 1e3, 3)
        rec["t_done"] = round(self.t_done, 6)
        rec["drops"] = int(drops)
        rec["decode_failures"] = int(decode_failures)
        return rec


@dataclass
class StatsCollector:
    """Keeps every frame's record; writes them as JSONL when given a path (atomically, on close)."""

    path: str | None = None
    records: list[dict] = field(default_factory=list)
    t_start: float = field(default_factory=time.perf_counter)

    def add(self, rec: dict) -> None:
        self.records.append(rec)

    def close(self) -> None:
        """Write the JSONL file (all records, one per line). Safe to call once at shutdown."""
        if self.path is None:
            return
        from ..core.fileio import atomic_write

        with atomic_write(self.path, "w") as fh:
            for rec in self.records:
                fh.write(json.dumps(rec) + "\n")

    def summary(self, drops: int = 0, decode_failures: int = 0) -> dict:
        return summarize(self.records, drops=drops, decode_failures=decode_failures)


def _pct(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p99": None, "mean": None}
    arr = np.asarray(values, np.float64)
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p99": round(float(np.percentile(arr, 99)), 3),
            "mean": round(float(arr.mean()), 3)}


def summarize(records: list[dict], drops: int = 0, decode_failures: int = 0) -> dict:
    """p50/p99/mean per stage and of the latency, output frame interval and throughput (frames/s)."""
    out = {"frames": len(records), "drops": int(drops), "decode_failures": int(decode_failures)}
    for name in STAGES + ("latency_ms",):
        out[name] = _pct([r[name] for r in records])
    done = sorted(r["t_done"] for r in records)
    intervals = list(np.diff(done) * 1e3) if len(done) > 1 else []
    out["interval_ms"] = _pct(intervals)
    out["fps"] = round((len(done) - 1) / (done[-1] - done[0]), 3) if len(done) > 1 and done[-1] > done[0] else None
    return out


def format_summary(s: dict) -> str:
    """Human-readable lines: one per stage with p50 / p99, then throughput and drop counts."""
    lines = [f"{'stage':<14}{'p50 ms':>10}{'p99 ms':>10}"]
    for name in STAGES + ("latency_ms", "interval_ms"):
        v = s[name]
        if v["p50"] is not None:
            lines.append(f"{name.replace('_ms', ''):<14}{v['p50']:>10.2f}{v['p99']:>10.2f}")
    fps = f"{s['fps']:.2f}" if s.get("fps") else "n/a"
    lines.append(f"frames {s['frames']}  fps {fps}  drops {s['drops']}  decode failures {s['decode_failures']}")
    return "\n".join(lines)
