"""H.264 output through PyAV (FFmpeg): browser-playable MP4 files, RTP and RTSP streams.

OpenCV's pip wheels write MPEG-4 Part 2 (`mp4v`), which browsers do not play, and cannot stream. PyAV's
wheels bundle FFmpeg with libx264, so the same code encodes H.264 into:

- a file (`--save out.mp4|.m4v|.mov|.mkv`): yuv420p, `+faststart` (the index at the front, so a browser
  starts playing before the whole file arrived), constant frame rate, CRF quality; written to a temporary
  file renamed onto the target when finalised (`runtime.sinks.VideoSink` keeps its rate logic and calls
  `open_h264_writer`);
- RTP (`--save rtp://HOST:PORT`): H.264 payload type 96 over UDP, as jetson-utils' `rtp://` output; the
  receiver needs the session description, which `rtp_sdp` writes (and the sink logs) for ffplay/VLC/
  GStreamer;
- RTSP (`--save rtsp://HOST:PORT/PATH`): publishes (ANNOUNCE + RECORD, over TCP) to an RTSP server that
  accepts publishers, such as MediaMTX; viewers then read `rtsp://HOST:PORT/PATH` from that server.

Streams are encoded for latency (libx264 ultrafast, zerolatency, a keyframe every second so a viewer
joining late starts within a second, `bitrate` bits/s) and time-stamped with the frames' capture times,
so they play at the pace the frames were seen, whatever the pipeline's rate. A stream that cannot be
opened or breaks (the server went away) is a one-line error that ends the run with a non-zero exit.

Only H.264 is offered; `mp4v` through OpenCV remains the fallback where PyAV is not installed
(`pip install 'vsseg-edge[edge]'`), and `.avi` stays MJPEG through OpenCV.
"""

from __future__ import annotations

import contextlib
import sys
import time
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ..core.errors import VssegError
from ..core.fileio import DISK_ERRNOS, atomic_path, write_failure
from .sinks import Sink

H264_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
STREAM_SCHEMES = ("rtp", "rtsp")
DEFAULT_BITRATE = 4_000_000  # bits/s, jetson-utils' default for compressed streams
RTP_PAYLOAD_TYPE = 96


def _log(msg: str) -> None:
    print(f"vsseg-edge run: {msg}", file=sys.stderr, flush=True)


def av_module():
    """PyAV, or None when it is not installed (the caller falls back or refuses in one line)."""
    try:
        import av
    except ImportError:
        return None
    return av


