"""`run --frame-json FILE|-`: one JSON line per frame with what was seen (class pixel shares) and the timings.

    {"frame": 12, "name": "frame_012", "t": 1718000000.123, "height": 720, "width": 1280,
     "shares": {"road": 0.412, "car": 0.087, ...}, "ignored": 0.0,
     "capture_ms": 1.2, "preprocess_ms": 0.8, "infer_ms": 6.1, "postprocess_ms": 0.9}

`shares` lists the classes present in the frame's label map (fraction of its pixels, 4 decimals, largest
first), `ignored` the fraction of pixels with no class (ignore index or ids beyond the model's classes).
The timings are those known when the line is written (the output stage's rendering comes after;
`--stats` has every stage). `t` is the wall-clock time of capture (seconds since the epoch), so lines
from several cameras or machines can be lined up.

To a file, lines are written as frames finish into a temporary file renamed onto the target at the end
(as `--stats`): a stopped run leaves a complete file, never half a line. To `-` (stdout), each line is
flushed at once, for a consumer reading the stream (`vsseg-edge run … --frame-json - | jq`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from .sinks import Sink

TIMINGS = ("capture_ms", "preprocess_ms", "infer_ms", "postprocess_ms")


def class_shares(labels: np.ndarray, classes: list[str]) -> tuple[dict[str, float], float]:
    """({class name: fraction of pixels}, fraction without a class) of a uint8 label map."""
    counts = np.bincount(labels.ravel(), minlength=256).astype(np.float64)
    total = max(float(labels.size), 1.0)
    n = len(classes)
    shares = {classes[i]: round(counts[i] / total, 4) for i in np.argsort(-counts[:n], kind="stable") if counts[i] > 0}
    return shares, round(float(counts[n:].sum()) / total, 4)


class FrameJsonSink(Sink):
    """Per-frame JSON lines (see the module docstring); `bind(label_set)` gives the class names."""

    def __init__(self, target: str | Path):
        self.stdout = str(target) == "-"
        self.path = None if self.stdout else Path(target)
        if self.path is not None:
            from ..core.fileio import check_output

            check_output(self.path, "--frame-json")  # a file name, in a folder that takes a new file
        self.classes: list[str] = [str(i) for i in range(255)]
        self.frames = 0
        self._stack = contextlib.ExitStack()
        self._fh = None
        # perf_counter → wall clock, fixed once so that the lines' times keep their spacing
        self._epoch = time.time() - time.perf_counter()

    def bind(self, label_set) -> None:
        self.classes = list(label_set.classes)

    def _file(self):
        if self._fh is None:
            if self.stdout:
                self._fh = sys.stdout
            else:
                from ..core.fileio import atomic_write

                self._fh = self._stack.enter_context(atomic_write(self.path, "w", flag="--frame-json"))
        return self._fh

    def record(self, frame, labels: np.ndarray) -> dict:
        shares, ignored = class_shares(labels, self.classes)
        rec = {
            "frame": int(frame.index),
            "name": frame.name,
            "t": round(self._epoch + frame.t_captured, 6),
            "height": int(labels.shape[0]),
            "width": int(labels.shape[1]),
            "shares": shares,
            "ignored": ignored,
        }
        times = getattr(frame, "times", None)
        for key in TIMINGS:
            value = getattr(times, key, None) if times is not None else None
            if key == "capture_ms" and value is None:
                value = frame.capture_ms
            if value is not None:
                rec[key] = round(float(value), 3)
        return rec

    def write(self, frame, labels, vis, hud) -> bool:
        fh = self._file()
        fh.write(json.dumps(self.record(frame, labels)) + "\n")
        if self.stdout:
            fh.flush()
        self.frames += 1
        return True

    def close(self) -> None:
        """Finish the file (an empty one when no frame came); stdout is only flushed."""
        if self.stdout:
            sys.stdout.flush()
            return
        if self.path is not None:
            self._file()
            self.path = None
        self._stack.close()
