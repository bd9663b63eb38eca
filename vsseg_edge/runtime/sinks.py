"""Where results go: a window with overlay and HUD, a video file, per-frame label PNGs, or nothing.

A sink is told the source once (`start`: nominal rate, live or not), then receives, per frame, the
`CapturedFrame`, its uint8 label map at the frame's size and (when a sink asked for it, `needs_overlay`)
the colour overlay. `write` (output thread) or `pump` (the pipeline's calling thread, for GUI work)
return False to ask the pipeline to stop (the window's q / Esc). `close` is always called, also after
Ctrl-C, so the video is finalised.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

import numpy as np

from ..core.errors import VssegError
from ..core.fileio import CheckedVideoWriter, check_output, write_png
from .hud import draw_hud


def _log(msg: str) -> None:
    print(f"vsseg-edge run: {msg}", file=sys.stderr, flush=True)


class Sink:
    """Base: `start(source)` once before the first frame, `write` per frame, `pump` often, `close` always."""

    needs_overlay = False
    interactive = False  # True: the pipeline calls `pump` every few ms on the thread that runs it

    def start(self, source) -> None:
        """Called once before the first frame with the source (its nominal `fps`, whether it is `live`)."""

    def write(self, frame, labels: np.ndarray, vis: np.ndarray | None, hud: list[str]) -> bool:
        return True

    def pump(self) -> bool:
        """GUI work on the pipeline's calling thread; False asks the pipeline to stop."""
        return True

    def close(self) -> None:
        pass


class NullSink(Sink):
    """Discard everything (headless benchmark)."""


def measured_fps(t_captured: list[float]) -> float | None:
    """Frame rate from capture times: the mean interval, ignoring intervals over 3x the median.

    The mean (not the median) because a pipeline slower than its camera takes frames at a mix of one and
    two camera periods, whose median is either; the outlier cut drops the warm-up of the first inference
    and a hiccup of the machine. None with fewer than two increasing times.
    """
    intervals = np.diff(np.asarray(t_captured, np.float64))
    intervals = intervals[intervals > 0]
    if intervals.size == 0:
        return None
    kept = intervals[intervals <= 3.0 * float(np.median(intervals))]
    return float(min(max(1.0 / kept.mean(), 0.5), 240.0))


