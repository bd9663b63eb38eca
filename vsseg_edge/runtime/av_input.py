"""RTP input through PyAV: `--source rtp://@:PORT` (jetson-utils' word for a received RTP stream).

RTP carries no stream description, so the receiver is given one: a session description (SDP) built from
the port and `--input-codec` is written to a temporary file that FFmpeg opens (`protocol_whitelist` lets
it go from the file to UDP; the probe stops at the first packets that describe the stream (probesize 32),
instead of waiting for FFmpeg's default 5 MB or 5 s of stream time, so a run starts as soon as the sender
does). `AvCapture` then looks like a cv2.VideoCapture to `LiveSource` (`read`,
`release`, `isOpened`, `get`), so reconnects, latest-frame dropping and stall detection stay the live
source's. OpenCV's FFmpeg backend would need the same SDP file plus an environment variable to allow it;
PyAV takes the options directly.
"""

from __future__ import annotations

import os
import tempfile

from ..core.errors import VssegError
from .uri import SourceURI, rtp_input_sdp


class AvCapture:
    """A PyAV input container decoded frame by frame into BGR arrays, cv2.VideoCapture style."""

    def __init__(self, container, description: str, cleanup=None):
        self._container = container
        self._frames = container.decode(video=0)
        self._cleanup = cleanup
        self.description = description
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self._fps = float(rate) if rate else 0.0

    def isOpened(self) -> bool:  # noqa: N802 (the cv2 name)
        return self._container is not None

    def read(self):
        if self._container is None:
            return False, None
        try:
            frame = next(self._frames)
        except StopIteration:
            return False, None
        except Exception:  # a read timeout or a broken stream: LiveSource reconnects
            return False, None
        return True, frame.to_ndarray(format="bgr24")

    def get(self, prop: int) -> float:
        import cv2

        return self._fps if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        container, self._container = self._container, None
        try:
            if container is not None:
                container.close()
        finally:
            if self._cleanup is not None:
                self._cleanup()
                self._cleanup = None


def rtp_opener(uri: SourceURI, codec: str, timeout_s: float = 10.0):
    """An opener for LiveSource: each call writes the SDP to a temporary file and opens it with PyAV."""
    try:
        import av
    except ImportError:
        raise VssegError(
            f"--source {uri.text}: RTP input needs PyAV; install it with: pip install 'vsseg-edge[edge]'"
        ) from None
    sdp = rtp_input_sdp(uri, codec)

    def open_rtp():
        fd, path = tempfile.mkstemp(prefix="vsseg-edge-rtp-", suffix=".sdp")
        with os.fdopen(fd, "w") as fh:
            fh.write(sdp)

        def remove():
            if os.path.exists(path):
                os.unlink(path)

        container = None
        try:
            container = av.open(
                path,
                format="sdp",
                timeout=(timeout_s, timeout_s),
                options={"protocol_whitelist": "file,udp,rtp", "reorder_queue_size": "0", "probesize": "32"},
            )
            return AvCapture(container, uri.text, remove)
        except Exception as exc:  # av.error.* (timeouts, bad SDP) or no video stream in it
            if container is not None:
                container.close()
            remove()
            msg = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise VssegError(f"--source {uri.text}: no RTP video received ({msg})") from None

    return open_rtp
