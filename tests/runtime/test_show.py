"""`--show`: the window sink through a test double of OpenCV's GUI functions, and its one-line refusals.

OpenCV here is headless, so `FakeHighGui` stands in for cv2's highgui: it records every call (and the
thread that made it), returns scripted keys from waitKey and reports the window closed when told to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from vsseg_edge.core.errors import VssegError
from vsseg_edge.runtime import sinks
from vsseg_edge.runtime.backends import open_backend
from vsseg_edge.runtime.pipeline import Pipeline
from vsseg_edge.runtime.sinks import VideoSink, WindowSink
from vsseg_edge.runtime.sources import open_source


class FakeHighGui:
    """cv2's highgui as the window sink uses it. `keys`: waitKey's answer once `n` frames were shown."""

    WINDOW_NORMAL, WND_PROP_VISIBLE = 0, 4
    error = RuntimeError  # what the sink catches as cv2.error

    def __init__(self, keys: dict[int, int] | None = None, closed_after: int | None = None):
        self.keys, self.closed_after = keys or {}, closed_after
        self.shown: list[np.ndarray] = []
        self.calls: list[tuple[str, str]] = []  # (function, thread name)

    def _call(self, name: str) -> None:
        self.calls.append((name, threading.current_thread().name))

    def namedWindow(self, title, flags):
        self._call("namedWindow")

    def imshow(self, title, image):
        self._call("imshow")
        self.shown.append(image.copy())

    def waitKey(self, delay):
        self._call("waitKey")
        return self.keys.get(len(self.shown), -1)

    def getWindowProperty(self, title, prop):
        self._call("getWindowProperty")
        return 0.0 if self.closed_after is not None and len(self.shown) >= self.closed_after else 1.0

    def destroyWindow(self, title):
        self._call("destroyWindow")


class HudRecordingWindow(WindowSink):
    """The real window sink, keeping the HUD lines it was given (to check their content)."""

    def write(self, frame, labels, vis, hud):
        self.huds = getattr(self, "huds", []) + [list(hud)]
        return super().write(frame, labels, vis, hud)


@pytest.fixture
def display(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")


@pytest.mark.parametrize("key", [ord("q"), 27])
def test_q_or_esc_stops_cleanly_and_finalises_the_video(tmp_path, display, onnx_model, video_file, key):
    from tests.runtime.conftest import read_video
    from tests.runtime.test_live import SlowBackend

    gui = FakeHighGui(keys={3: key})
    window = HudRecordingWindow(gui=gui)
    with open_backend(onnx_model, threads=1) as be:  # 30 ms a frame: the window pumps ~3 times per frame
        result = Pipeline(
            open_source(str(video_file)),
            SlowBackend(be, 0.03),
            [window, VideoSink(tmp_path / "v.mp4")],
            handle_signals=False,
        ).run()
    assert result.stopped_by == "user" and result.error is None
    assert 3 <= result.frames < 12  # stopped at the key, not at the end of the 12-frame video
    assert len(read_video(tmp_path / "v.mp4")) == result.frames  # the video is finalised and complete
    names = [name for name, _ in gui.calls]
    assert names[0] == "namedWindow" and names[-2:] == ["destroyWindow", "waitKey"]
    assert names.count("destroyWindow") == 1
    # every GUI call on the thread that ran the pipeline (Qt builds of OpenCV need one GUI thread)
    assert {thread for _, thread in gui.calls} == {threading.current_thread().name}
    assert window.huds[0][0].startswith("ort on ") and "FPS" in window.huds[-1][0]


def test_hud_is_drawn_on_a_copy_of_the_overlay(display):
    gui = FakeHighGui()
    window = WindowSink(gui=gui)
    vis = np.full((64, 128, 3), 90, np.uint8)
    assert window.write(None, None, vis, ["12.0 FPS  latency 30.0 ms"]) is True
    assert window.pump() is True
    shown = gui.shown[-1]
    assert (vis == 90).all()  # the overlay given to other sinks (the video) is left untouched
    top, rest = shown[:30], shown[30:]
    assert (top != 90).any(axis=2).sum() > 50 and top.max() >= 200  # light (anti-aliased) text in the HUD band
    assert (rest == 90).all()  # nothing drawn below the single HUD line
    assert window.pump() is True and len(gui.shown) == 1  # no new frame: nothing shown again


def test_newest_frame_shown_and_window_closed_stops(display):
    gui = FakeHighGui(closed_after=2)
    window = WindowSink(gui=gui)
    for value in (10, 20):
        window.write(None, None, np.full((8, 8, 3), value, np.uint8), [])
    assert window.pump() is True and int(gui.shown[-1][4, 4, 0]) == 20  # 10 was replaced before display
    window.write(None, None, np.full((8, 8, 3), 30, np.uint8), [])
    assert window.pump() is False  # the user closed the window after the 2nd image
    assert window.write(None, None, np.zeros((8, 8, 3), np.uint8), []) is False
    window.close()
    window.close()
    assert [n for n, _ in gui.calls].count("destroyWindow") == 1


def test_show_refusals_are_one_line(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(VssegError, match="^--show: no display"):
        WindowSink(gui=FakeHighGui())
    monkeypatch.setenv("DISPLAY", ":0")
    with pytest.raises(VssegError, match=r"^--show: this OpenCV has no windows"):
        WindowSink()  # the real, headless OpenCV of this environment


@pytest.mark.parametrize("display_value", [None, ":0"])
def test_show_refused_by_the_cli_before_opening_anything(onnx_model, image_folder, display_value):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if display_value:
        env["DISPLAY"] = display_value
    proc = subprocess.run(
        [sys.executable, "-m", "vsseg_edge.cli", "run", str(onnx_model), "--source", str(image_folder), "--show"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    expected = "no display" if display_value is None else "this OpenCV has no windows"
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]
    assert proc.stderr.strip().startswith(f"error: --show: {expected}")


def test_run_command_show_with_the_test_double(monkeypatch, display, onnx_model, image_folder):
    from vsseg_edge.runtime.run import run_model

    gui = FakeHighGui()
    monkeypatch.setattr(sinks, "_cv2_gui", lambda: gui)
    result = run_model(onnx_model, source=str(image_folder), show=True)
    assert result.frames == 6 and result.stopped_by == "end"
    assert len(gui.shown) <= 6 and all(img.shape == (64, 128, 3) for img in gui.shown)
    assert [n for n, _ in gui.calls].count("destroyWindow") == 1
