"""Live sources: latest-frame policy and drop counting, reconnect with backoff, stalls, Ctrl-C, missing camera.

The live source here is SIMULATED: a capture-like object producing frames at a fixed rate, handed to
`LiveSource` through its `opener` (the same hook the real cv2.VideoCapture goes through).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.runtime.conftest import make_frames, read_video
from vsseg_edge.core.errors import VssegError
from vsseg_edge.runtime.backends import open_backend
from vsseg_edge.runtime.pipeline import Pipeline
from vsseg_edge.runtime.sinks import VideoSink
from vsseg_edge.runtime.sources import LiveSource, open_source


class SimulatedCamera:
    """Gives `n` frames at `fps` (then fails like an unplugged camera); `hang` makes read() block (a stall)."""

    def __init__(self, n: int = 10_000, fps: float = 200.0, hang: float = 0.0):
        self.frames = make_frames(8)
        self.n, self.period, self.hang = n, 1.0 / fps, hang
        self.produced, self.released = 0, False
        self._next = time.perf_counter()

    def isOpened(self):
        return True

    def read(self):
        if self.hang:
            time.sleep(self.hang)
            return False, None
        if self.produced >= self.n:
            return False, None
        self._next += self.period
        time.sleep(max(0.0, self._next - time.perf_counter()))
        self.produced += 1
        return True, self.frames[self.produced % len(self.frames)].copy()

    def release(self):
        self.released = True


class SlowBackend:
    """Wraps a real backend and sleeps before each inference: a backend much slower than the camera."""

    def __init__(self, backend, delay: float):
        self._be, self.delay = backend, delay

    def __getattr__(self, name):
        return getattr(self._be, name)

    def infer(self, batch):
        time.sleep(self.delay)
        return self._be.infer(batch)


def test_slow_backend_drops_stale_frames_and_counts_them(onnx_model):
    cam = SimulatedCamera(fps=200.0)
    src = LiveSource(lambda: cam, "simulated camera", stall_timeout=5.0)
    with open_backend(onnx_model, threads=1) as be:
        result = Pipeline(src, SlowBackend(be, 0.05), [], max_frames=8, handle_signals=False).run()
    recs = result.records
    assert result.frames == 8 and result.stopped_by == "max-frames"
    assert result.summary["drops"] >= 8 * 3  # ~10 camera frames per 50 ms inference
    # every camera frame is either processed, dropped, or (at most a couple) still in flight at the stop
    assert cam.produced - 3 <= result.frames + result.summary["drops"] <= cam.produced
    indices = [r["frame"] for r in recs]
    assert indices == sorted(indices) and max(np.diff(indices)) > 1  # frames were skipped, in order
    # never behind the world: a shown frame is about one inference old; with a frame queue instead of the
    # latest-frame slot the latency would grow by ~45 ms per frame (median ~200 ms here). The median ignores a
    # single stall of this shared machine (GC, preemption).
    assert float(np.median([r["latency_ms"] for r in recs])) < 2 * 50


def test_reconnects_with_backoff_then_gives_up_without_hanging(capsys):
    opened = []

    def opener():
        if len(opened) >= 2:  # the camera is gone for good after one successful reconnect
            raise VssegError("camera 5: not found")
        opened.append(SimulatedCamera(n=3, fps=500.0))
        return opened[-1]

    src = LiveSource(opener, "camera 5", max_retries=3, retry_delay=0.01, stall_timeout=5.0).start()
    got, t0 = [], time.perf_counter()
    while (f := src.get(timeout=1.0)) is not None:
        got.append(f.index)
    assert time.perf_counter() - t0 < 3.0
    assert len(opened) == 2 and all(c.released for c in opened)
    assert src.error == "camera 5: lost; gave up after 3 reconnect attempts"
    assert "reconnect 1/3" in capsys.readouterr().err
    assert 1 <= len(got) <= 6


def test_stalled_stream_ends_with_a_message():
    src = LiveSource(lambda: SimulatedCamera(hang=30.0), "rtsp://cam", stall_timeout=0.3).start()
    t0 = time.perf_counter()
    assert src.get(timeout=5.0) is None
    assert time.perf_counter() - t0 < 2.0
    assert src.error == "rtsp://cam: no frame for 0.3s (stream stalled); stopping"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_finalises_the_video(tmp_path, onnx_model, signum):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    src = LiveSource(lambda: SimulatedCamera(fps=100.0), "simulated camera")
    timer = threading.Timer(0.6, os.kill, (os.getpid(), signum))
    with open_backend(onnx_model, threads=1) as be:
        timer.start()
        result = Pipeline(src, be, [VideoSink(tmp_path / "live.mp4", fps=10)]).run()
    assert result.stopped_by == "signal" and result.frames > 0
    assert len(read_video(tmp_path / "live.mp4")) == result.frames
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers were restored


def test_missing_camera_is_a_one_line_error(onnx_model):
    with pytest.raises(VssegError, match=r"^--camera 97: no camera at index 97"):
        open_source(camera=97)
    proc = subprocess.run([sys.executable, "-m", "vsseg_edge.cli", "run", str(onnx_model), "--camera", "97"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --camera 97: no camera at index 97")
    assert "Traceback" not in proc.stderr
