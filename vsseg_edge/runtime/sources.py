"""Frame sources, all through OpenCV: camera index (V4L2), video files, image folders, RTSP, GStreamer.

Every source is started, then gives frames with `get(timeout)` until it returns None (end of stream),
and is stopped. Two behaviours:

- Files and folders (`ordered=True`): a reader thread decodes ahead into a small bounded queue and every
  frame is delivered in order; a frame that fails to decode is skipped and counted.
- Live sources (camera, RTSP, GStreamer, CSI): a reader thread keeps only the LATEST frame; a frame
  replaced before the pipeline took it is dropped and counted, so what is shown is never behind the
  world. A read failure (camera unplugged, stream stalled) reopens the device with exponential backoff
  and a message; after `max_retries` reconnect attempts without a frame, or no frame for `stall_timeout`
  seconds, the source ends with a one-line error (`source.error`) instead of hanging.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import VssegError
from ..data.datasets import IMAGE_SUFFIXES, list_images


@dataclass
class CapturedFrame:
    """One captured BGR uint8 frame, its sequence number, an optional name (folder images) and timings."""

    index: int
    image: np.ndarray
    t_captured: float  # perf_counter() when the frame was fully read
    capture_ms: float  # time spent reading/decoding it
    name: str | None = None
    times: object = None  # the pipeline's FrameTimes, set before the sinks get the frame


def _log(msg: str) -> None:
    print(f"vsseg-edge run: {msg}", file=sys.stderr, flush=True)


class Source:
    """Base: `start()`, `get(timeout) -> CapturedFrame | None`, `stop()`; counts drops and decode failures."""

    live = False
    description = "source"

    def __init__(self):
        self.drops = 0
        self.decode_failures = 0
        self.error: str | None = None  # why a live source gave up, one line
        self.fps: float | None = None  # nominal rate, for the video writer
        self.transform: Callable[[np.ndarray], np.ndarray] | None = None  # host-side flip / resize (options)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Source:
        self._thread = threading.Thread(target=self._run_guarded, name=f"capture:{self.description}", daemon=True)
        self._thread.start()
        return self

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # reported by the pipeline; the reader thread must not die silently
            self.error = f"{self.description}: {type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            self._finish()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        raise NotImplementedError


class OrderedSource(Source):
    """Files and folders: every frame in order, decoded ahead into a bounded queue."""

    def __init__(self, prefetch: int = 4):
        super().__init__()
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)

    def _put(self, item) -> bool:
        """Block until there is room (back-pressure), giving up when stopped."""
        if item is not None and self.transform is not None:
            item.image = self.transform(item.image)  # on the reader thread, ahead of the consumer
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _finish(self) -> None:
        """The end marker waits behind the frames, however slow the consumer; only a stop abandons it."""
        self._put(None)

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        return self._queue.get(timeout=timeout)


class FolderSource(OrderedSource):
    """Image files of a folder (or one image), in natural name order (frame_2 before frame_10); unreadable images
    are skipped and counted."""

    def __init__(self, folder: str | Path, prefetch: int = 4, files: list[Path] | None = None):
        super().__init__(prefetch)
        folder = Path(folder)
        files = files or ([folder] if folder.is_file() else list_images(folder))
        if not files:
            raise VssegError(f"--source {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        self.files = files
        self.description = str(folder)

    def _run(self) -> None:
        import cv2

        for i, path in enumerate(self.files):
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            t1 = time.perf_counter()
            if img is None:
                self.decode_failures += 1
                _log(f"{path}: not a readable image, skipped")
                continue
            if not self._put(CapturedFrame(i, img, t1, (t1 - t0) * 1e3, name=path.stem)):
                return


class VideoFileSource(OrderedSource):
    """A video file, every frame in order. A frame that fails to decode is skipped and counted.

    OpenCV's `read` fails WITHOUT moving on for an undecodable frame (the next read gives the frame after
    it) and at the end of the file alike. So failed reads are counted as skipped frames only once a later
    read gives a frame; failed reads that never end in a frame are the end (at most `max_bad_run` of them,
    or as many as the header's frame count leaves). A file that ends before the frame count its header
    announces (truncated, or an undecodable tail) says so in one line instead of counting guesses.
    `CapturedFrame.index` is the frame's position in the file, so names and stats keep a gap where one was skipped.
    """

    def __init__(self, path: str | Path, prefetch: int = 4, max_bad_run: int = 10):
        super().__init__(prefetch)
        import cv2

        self.path = Path(path)
        self.description = str(path)
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise VssegError(f"--source {path}: OpenCV cannot open this video (unknown format or codec)")
        self.fps = self._cap.get(cv2.CAP_PROP_FPS) or None
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.max_bad_run = max_bad_run

    def _run(self) -> None:
        pos, bad_run = 0, 0  # position in the file of the next frame; failed reads since the last frame
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                ok, img = self._cap.read()
                t1 = time.perf_counter()
                if ok and img is not None:
                    if bad_run:  # a frame after failed reads: those were frames that did not decode
                        self._skipped(pos, bad_run)
                        pos, bad_run = pos + bad_run, 0
                    if not self._put(CapturedFrame(pos, img, t1, (t1 - t0) * 1e3)):
                        return
                    pos += 1
                    continue
                bad_run += 1
                if bad_run > self.max_bad_run or (self.frame_count and pos + bad_run > self.frame_count):
                    self._ended_at(pos)
                    return
        finally:
            self._cap.release()

    def _skipped(self, pos: int, n: int) -> None:
        self.decode_failures += n
        which = f"frame {pos}" if n == 1 else f"frames {pos}-{pos + n - 1}"
        _log(f"{self.path}: {which} failed to decode, skipped")

    def _ended_at(self, pos: int) -> None:
        if self.frame_count and pos < self.frame_count:
            _log(
                f"{self.path}: ends after {pos} of the {self.frame_count} frames its header announces "
                "(truncated file or undecodable tail)"
            )


class LiveSource(Source):
    """A live device or stream: a reader thread keeps only the latest frame; drops are counted.

    `opener()` returns an opened cv2.VideoCapture-like object (isOpened/read/release) or raises VssegError.
    A failed read reopens it with backoff (`retry_delay` doubling up to `max_delay`); `max_retries`
    reconnect attempts without a frame between them, or `stall_timeout` seconds without a frame while
    connected, end the source with `error` set. `clock` (seconds) measures stalls and `get` timeouts and
    `wait(delay)` waits out a backoff delay (True when the source was stopped meanwhile); tests pass their
    own to check the policy without sleeping.
    """

    live = True

    def __init__(
        self,
        opener: Callable,
        description: str,
        *,
        max_retries: int = 5,
        retry_delay: float = 0.5,
        max_delay: float = 8.0,
        stall_timeout: float = 10.0,
        clock: Callable[[], float] = time.perf_counter,
        wait: Callable[[float], bool] | None = None,
    ):
        super().__init__()
        self._clock = clock
        self._wait = wait or self._stop.wait
        self.description = description
        self._opener = opener
        self._cap = opener()  # the first open fails loudly and at once (a missing camera is a user error)
        self.fps = _cap_fps(self._cap)
        self.max_retries, self.retry_delay, self.max_delay = max_retries, retry_delay, max_delay
        self.stall_timeout = stall_timeout
        self._cond = threading.Condition()
        self._latest: CapturedFrame | None = None
        self._ended = False
        self._last_frame_time = clock()
        self._attempts = 0  # reconnect attempts since the last frame

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            t0 = time.perf_counter()
            ok, img = self._cap.read() if self._cap is not None else (False, None)
            t1 = time.perf_counter()
            if ok and img is not None:
                self._publish(CapturedFrame(index, img, t1, (t1 - t0) * 1e3))
                index += 1
                continue
            if not self._reconnect():
                return

    def _publish(self, frame: CapturedFrame) -> None:
        with self._cond:
            if self._latest is not None:
                self.drops += 1  # the previous frame was never taken: the pipeline is slower than the source
            self._latest = frame
            self._last_frame_time = self._clock()
            self._attempts = 0  # a frame: the device is back, the next loss starts a fresh backoff
            self._cond.notify_all()

    def _reconnect(self) -> bool:
        """Reopen with exponential backoff; False (and `error` set) after `max_retries` attempts in a row.

        The count and the delay carry on until a frame arrives: a device that opens but gives no frame
        (a camera held by another program, a dead stream behind a live server) ends too, not loops.
        """
        while self._attempts < self.max_retries:
            self._attempts += 1
            delay = min(self.retry_delay * 2 ** (self._attempts - 1), self.max_delay)
            _log(
                f"{self.description}: no frame (disconnected or stalled); reconnect "
                f"{self._attempts}/{self.max_retries} in {delay:.1f}s"
            )
            if self._wait(delay):
                return False
            self._last_frame_time = self._clock()  # reconnecting is not a stall
            self._release()
            try:
                self._cap = self._opener()
                return True
            except VssegError:
                continue
        self.error = f"{self.description}: lost; gave up after {self.max_retries} reconnect attempts"
        return False

    def _release(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:
                self._cap = None

    def _finish(self) -> None:
        self._release()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        """The newest frame not yet taken, waiting up to `timeout` (then queue.Empty).

        None at the end, once stopped, or after `stall_timeout` seconds without any frame (`error` set).
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while self._latest is None and not self._ended:
                now = self._clock()
                if self._stop.is_set():
                    return None
                if now - self._last_frame_time > self.stall_timeout:
                    self.error = self.error or (
                        f"{self.description}: no frame for {self.stall_timeout:g}s (stream stalled); stopping"
                    )
                    self._stop.set()
                    return None
                if deadline is not None and now >= deadline:
                    raise queue.Empty
                self._cond.wait(0.1 if deadline is None else max(min(deadline - now, 0.1), 0.001))
            frame, self._latest = self._latest, None
        if frame is not None and self.transform is not None:  # only frames the pipeline takes pay for it
            frame.image = self.transform(frame.image)
        return frame


def _cap_fps(cap) -> float | None:
    try:
        import cv2

        fps = float(cap.get(cv2.CAP_PROP_FPS))
        return fps if 0 < fps < 1000 else None
    except Exception:  # a capture-like test object without get()
        return None


def csi_pipeline(
    sensor_id: int = 0,
    width: int = 1280,
    height: int = 720,
    fps: float = 30,
    flip: int = 0,
    sensor_mode: int | None = None,
) -> str:
    """The GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc → BGR appsink keeping one buffer)."""
    mode = f" sensor-mode={sensor_mode}" if sensor_mode is not None else ""
    rate = f"{int(fps)}/1" if float(fps).is_integer() else f"{int(round(fps * 1000))}/1000"
    return (
        f"nvarguscamerasrc sensor-id={sensor_id}{mode} ! video/x-raw(memory:NVMM), width={width}, "
        f"height={height}, format=NV12, framerate={rate} ! nvvidconv flip-method={flip} ! "
        "video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 "
        "sync=false"
    )


def _opencv_has(backend: str) -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith(backend + ":"):
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


def _camera_opener(index: int | str, size: tuple[int, int] | None, rate: float | None = None, flag: str | None = None):
    """Open a V4L2 camera by index or device path (/dev/video0, /dev/v4l/by-id/…), asking for size and rate."""
    import cv2

    flag = flag or (f"--camera {index}" if isinstance(index, int) else f"--source {index}")

    def open_camera():
        cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            where = (
                f"at index {index} (/dev/video{index} missing or busy)"
                if isinstance(index, int)
                else f"at {index} (missing or busy)"
            )
            raise VssegError(f"{flag}: no camera {where}")
        if size is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[0])
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[1])
        if rate is not None:
            cap.set(cv2.CAP_PROP_FPS, float(rate))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver's queue short: we want the newest frame
        return cap

    return open_camera


