"""Source URIs as users write them, in jetson-utils' words (dusty-nv/jetson-inference, docs/aux-streaming.md).

    csi://0                     Jetson MIPI CSI camera 0 (nvarguscamerasrc through GStreamer)
    v4l2:///dev/video0          V4L2 camera (USB webcam); also /dev/video0 and a bare index 0
    rtsp://HOST:PORT/PATH       RTSP stream (also rtsps://, http(s)://, rtmp://, udp://, through FFmpeg)
    rtp://@:1234                RTP stream received on port 1234 (rtp://GROUP:PORT for multicast); RTP carries
                                no stream description, so the codec is given (--input-codec, default h264)
    file://my_video.mp4         a video file; file://my_image.jpg an image; file://my_directory/ a folder
    my_video.mp4  frames/  "frames/*.jpg"    the same without file:// (a glob: images in natural order)
    "v4l2src ! … ! appsink"     a GStreamer pipeline (OpenCV built with GStreamer)

Options (the same words as jetson-utils' video options; `SourceOptions`):
    --input-width / --input-height   ask a camera for this capture size (CSI, V4L2); other sources' frames
                                     are resized to it
    --input-rate                     frame rate asked of a camera (CSI, V4L2)
    --input-flip                     none | counterclockwise | rotate-180 | clockwise | horizontal | vertical |
                                     upper-right-diagonal | upper-left-diagonal: on a CSI camera in the
                                     nvvidconv element (flip-method), elsewhere on the host
    --sensor-mode                    nvarguscamerasrc sensor-mode (CSI)
    --input-codec                    h264 | h265 | vp8 | vp9 | mpeg4 | mjpeg (RTP input)

`parse_source` only reads the text (and the file system, for paths); opening is `runtime.sources.open_source`.
"""

from __future__ import annotations

import glob as _glob
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..core.errors import VssegError
from ..data.datasets import IMAGE_SUFFIXES, natural_key

FLIPS = (
    "none",
    "counterclockwise",
    "rotate-180",
    "clockwise",
    "horizontal",
    "upper-right-diagonal",
    "vertical",
    "upper-left-diagonal",
)  # index = nvvidconv flip-method
RTP_CODECS = {
    "h264": "H264/90000",
    "h265": "H265/90000",
    "vp8": "VP8/90000",
    "vp9": "VP9/90000",
    "mpeg4": "MP4V-ES/90000",
    "mjpeg": "JPEG/90000",
}
STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "udp", "tcp", "srt")
KINDS = ("v4l2", "csi", "stream", "rtp", "gstreamer", "video", "images")


@dataclass(frozen=True)
class SourceOptions:
    """How to open a source (jetson-utils' --input-* options); None leaves the device's own setting."""

    width: int | None = None
    height: int | None = None
    rate: float | None = None
    flip: str = "none"
    sensor_mode: int | None = None
    codec: str = "h264"

    def __post_init__(self):
        if (self.width is None) != (self.height is None):
            raise VssegError("--input-width and --input-height: give both or neither")
        for flag, value in (("--input-width", self.width), ("--input-height", self.height)):
            if value is not None and value < 1:
                raise VssegError(f"{flag} {value}: expected a positive number of pixels")
        if self.rate is not None and not 0 < self.rate <= 1000:
            raise VssegError(f"--input-rate {self.rate}: expected frames per second in (0, 1000]")
        if self.flip not in FLIPS:
            raise VssegError(f"--input-flip {self.flip}: expected one of {', '.join(FLIPS)}")
        if self.sensor_mode is not None and self.sensor_mode < 0:
            raise VssegError(f"--sensor-mode {self.sensor_mode}: expected 0 or more")
        if self.codec not in RTP_CODECS:
            raise VssegError(f"--input-codec {self.codec}: expected one of {', '.join(RTP_CODECS)}")

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) asked for, or None."""
        return None if self.width is None else (int(self.height), int(self.width))

    @property
    def flip_method(self) -> int:
        return FLIPS.index(self.flip)


@dataclass(frozen=True)
class SourceURI:
    """What a source text names: `kind` (one of KINDS) and where (`location`: a device, URL, path or pattern)."""

    kind: str
    location: str
    text: str
    index: int | None = None  # camera index (v4l2 /dev/videoN, csi://N)
    files: tuple[str, ...] = ()  # images of a glob, in natural order

    @property
    def live(self) -> bool:
        return self.kind in ("v4l2", "csi", "stream", "rtp", "gstreamer")


def _file_uri_path(text: str) -> str:
    """file://rel/x.mp4 → rel/x.mp4; file:///abs/x.mp4 → /abs/x.mp4 (jetson-utils accepts both)."""
    rest = text[len("file://") :]
    return unquote(rest)


