"""Where results go: a window with overlay and HUD, a video file, per-frame label PNGs, or nothing.

A sink receives, per frame, the captured `Frame`, its uint8 label map at the frame's size and (when a
sink asked for it, `needs_overlay`) the colour overlay. `write` returns False to ask the pipeline to
stop (the window's q / Esc). `close` is always called, also after Ctrl-C, so the video is finalised.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..core.errors import VssegError
from ..core.fileio import atomic_path, write_png
from .hud import draw_hud


class Sink:
    needs_overlay = False

    def write(self, frame, labels: np.ndarray, vis: np.ndarray | None, hud: list[str]) -> bool:
        return True

    def close(self) -> None:
        pass


class NullSink(Sink):
    """Discard everything (headless benchmark)."""


class VideoSink(Sink):
    """The overlay as an mp4v video, written to a temporary file renamed onto `path` at close."""

    needs_overlay = True

    def __init__(self, path: str | Path, fps: float | None = None):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".m4v", ".mov", ".avi"):
            raise VssegError(f"--save {path}: expected a .mp4 (or .avi/.mov) file name")
        self.fps = fps if fps and fps > 0 else 30.0
        self._stack = contextlib.ExitStack()
        self._writer = None
        self.frames = 0

    def _open(self, hw: tuple[int, int]) -> None:
        import cv2

        tmp = self._stack.enter_context(atomic_path(self.path))
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        self._writer = cv2.VideoWriter(str(tmp), fourcc, self.fps, (hw[1], hw[0]))
        if not self._writer.isOpened():
            raise VssegError(f"--save {self.path}: OpenCV cannot write this video (codec unavailable)")
        self._hw = hw

    def write(self, frame, labels, vis, hud) -> bool:
        if self._writer is None:
            self._open(vis.shape[:2])
        if vis.shape[:2] != self._hw:  # a source whose frame size changes (folders of mixed images)
            import cv2

            vis = cv2.resize(vis, (self._hw[1], self._hw[0]), interpolation=cv2.INTER_AREA)
        self._writer.write(vis)
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # finalise the container before it is renamed onto the target
            self._writer = None
        self._stack.close()


class MaskSink(Sink):
    """One uint8 label PNG per frame (class ids, at the frame's size): <name>.png or <index:06d>.png."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise VssegError(f"--save-masks {folder}: exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.frames = 0

    def write(self, frame, labels, vis, hud) -> bool:
        name = frame.name if frame.name else f"{frame.index:06d}"
        write_png(self.folder / f"{name}.png", labels)
        self.frames += 1
        return True


class WindowSink(Sink):
    """cv2.imshow of the overlay with the HUD; q or Esc stops. Refused where OpenCV has no GUI or no display."""

    needs_overlay = True

    def __init__(self, title: str = "vsseg-edge"):
        import cv2

        self.title = title
        if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise VssegError("--show: no display (DISPLAY is not set); use --save out.mp4 instead")
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise VssegError("--show: this OpenCV has no GUI support (opencv-python-headless?); "
                             "install opencv-python or use --save out.mp4") from None

    def write(self, frame, labels, vis, hud) -> bool:
        import cv2

        cv2.imshow(self.title, draw_hud(vis.copy(), hud))
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        import cv2

        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.title)