def h264_encoder(av) -> str | None:
    """The name of an H.264 software encoder in this FFmpeg build (libx264), or None."""
    for name in ("libx264", "libopenh264"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # av raises its own UnknownCodecError
            continue
    return None


def _even(img: np.ndarray) -> np.ndarray:
    """yuv420p needs even width and height: drop a last odd row/column."""
    h, w = img.shape[:2]
    return img if not (h % 2 or w % 2) else img[: h - h % 2, : w - w % 2]


def _one_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class H264Writer:
    """cv2.VideoWriter-like (`write(bgr)`, `release()`, `isOpened()`) H.264 encoder into one container.

    `fps` fixes the frame rate (files); with `timestamps=True` each `write` takes the frame's time in
    seconds and the stream carries it (streams: played at the pace frames were captured).
    """

    def __init__(
        self,
        target: str,
        fmt: str | None,
        fps: float,
        hw: tuple[int, int],
        *,
        what: str,
        container_options: dict | None = None,
        codec_options: dict | None = None,
        bitrate: int | None = None,
        timestamps: bool = False,
    ):
        av = av_module()
        if av is None:
            raise VssegError(f"{what}: H.264 output needs PyAV; install it with: pip install 'vsseg-edge[edge]'")
        codec = h264_encoder(av)
        if codec is None:
            raise VssegError(f"{what}: this PyAV's FFmpeg has no H.264 encoder (libx264)")
        self.what, self.timestamps = what, timestamps
        self.hw = (hw[0] - hw[0] % 2, hw[1] - hw[1] % 2)
        self._av = av
        try:
            self._container = av.open(target, "w", format=fmt, options=container_options or {})
        except Exception as exc:  # av.error.* are OSError subclasses with FFmpeg's message
            raise VssegError(f"{what}: cannot open for writing ({_one_line(exc)})") from None
        try:
            rate = Fraction(fps).limit_denominator(1001)
            self._stream = self._container.add_stream(codec, rate=rate)
            self._stream.width, self._stream.height = self.hw[1], self.hw[0]
            self._stream.pix_fmt = "yuv420p"
            if timestamps:
                self._stream.codec_context.time_base = Fraction(1, 1000)
            if bitrate:
                self._stream.codec_context.bit_rate = int(bitrate)
            self._stream.codec_context.options = dict(codec_options or {})
            self._container.start_encoding()  # the header now: an RTSP server that is not there fails here
        except Exception as exc:
            with contextlib.suppress(Exception):  # a container that never connected may fail to close too
                self._container.close()
            raise VssegError(f"{what}: cannot open for writing ({_one_line(exc)})") from None
        self._t0: float | None = None
        self._last_pts = -1
        self.frames = 0
        self._open = True

    def isOpened(self) -> bool:  # noqa: N802 (the cv2.VideoWriter name)
        return self._open

    def write(self, bgr: np.ndarray, t: float | None = None) -> None:
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(_even(bgr)), format="bgr24")
        if self.timestamps:
            t = time.perf_counter() if t is None else t
            self._t0 = t if self._t0 is None else self._t0
            pts = max(int(round((t - self._t0) * 1000)), self._last_pts + 1)  # strictly increasing, ms
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            self._last_pts = pts
        self._mux(self._stream.encode(frame))
        self.frames += 1

    def _mux(self, packets) -> None:
        try:
            self._container.mux(packets)
        except Exception as exc:
            raise self._failure(exc, "write failed") from None

    def _failure(self, exc: Exception, doing: str) -> VssegError:
        """A disk's refusal (FFmpeg's OSError: full, quota, read-only, I/O) is the one line every checked write
        gives, naming the target, not FFmpeg's temporary file; anything else (a stream's server gone) says what
        FFmpeg said."""
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return write_failure(self.what, exc)
        return VssegError(f"{self.what}: {doing} ({_one_line(exc)})")

    def release(self) -> None:
        """Flush the encoder and finalise the container (the MP4 index); safe to call more than once."""
        if not self._open:
            return
        self._open = False
        try:
            self._mux(self._stream.encode(None))
        finally:
            try:
                self._container.close()
            except Exception as exc:
                raise self._failure(exc, "could not finalise") from None