def _v4l2(text: str, device: str) -> SourceURI:
    if not device.startswith("/dev/"):
        raise VssegError(f"--source {text}: expected v4l2:///dev/videoN (a V4L2 device path)")
    tail = device[len("/dev/video") :] if device.startswith("/dev/video") else ""
    return SourceURI("v4l2", device, text, int(tail) if tail.isdigit() else None)


def parse_source(text: str | int) -> SourceURI:
    """The source a text names (see the module docstring), or a one-line error naming it."""
    if isinstance(text, int) or (isinstance(text, str) and text.strip().isdigit()):
        index = int(text)
        return SourceURI("v4l2", f"/dev/video{index}", str(text), index)
    text = str(text).strip()
    if not text:
        raise VssegError("--source: empty; expected a file, folder, glob, csi://N, /dev/videoN or a URL")
    if "!" in text:
        return SourceURI("gstreamer", text, text)
    lower = text.lower()
    if lower.startswith("csi://"):
        rest = text[len("csi://") :]
        if not rest.isdigit():
            raise VssegError(f"--source {text}: expected csi://N with N the sensor id, e.g. csi://0")
        return SourceURI("csi", rest, text, int(rest))
    if lower.startswith("v4l2://"):
        return _v4l2(text, text[len("v4l2://") :])
    if text.startswith("/dev/"):
        return _v4l2(text, text)
    if lower.startswith("rtp://"):
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            port = None
        if not port:
            raise VssegError(f"--source {text}: expected rtp://@:PORT (or rtp://GROUP:PORT for multicast)")
        return SourceURI("rtp", text, text, None)
    scheme = lower.split("://", 1)[0] if "://" in lower else ""
    if scheme in STREAM_SCHEMES:
        return SourceURI("stream", text, text)
    if scheme and scheme != "file":
        raise VssegError(
            f"--source {text}: unknown scheme {scheme}://; expected csi://, v4l2://, rtsp://, rtp://, file:// or a path"
        )
    return _path_source(text, _file_uri_path(text) if scheme == "file" else text)


def _path_source(text: str, path_text: str) -> SourceURI:
    if any(c in path_text for c in "*?["):
        files = sorted(
            (
                f
                for f in _glob.glob(path_text, recursive=True)
                if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_SUFFIXES
            ),
            key=natural_key,
        )
        if not files:
            raise VssegError(f"--source {text}: no images match this pattern ({', '.join(IMAGE_SUFFIXES)})")
        return SourceURI("images", path_text, text, files=tuple(files))
    path = Path(path_text).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        return SourceURI("images", str(path), text)
    if path.is_file():
        return SourceURI("video", str(path), text)
    raise VssegError(f"--source {text}: no such file or folder")


def rtp_input_sdp(uri: SourceURI, codec: str, payload_type: int = 96) -> str:
    """The session description FFmpeg needs to receive an RTP stream (rtp://@:PORT or rtp://GROUP:PORT)."""
    parts = urlsplit(uri.location)
    host = parts.hostname if parts.hostname and parts.hostname != "@" else "0.0.0.0"
    return (
        f"v=0\no=- 0 0 IN IP4 {host}\ns=vsseg-edge input\nc=IN IP4 {host}\nt=0 0\n"
        f"m=video {parts.port} RTP/AVP {payload_type}\na=rtpmap:{payload_type} {RTP_CODECS[codec]}\n"
        + (f"a=fmtp:{payload_type} packetization-mode=1\n" if codec in ("h264", "h265") else "")
    )


def flip_frame(image, flip: str):
    """Apply a jetson-utils flip method to a BGR frame on the host (what nvvidconv does on a CSI camera)."""
    import cv2
    import numpy as np

    if flip == "none":
        return image
    if flip == "counterclockwise":
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if flip == "clockwise":
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if flip == "rotate-180":
        return cv2.rotate(image, cv2.ROTATE_180)
    if flip == "horizontal":
        return cv2.flip(image, 1)
    if flip == "vertical":
        return cv2.flip(image, 0)
    if flip == "upper-left-diagonal":  # transpose: the main diagonal stays
        return np.ascontiguousarray(image.transpose(1, 0, 2))
    if flip == "upper-right-diagonal":  # anti-transpose
        return np.ascontiguousarray(image[::-1, ::-1].transpose(1, 0, 2))
    raise VssegError(f"--input-flip {flip}: expected one of {', '.join(FLIPS)}")
