"""Per-frame timings of the runtime pipeline: JSONL records and the p50/p99 summary printed at the end.

Each processed frame gives one record with the time of every stage in milliseconds (capture, upload,
preprocess, infer, postprocess, download, render), its latency (end of capture → end of rendering) and the
running drop and decode-failure counts. The summary gives p50/p99 per stage and the throughput measured from the
intervals between finished frames, so that "FPS" is what a viewer sees, not 1/infer time.

On the host path the stages are wall-clock times of the thread doing them (upload and download are part of
infer there, and 0). A device stage times its work on the device with CUDA events: upload = the copy into the
pinned buffer plus the host-to-device copy, preprocess / infer / postprocess (label resize, overlay) on the
device, download = the device-to-host copy; render (sinks, and the overlay on the host path) is wall clock.
Device stages of consecutive frames overlap, so their sum is the latency share, not the frame interval.
"""

from __future__ import annotations

import contextlib
import json
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STAGES = ("capture_ms", "upload_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "download_ms", "render_ms")


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
    upload_ms: float = 0.0  # device stages only
    download_ms: float = 0.0

    def set_stages(self, times: dict[str, float]) -> None:
        """Take a stage's times (`<stage>_ms`); `overlay_ms` (the host overlay) counts as render time."""
        for name, ms in times.items():
            name = "render_ms" if name == "overlay_ms" else name
            setattr(self, name, getattr(self, name) + float(ms))

    def record(self, drops: int, decode_failures: int) -> dict:
        rec = {"frame": self.index}
        for name in STAGES:
            rec[name] = round(getattr(self, name), 3)
        rec["latency_ms"] = round((self.t_done - self.t_captured) * 1e3, 3)
        rec["t_done"] = round(self.t_done, 6)
        rec["drops"] = int(drops)
        rec["decode_failures"] = int(decode_failures)
        return rec


_DEVICE_ONLY = ("upload_ms", "download_ms")  # always 0 on the host path: not printed there
FIELDS = ("frame",) + STAGES + ("latency_ms", "t_done", "drops", "decode_failures")
_INTS = ("frame", "drops", "decode_failures")


class Records(Sequence):
    """Every frame's record, stored as one float64 column per field: ~90 bytes a frame, ~500 as a dict.

    A day of a 30 FPS camera keeps ~230 MB instead of ~1.3 GB; reading an item (or a slice) rebuilds
    the record dict. `column(name)` gives a field of every frame as an array, for the summary.
    """

    def __init__(self):
        self._cols = {name: array("d") for name in FIELDS}

    def append(self, rec: dict) -> None:
        for name, col in self._cols.items():
            col.append(rec[name])

    def column(self, name: str) -> np.ndarray:
        """A copy (a view would export the buffer and make the next `append` fail)."""
        return np.array(self._cols[name], np.float64)

    def __len__(self) -> int:
        return len(self._cols["frame"])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return {name: int(col[i]) if name in _INTS else col[i] for name, col in self._cols.items()}


def _check_writable(path: Path) -> None:
    """Refuse, before the run, a --stats path that is a folder or cannot be written (`fileio.check_output`)."""
    from ..core.fileio import check_output

    check_output(path, "--stats")


class StatsCollector:
    """Keeps every frame's figures (compactly) and streams the JSONL file as frames finish.

    With a path, each record is written when it is added (flushed every `flush_s` seconds) to a temporary
    file beside the target, renamed onto it at `close`: a long camera run holds ~90 bytes a frame, not
    its JSON, and any stop that reaches `close` leaves the complete file, never a half-written one.
    """

    def __init__(self, path: str | None = None, flush_s: float = 1.0):
        if path is not None:
            _check_writable(Path(path))
        self.path, self.flush_s = path, flush_s
        self.records = Records()
        self.t_start = time.perf_counter()
        self._stack = contextlib.ExitStack()
        self._fh = None
        self._failed = False
        self._t_flush = self.t_start

    def _file(self):
        if self._fh is None:
            from ..core.fileio import atomic_write

            self._fh = self._stack.enter_context(atomic_write(self.path, "w", flag="--stats"))
        return self._fh

    def add(self, rec: dict) -> None:
        self.records.append(rec)
        if self.path is None:
            return
        from ..core.fileio import write_errors

        try:
            with write_errors(self.path, "--stats"):
                fh = self._file()
                fh.write(json.dumps(rec) + "\n")
                now = time.perf_counter()
                if now - self._t_flush >= self.flush_s:
                    fh.flush()
                    self._t_flush = now
        except BaseException:
            self._failed = True
            raise

    def close(self) -> None:
        """Finish the JSONL file (an empty one when no frame finished). Safe to call more than once.

        After a failed write the temporary file is dropped, never renamed onto the target.
        """
        if self.path is not None:
            if not self._failed:
                self._file()
            self.path = None
        stack, self._stack = self._stack, contextlib.ExitStack()
        if self._failed:
            with contextlib.suppress(Exception):  # the failed write was reported where it happened
                stack.__exit__(RuntimeError, RuntimeError("stats not written"), None)
        else:
            stack.close()

    def summary(self, drops: int = 0, decode_failures: int = 0) -> dict:
        return summarize(self.records, drops=drops, decode_failures=decode_failures)


def _pct(values) -> dict:
    if len(values) == 0:
        return {"p50": None, "p99": None, "mean": None}
    arr = np.asarray(values, np.float64)
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "mean": round(float(arr.mean()), 3),
    }


def _column(records, name: str):
    return records.column(name) if isinstance(records, Records) else [r[name] for r in records]


def summarize(records: Sequence[dict], drops: int = 0, decode_failures: int = 0) -> dict:
    """p50/p99/mean per stage and of the latency, output frame interval and throughput (frames/s)."""
    out = {"frames": len(records), "drops": int(drops), "decode_failures": int(decode_failures)}
    for name in STAGES + ("latency_ms",):
        out[name] = _pct(_column(records, name))
    done = sorted(_column(records, "t_done"))
    intervals = list(np.diff(done) * 1e3) if len(done) > 1 else []
    out["interval_ms"] = _pct(intervals)
    out["fps"] = round((len(done) - 1) / (done[-1] - done[0]), 3) if len(done) > 1 and done[-1] > done[0] else None
    return out


def format_summary(s: dict) -> str:
    """Human-readable lines: one per stage with p50 / p99, then throughput and drop counts."""
    lines = [f"{'stage':<14}{'p50 ms':>10}{'p99 ms':>10}"]
    for name in STAGES + ("latency_ms", "interval_ms"):
        v = s[name]
        if v["p50"] is not None and (name not in _DEVICE_ONLY or v["p99"]):
            lines.append(f"{name.replace('_ms', ''):<14}{v['p50']:>10.2f}{v['p99']:>10.2f}")
    fps = f"{s['fps']:.2f}" if s.get("fps") else "n/a"
    lines.append(f"frames {s['frames']}  fps {fps}  drops {s['drops']}  decode failures {s['decode_failures']}")
    return "\n".join(lines)