def _stream_opener(url: str, api: int, what: str, timeout_ms: int = 5000):
    import cv2

    def open_stream():
        params = []
        if api == cv2.CAP_FFMPEG:  # bounded waits, so a dead server cannot hang the reader thread forever
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        cap = cv2.VideoCapture(url, api, params)
        if not cap.isOpened():
            cap.release()
            kind = "pipeline" if api == cv2.CAP_GSTREAMER else "stream"
            raise VssegError(f"--source {what}: OpenCV cannot open this {kind}")
        return cap

    return open_stream


def open_source(
    source: str | int | None = None,
    *,
    camera: int | None = None,
    csi: bool = False,
    size: tuple[int, int] | None = None,
    options=None,
    **live_kw,
) -> Source:
    """Open what a source text names (`runtime.uri`: csi://N, v4l2:///dev/videoN, /dev/videoN, an index,
    rtsp://…, rtp://@:PORT, file://…, a file, folder or glob, a GStreamer pipeline), with jetson-utils'
    input options (`options`: a `uri.SourceOptions`). `camera=N` and `csi=True` are the older flags."""
    import cv2

    from .uri import SourceOptions, parse_source

    if options is None:
        options = SourceOptions(height=size[0], width=size[1]) if size else SourceOptions()
    opts = options
    if camera is not None:
        uri = parse_source(int(camera))
        flag = f"--camera {camera}"
    elif csi:
        uri, flag = parse_source("csi://0"), "--csi"
    elif source is None:
        raise VssegError("run: give --source (a file, folder, glob, csi://N, /dev/videoN or a URL) or --camera N")
    else:
        uri = parse_source(source)
        flag = (
            f"--source {uri.text}" if not (isinstance(source, int) or str(source).isdigit()) else f"--camera {source}"
        )
    if uri.kind == "csi":
        if not _opencv_has("GStreamer"):
            raise VssegError(f"{flag}: this OpenCV build has no GStreamer support (use the JetPack OpenCV)")
        h, w = opts.size or (720, 1280)
        pipe = csi_pipeline(
            uri.index, width=w, height=h, fps=opts.rate or 30, flip=opts.flip_method, sensor_mode=opts.sensor_mode
        )
        src = LiveSource(
            _stream_opener(pipe, cv2.CAP_GSTREAMER, flag.removeprefix("--source ")),
            f"CSI camera {uri.index}",
            **live_kw,
        )
        return src  # flipped and sized by the camera pipeline itself
    if uri.kind == "v4l2":
        index = uri.index if uri.location == f"/dev/video{uri.index}" else uri.location
        src = LiveSource(_camera_opener(index, opts.size, opts.rate, flag), f"camera {uri.location}", **live_kw)
    elif uri.kind == "gstreamer":
        if not _opencv_has("GStreamer"):
            raise VssegError(f"--source {uri.text[:40]!r}…: this OpenCV build has no GStreamer support")
        src = LiveSource(_stream_opener(uri.location, cv2.CAP_GSTREAMER, "pipeline"), "GStreamer pipeline", **live_kw)
    elif uri.kind == "stream":
        src = LiveSource(
            _stream_opener(uri.location, cv2.CAP_FFMPEG, uri.location), uri.location.split("@")[-1], **live_kw
        )
    elif uri.kind == "rtp":
        from .av_input import rtp_opener

        src = LiveSource(rtp_opener(uri, opts.codec), uri.text, **live_kw)
    elif uri.kind == "images":
        src = FolderSource(uri.location, files=[Path(f) for f in uri.files] or None)
    else:
        src = VideoFileSource(uri.location)
    return _transformed(src, opts)


def _transformed(src: Source, opts) -> Source:
    """The source with the host-side flip and resize its options ask for (a V4L2 camera is asked for the size
    first, and resized only when it gives another)."""
    if opts.flip == "none" and opts.size is None:
        return src
    from .uri import flip_frame

    def transform(image: np.ndarray) -> np.ndarray:
        image = flip_frame(image, opts.flip)
        if opts.size is not None and image.shape[:2] != opts.size:
            import cv2

            image = cv2.resize(image, (opts.size[1], opts.size[0]), interpolation=cv2.INTER_AREA)
        return image

    src.transform = transform
    return src
