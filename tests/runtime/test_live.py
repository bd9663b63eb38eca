"""Live sources: latest-frame policy and drop counting, reconnect with backoff, stalls, Ctrl-C, missing camera.

The live source here is SIMULATED: a capture-like object producing frames at a fixed rate, handed to
`LiveSource` through its `opener` (the same hook the real cv2.VideoCapture goes through).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.runtime.conftest import make_frames, read_video, records_streamed, wait_for
from vsseg_edge.core.errors import VssegError
from vsseg_edge.runtime.backends import open_backend
from vsseg_edge.runtime.pipeline import Pipeline
from vsseg_edge.runtime.sinks import Sink, VideoSink, measured_fps
from vsseg_edge.runtime.sources import LiveSource, open_source


class SimulatedCamera:
    """Gives `n` frames at `fps` (then fails like an unplugged camera); `hang` makes read() block (a stall)."""

    def __init__(self, n: int = 10_000, fps: float = 200.0, hang: float = 0.0, nominal_fps: float = 0.0):
        self.frames = make_frames(8)
        self.n, self.period, self.hang, self.nominal_fps = n, 1.0 / fps, hang, nominal_fps
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

    def get(self, prop):
        """Like cv2.VideoCapture.get: the driver's nominal rate for CAP_PROP_FPS (often 0 or wrong)."""
        import cv2

        return self.nominal_fps if prop == cv2.CAP_PROP_FPS else 0.0


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

    delays = []  # the backoff, waited out by recording it instead of sleeping
    src = LiveSource(
        opener, "camera 5", max_retries=3, retry_delay=0.01, stall_timeout=5.0, wait=lambda d: delays.append(d) or False
    ).start()
    got = []
    while (f := src.get(timeout=5.0)) is not None:
        got.append(f.index)
    assert delays == [0.01, 0.01, 0.02, 0.04]  # one reconnect that worked, then three that did not, doubling
    assert len(opened) == 2 and all(c.released for c in opened)
    assert src.error == "camera 5: lost; gave up after 3 reconnect attempts"
    assert "reconnect 1/3" in capsys.readouterr().err
    assert 1 <= len(got) <= 6


def test_stalled_stream_ends_with_a_message():
    clock = iter(range(0, 10_000, 1))  # one second passes at every reading: no frame for 0.3 s at once
    src = LiveSource(
        lambda: SimulatedCamera(hang=30.0), "rtsp://cam", stall_timeout=0.3, clock=lambda: float(next(clock))
    ).start()
    assert src.get(timeout=60.0) is None
    assert src.error == "rtsp://cam: no frame for 0.3s (stream stalled); stopping"


class SignalAfter(Sink):
    """Sends `signum` to this process when the `n`-th frame is written: the pipeline runs by then, its handlers
    installed, however slow the machine (a timer could fire before them, and kill the test run)."""

    def __init__(self, n: int, signum: int):
        self.n, self.signum, self.written = n, signum, 0

    def write(self, frame, labels, vis, hud) -> bool:
        self.written += 1
        if self.written == self.n:
            os.kill(os.getpid(), self.signum)
        return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_finalises_the_video(tmp_path, onnx_model, signum):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    src = LiveSource(lambda: SimulatedCamera(fps=100.0), "simulated camera")
    with open_backend(onnx_model, threads=1) as be:  # the signal comes once frames went through (not a timer)
        result = Pipeline(src, be, [VideoSink(tmp_path / "live.mp4", fps=10), SignalAfter(3, signum)]).run()
    assert result.stopped_by == "signal" and result.frames >= 3
    assert len(read_video(tmp_path / "live.mp4")) == result.frames
    assert {s: signal.getsignal(s) for s in before} == before  # the handlers were restored