class VideoSink(Sink):
    """The overlay as a video, written to a temporary file renamed onto `path` at close.

    .mp4/.m4v/.mov/.mkv: H.264 through PyAV (browser-playable, `runtime.av_output`); where PyAV is not
    installed, .mp4/.m4v/.mov fall back to OpenCV's MPEG-4 Part 2 (`mp4v`, which browsers do not play) and
    say so. .avi: MJPEG through OpenCV.

    The file is written by `fileio.CheckedVideoWriter`: read back at close, and never renamed into place
    when the disk refused part of it (OpenCV's writer reports nothing).

    The frame rate: `fps` when given; else a file's own rate (30 when it has none); for a LIVE source
    the rate the frames actually reached this sink, measured from their capture times over the first
    `probe_frames` frames (kept in memory until the writer opens). A camera's or stream's nominal rate
    is often wrong or 0, and with latest-frame-only capture the recorded rate is the pipeline's, not the
    camera's; either way a nominal rate would make the video play too fast or too slow.
    """

    needs_overlay = True

    def __init__(self, path: str | Path, fps: float | None = None, probe_frames: int = 12):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".m4v", ".mov", ".mkv", ".avi"):
            raise VssegError(
                f"--save {path}: expected a .mp4 (or .mkv/.mov/.avi) file name, or rtp://HOST:PORT "
                "or rtsp://HOST:PORT/PATH"
            )
        check_output(self.path, "--save")
        self.codec = self._pick_codec()
        self.fps = fps if fps and fps > 0 else None
        self.probe_frames = max(2, probe_frames)
        self._measure = False
        self._probe: list[tuple[float, np.ndarray]] = []
        self._t_first = self._t_last = None  # capture times of the first and last frames, for the check at close
        self._writer: CheckedVideoWriter | None = None
        self.frames = 0

    def start(self, source) -> None:
        if self.fps is None:
            self._measure = bool(getattr(source, "live", False))
            if not self._measure:
                nominal = getattr(source, "fps", None)
                self.fps = nominal if nominal and nominal > 0 else 30.0

    def _pick_codec(self) -> str:
        """h264 (PyAV), or OpenCV's mjpg (.avi) / mp4v (no PyAV); decided before the run, said once."""
        from .av_output import av_module, h264_encoder

        suffix = self.path.suffix.lower()
        if suffix == ".avi":
            return "mjpg"
        av = av_module()
        if av is not None and h264_encoder(av):
            return "h264"
        if suffix == ".mkv":
            raise VssegError(f"--save {self.path}: .mkv needs PyAV; install it with: pip install 'vsseg-edge[edge]'")
        _log(
            f"--save {self.path}: PyAV is not installed, writing MPEG-4 Part 2 (mp4v), which browsers do not "
            "play; for H.264: pip install 'vsseg-edge[edge]'"
        )
        return "mp4v"

    def _open(self, hw: tuple[int, int]) -> None:
        if self.codec == "h264":  # PyAV, through its own checked temporary file (read back before the rename)
            from .av_output import open_h264_writer

            self._writer = open_h264_writer(self.path, float(self.fps or 30.0), hw, f"--save {self.path}")
            self._hw = hw  # the writer drops a last odd row/column itself (yuv420p)
            return
        fourcc = "MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"
        self._writer = CheckedVideoWriter(self.path, float(self.fps or 30.0), (hw[1], hw[0]), fourcc, flag="--save")
        self._hw = hw

    def _open_measured(self) -> None:
        """Open the writer at the rate measured over the probed frames, then write them."""
        rate = measured_fps([t for t, _ in self._probe])
        self.fps = round(rate, 2) if rate else 30.0
        _log(
            f"--save {self.path}: live source, recording at {self.fps:g} FPS (measured over {len(self._probe)} frames)"
        )
        probe, self._probe = self._probe, []
        self._open(probe[0][1].shape[:2])
        for _, vis in probe:
            self._append(vis)

    def write(self, frame, labels, vis, hud) -> bool:
        self._t_first = frame.t_captured if self._t_first is None else self._t_first
        self._t_last = frame.t_captured
        if self._writer is None and self._measure:
            self._probe.append((frame.t_captured, vis))
            if len(self._probe) >= self.probe_frames:
                self._open_measured()
            return True
        if self._writer is None:
            self._open(vis.shape[:2])
        self._append(vis)
        return True

    def _append(self, vis: np.ndarray) -> None:
        if vis.shape[:2] != self._hw:  # a source whose frame size changes (folders of mixed images)
            import cv2

            vis = cv2.resize(vis, (self._hw[1], self._hw[0]), interpolation=cv2.INTER_AREA)
        self._writer.write(vis)
        self.frames += 1

    def close(self) -> None:
        try:
            if self._probe:  # a live run shorter than the probe: measure what there is
                self._open_measured()
        except BaseException:
            if self._writer is not None:
                self._writer.abort()
            raise
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()  # finalise and check the file before it is renamed onto the target
            self._check_rate()

    def _check_rate(self) -> None:
        """Say so when a live run's average rate drifted from the recorded one (the video's speed is off)."""
        if not self._measure or self.frames < 2 * self.probe_frames:
            return
        actual = (self.frames - 1) / max(self._t_last - self._t_first, 1e-9)
        if abs(actual / self.fps - 1) > 0.2:
            _log(
                f"--save {self.path}: recorded at {self.fps:g} FPS but the run averaged {actual:.1f} FPS; "
                f"the video plays {self.fps / actual:.2f}x real time"
            )


MASK_FORMATS = ("ids", "color", "labelids")