class H264FileWriter:
    """An H.264 MP4/MOV/MKV file (browser-playable: yuv420p, +faststart for MP4/MOV) written to a temporary
    file beside `path`, read back at `close` and only then renamed onto `path`.

    PyAV raises on a failed write (a full disk is an OSError from FFmpeg, at the frame whose packet made
    FFmpeg write out its buffer), which ends the run with one line naming `path` and removes the temporary
    file; at close (the buffer's rest and the MP4 index are written then) the finished file must open and
    hold every frame written, or it is removed too and the line says so. `abort()` drops the file. (The same
    contract as OpenCV's checked writer: `write`, `close`/`release`, `abort`.)
    """

    def __init__(self, path: str | Path, fps: float, hw: tuple[int, int], what: str):
        self.path, self.what = Path(path), what
        fmt = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}[self.path.suffix.lower()]
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path, "--save"))
        options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        try:
            self._writer = H264Writer(
                str(self._tmp),
                fmt,
                fps,
                hw,
                what=what,
                container_options=options,
                codec_options={"preset": "veryfast", "crf": "23"},
            )
        except BaseException:
            self.abort()
            raise
        self.hw = self._writer.hw

    @property
    def frames(self) -> int:
        return self._writer.frames if self._writer is not None else 0

    def isOpened(self) -> bool:  # noqa: N802 (the cv2 name)
        return self._writer is not None

    def write(self, bgr: np.ndarray) -> None:
        try:
            self._writer.write(bgr)
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """Finalise, check the file holds every frame, rename it onto `path`; or remove it and say why."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            writer.release()
            problem = _video_problem(self._tmp, writer.frames)
            if problem:
                raise VssegError(f"{self.what}: cannot write ({problem})")
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack.close()

    release = close  # the cv2.VideoWriter name, as VideoSink calls it

    def abort(self) -> None:
        """Drop the temporary file; nothing is renamed onto `path`."""
        from ..core.fileio import abort_atomic

        writer, self._writer = getattr(self, "_writer", None), None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.release()
        abort_atomic(self._stack)


def _video_problem(path: Path, frames: int) -> str | None:
    """Why the H.264 file at `path` is not one of `frames` frames (counted from its packets), or None."""
    if frames == 0:
        return None
    av = av_module()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            count = sum(1 for p in container.demux(stream) if p.size)
    except Exception as exc:
        return f"the finished file does not open ({_one_line(exc)})"
    return None if count == frames else f"the finished file holds {count} of the {frames} frames written"


def open_h264_writer(path: str | Path, fps: float, hw: tuple[int, int], what: str) -> H264FileWriter:
    """An H.264 file at `path`, written through a checked temporary file (`H264FileWriter`)."""
    return H264FileWriter(path, fps, hw, what)


def rtp_sdp(host: str, port: int, payload_type: int = RTP_PAYLOAD_TYPE) -> str:
    """The session description a receiver needs for our H.264 RTP stream (ffplay/VLC open it as a file)."""
    family = "IP6" if ":" in host else "IP4"
    return (
        f"v=0\no=- 0 0 IN {family} {host}\ns=vsseg-edge\nc=IN {family} {host}\nt=0 0\n"
        f"m=video {port} RTP/AVP {payload_type}\na=rtpmap:{payload_type} H264/90000\n"
        f"a=fmtp:{payload_type} packetization-mode=1\n"
    )


def parse_stream_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an rtp:// or rtsp:// output URL, or a one-line error."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in STREAM_SCHEMES:
        raise VssegError(f"--save {url}: expected rtp://HOST:PORT or rtsp://HOST:PORT/PATH")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or (scheme == "rtp" and not port):
        raise VssegError(f"--save {url}: expected {scheme}://HOST:PORT" + ("/PATH" if scheme == "rtsp" else ""))
    if scheme == "rtp" and parts.hostname in ("@", "0.0.0.0"):
        raise VssegError(f"--save {url}: an RTP output needs the receiver's address (rtp://HOST:PORT)")
    return scheme, parts.hostname, port or 554


class StreamSink(Sink):
    """The overlay as an H.264 RTP or RTSP stream (see the module docstring).

    The encoder opens at the first frame (its size); the frame rate given to the encoder is the source's
    nominal one (or 30) and only sets the keyframe interval and rate control: the packets carry the
    capture times.
    """

    needs_overlay = True

    def __init__(self, url: str, bitrate: int = DEFAULT_BITRATE, gop_seconds: float = 1.0):
        self.url = url
        self.scheme, self.host, self.port = parse_stream_url(url)
        if av_module() is None:
            raise VssegError(f"--save {url}: streaming needs PyAV; install it with: pip install 'vsseg-edge[edge]'")
        if bitrate <= 0:
            raise VssegError(f"--bitrate {bitrate}: expected a positive number of bits per second")
        self.bitrate, self.gop_seconds = bitrate, gop_seconds
        self.fps = 30.0
        self._writer: H264Writer | None = None
        self.frames = 0
        self.sdp = rtp_sdp(self.host, self.port) if self.scheme == "rtp" else None

    def start(self, source) -> None:
        nominal = getattr(source, "fps", None)
        self.fps = float(nominal) if nominal and 0 < nominal < 1000 else 30.0

    def _open(self, hw: tuple[int, int]) -> None:
        gop = max(1, int(round(self.fps * self.gop_seconds)))
        codec = {"preset": "ultrafast", "tune": "zerolatency", "g": str(gop), "bf": "0"}
        if self.scheme == "rtp":
            target, fmt, options = f"rtp://{self.host}:{self.port}?pkt_size=1200", "rtp", {}
            _log(
                f"--save {self.url}: H.264 RTP, payload type {RTP_PAYLOAD_TYPE}; a receiver opens this SDP "
                f"(e.g. ffplay -protocol_whitelist file,udp,rtp stream.sdp):\n{self.sdp.rstrip()}"
            )
        else:
            target, fmt, options = self.url, "rtsp", {"rtsp_transport": "tcp"}
        self._writer = H264Writer(
            target,
            fmt,
            self.fps,
            hw,
            what=f"--save {self.url}",
            container_options=options,
            codec_options=codec,
            bitrate=self.bitrate,
            timestamps=True,
        )

    def write(self, frame, labels, vis, hud) -> bool:
        if self._writer is None:
            self._open(vis.shape[:2])
        if _even(vis).shape[:2] != self._writer.hw:  # a source whose frame size changes
            import cv2

            vis = cv2.resize(vis, (self._writer.hw[1], self._writer.hw[0]), interpolation=cv2.INTER_AREA)
        self._writer.write(vis, frame.t_captured)
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.release()