def test_missing_camera_is_a_one_line_error(onnx_model):
    with pytest.raises(VssegError, match=r"^--camera 97: no camera at index 97"):
        open_source(camera=97)
    proc = subprocess.run(
        [sys.executable, "-m", "vsseg_edge.cli", "run", str(onnx_model), "--camera", "97"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --camera 97: no camera at index 97")
    assert "Traceback" not in proc.stderr


def world_fps(records: list[dict]) -> float:
    """Processed frames per second of capture time (the rate a recording must play at to be real time)."""
    t_captured = [r["t_done"] - r["latency_ms"] / 1e3 for r in records]
    return (len(t_captured) - 1) / (t_captured[-1] - t_captured[0])


def video_fps(path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return fps


def test_live_recording_uses_the_measured_rate_not_the_nominal_one(tmp_path, onnx_model, capsys):
    cam = SimulatedCamera(fps=25.0, nominal_fps=60.0)  # the driver claims 60, frames come at 25
    src = LiveSource(lambda: cam, "simulated camera")
    assert src.fps == 60.0
    with open_backend(onnx_model, threads=1) as be:  # ~1 ms a frame: every camera frame is processed
        result = Pipeline(src, be, [VideoSink(tmp_path / "live.mp4")], max_frames=20, handle_signals=False).run()
    assert result.frames == 20 and len(read_video(tmp_path / "live.mp4")) == 20
    fps = video_fps(tmp_path / "live.mp4")
    assert 18.0 < fps < 27.0  # 25 when every frame is kept (a loaded machine may drop one or two)
    assert fps == pytest.approx(world_fps(result.records[:12]), rel=0.1)
    assert "live source, recording at" in capsys.readouterr().err


def test_live_recording_behind_a_slow_backend_plays_at_real_speed(tmp_path, onnx_model):
    """Latest-frame capture keeps ~1 frame in 6 of a 100 FPS camera: the video's rate is the kept frames'."""
    src = LiveSource(lambda: SimulatedCamera(fps=100.0, nominal_fps=100.0), "simulated camera")
    with open_backend(onnx_model, threads=1) as be:
        result = Pipeline(
            src,
            SlowBackend(be, 0.06),
            [VideoSink(tmp_path / "slow.mp4", probe_frames=6)],
            max_frames=12,
            handle_signals=False,
        ).run()
    fps = video_fps(tmp_path / "slow.mp4")
    assert fps < 25 and fps == pytest.approx(world_fps(result.records), rel=0.25)  # not the nominal 100


def test_short_live_recording_and_files_keep_their_rate(tmp_path, onnx_model, video_file):
    src = LiveSource(lambda: SimulatedCamera(fps=40.0), "simulated camera")
    with open_backend(onnx_model, threads=1) as be:
        Pipeline(src, be, [VideoSink(tmp_path / "short.mp4")], max_frames=5, handle_signals=False).run()
        # a file is recorded at its own rate (10 FPS), however fast it is processed
        Pipeline(open_source(str(video_file)), be, [VideoSink(tmp_path / "file.mp4")], handle_signals=False).run()
    assert len(read_video(tmp_path / "short.mp4")) == 5  # fewer frames than the probe: still all written
    # 40 when every camera frame is kept; 4 intervals of a sleeping simulated camera jitter on a loaded machine
    assert 25.0 < video_fps(tmp_path / "short.mp4") < 55.0
    assert video_fps(tmp_path / "file.mp4") == pytest.approx(10.0, abs=0.01)


def test_measured_fps_ignores_warm_up_and_averages_mixed_intervals():
    warm_up = [0.0, 0.5] + [0.5 + 0.04 * i for i in range(1, 10)]  # first interval 500 ms, then 25 FPS
    assert measured_fps(warm_up) == pytest.approx(25.0)
    mixed = np.cumsum([0.0] + [1 / 30, 2 / 30] * 5)  # a 30 FPS camera read every 1 or 2 periods
    assert measured_fps(list(mixed)) == pytest.approx(20.0)  # the median would say 15 or 30
    assert measured_fps([1.0]) is None and measured_fps([1.0, 1.0]) is None


def test_device_that_opens_but_never_gives_a_frame_ends(capsys):
    opened = []

    def opener():
        opened.append(SimulatedCamera(n=0))  # opens every time, never reads
        return opened[-1]

    delays = []
    src = LiveSource(
        opener, "camera 3", max_retries=3, retry_delay=0.01, stall_timeout=5.0, wait=lambda d: delays.append(d) or False
    ).start()
    assert src.get(timeout=30.0) is None
    assert delays == [0.01, 0.02, 0.04]  # one count across reopenings, delays doubling
    assert len(opened) == 4 and all(c.released for c in opened)
    assert src.error == "camera 3: lost; gave up after 3 reconnect attempts"
    err = capsys.readouterr().err
    assert "reconnect 3/3 in 0.0s" in err and "reconnect 1/3" in err


def test_sigterm_to_the_cli_finalises_the_video_and_stats(tmp_path, onnx_model):
    """A real `vsseg-edge run` process stopped by SIGTERM mid-stream exits 143 with a playable video.

    143 (128 + SIGTERM), as every interrupted command: a script chaining on `run` sees that it was stopped.
    """
    import cv2

    long_video = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(long_video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (128, 64))
    for f in make_frames(8) * 250:  # 2000 frames: far more than the run gets through before the signal
        writer.write(f)
    writer.release()
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vsseg_edge.cli",
            "run",
            str(onnx_model),
            "--source",
            str(long_video),
            "--save",
            str(out),
            "--stats",
            str(stats),
            "--threads",
            "1",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stderr.readline()  # "<backend> ← <source>": the pipeline is starting
    assert "←" in first, first
    wait_for(lambda: records_streamed(tmp_path, "stats"), proc, what="the first frames' records")
    proc.send_signal(signal.SIGTERM)  # mid-stream, whatever the machine's load: frames went through, handled
    err = proc.communicate(timeout=30)[1]
    assert proc.returncode == 143, err
    frames = len(stats.read_text().splitlines())
    assert 0 < frames < 2000
    assert len(read_video(out)) == frames and video_fps(out) == pytest.approx(25.0, abs=0.01)
    assert f"frames {frames}" in err


def test_slow_output_stage_does_not_queue_stale_frames(onnx_model):
    """A sink taking 40 ms a frame: a live frame waits for at most the frame being rendered, not a queue.

    With a frame taken whenever the infer thread is free, results queue behind the sink and the median
    latency is ~4 sink periods (~175 ms here); taking the newest frame only when the output queue is
    empty gives ~2 (the render in progress, then its own).
    """

    class SlowSink(Sink):
        def write(self, frame, labels, vis, hud):
            time.sleep(0.04)
            return True

    src = LiveSource(lambda: SimulatedCamera(fps=200.0), "simulated camera")
    with open_backend(onnx_model, threads=1) as be:
        result = Pipeline(src, be, [SlowSink()], max_frames=15, handle_signals=False).run()
    assert result.summary["drops"] > 15 * 4  # the camera gives ~8 frames per rendered frame
    assert float(np.median([r["latency_ms"] for r in result.records])) < 3 * 40


def test_recording_says_when_the_live_rate_drifted(tmp_path, capsys):
    """The rate is fixed after the probe; a run that later slows down is reported, with the speed-up factor."""
    from types import SimpleNamespace

    from vsseg_edge.runtime.sources import CapturedFrame

    sink = VideoSink(tmp_path / "drift.mp4", probe_frames=4)
    sink.start(SimpleNamespace(live=True, fps=30.0))
    times = [0.04 * i for i in range(4)] + [0.12 + 0.1 * i for i in range(1, 9)]  # 25 FPS, then 10 FPS
    vis = np.zeros((64, 128, 3), np.uint8)
    for i, t in enumerate(times):
        sink.write(CapturedFrame(i, vis, t, 0.0), None, vis, [])
    sink.close()
    assert len(read_video(tmp_path / "drift.mp4")) == 12 and video_fps(tmp_path / "drift.mp4") == pytest.approx(25.0)
    err = capsys.readouterr().err
    assert "recording at 25 FPS (measured over 4 frames)" in err
    assert "recorded at 25 FPS but the run averaged 12.0 FPS; the video plays 2.09x real time" in err