class MaskSink(Sink):
    """One PNG per frame at the frame's size, <name>.png or <index:06d>.png, in one of `MASK_FORMATS`:

    - ids: uint8 class ids (training ids for Cityscapes models), what `vsseg-edge eval` reads;
    - color: the class colours (RGB palette of the model or its class file), for people and reports;
    - labelids: Cityscapes label ids (road 7, car 26 …; ignore and extra classes → 0 'unlabeled'), which
      cityscapesScripts' evalPixelLevelSemanticLabeling reads directly; Cityscapes models only.

    The class colours and the Cityscapes check need the model, which is opened after the sinks: `bind`.
    Each PNG is encoded in memory and written checked (`fileio.write_png`): a full disk ends the run with
    one line instead of leaving empty files. A folder this sink made and never wrote into is removed at close.
    """

    def __init__(self, folder: str | Path, fmt: str = "ids"):
        if fmt not in MASK_FORMATS:
            raise VssegError(f"--mask-format {fmt}: expected one of {', '.join(MASK_FORMATS)}")
        self.format = fmt
        self.folder = check_output(folder, "--save-masks", folder=True)
        self._made = not self.folder.exists()
        with contextlib.suppress(FileExistsError):
            self.folder.mkdir(parents=True)
        self.frames = 0
        self._lut: np.ndarray | None = None

    def bind(self, label_set) -> None:
        """Take the model's classes: the colour table, or the check that label ids mean something."""
        from ..core.labels import CITYSCAPES_TRAINID_TO_ID
        from .hud import bgr_lut

        if self.format == "color":
            self._lut = bgr_lut(label_set)
        elif self.format == "labelids":
            if not label_set.is_cityscapes:
                raise VssegError(
                    f"--mask-format labelids: Cityscapes label ids need a Cityscapes model; this one "
                    f"predicts {label_set.num_classes} classes ({', '.join(label_set.classes[:4])} …)"
                )
            self._lut = CITYSCAPES_TRAINID_TO_ID

    def write(self, frame, labels, vis, hud) -> bool:
        name = frame.name if frame.name else f"{frame.index:06d}"
        if self.format != "ids" and self._lut is None:
            raise RuntimeError("MaskSink.bind() was not called before the first frame")
        write_png(self.folder / f"{name}.png", labels if self._lut is None else self._lut[labels], flag="--save-masks")
        self.frames += 1
        return True

    def close(self) -> None:
        if self._made and self.frames == 0:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty


def _cv2_gui():
    """The module whose highgui functions the window sink calls (a test double replaces this)."""
    import cv2

    return cv2


class WindowSink(Sink):
    """The overlay with the HUD in a window; q, Esc or closing the window stops the run.

    Every GUI call (namedWindow, imshow, waitKey, destroyWindow) happens on the thread that runs the
    pipeline, in `pump`: Qt builds of OpenCV misbehave when imshow/waitKey run on a worker thread. The
    output thread only leaves the newest HUD-drawn image in a slot. Refused, in one line, where there is
    no display or OpenCV has no GUI (opencv-python-headless).
    """

    needs_overlay = True
    interactive = True

    def __init__(self, title: str = "vsseg-edge", gui=None):
        self.title = title
        if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise VssegError("--show: no display (DISPLAY is not set); use --save out.mp4 instead")
        self._gui = gui if gui is not None else _cv2_gui()
        try:
            self._gui.namedWindow(title, self._gui.WINDOW_NORMAL)
        except self._gui.error:
            raise VssegError(
                "--show: this OpenCV has no windows (opencv-python-headless); for --show: "
                "pip uninstall -y opencv-python-headless && pip install 'vsseg-edge[gui]'; or --save "
                "out.mp4 / rtp://HOST:PORT"
            ) from None
        self._lock = threading.Lock()
        self._pending: np.ndarray | None = None
        self._quit = False
        self._shown = 0
        self._open = True

    def write(self, frame, labels, vis, hud) -> bool:
        image = draw_hud(vis.copy(), hud)
        with self._lock:
            self._pending = image  # an image not shown yet is replaced: the window shows the newest
        return not self._quit

    def pump(self) -> bool:
        with self._lock:
            image, self._pending = self._pending, None
        gui = self._gui
        if image is not None:
            gui.imshow(self.title, image)
            self._shown += 1
        key = gui.waitKey(1) & 0xFF
        if key in (ord("q"), ord("Q"), 27):
            self._quit = True
        elif self._shown and gui.getWindowProperty(self.title, gui.WND_PROP_VISIBLE) < 1:
            self._quit = True  # the user closed the window (imshow would open it again)
        return not self._quit

    def close(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(self._gui.error):
                self._gui.destroyWindow(self.title)
                self._gui.waitKey(1)  # let the GUI loop process the close
