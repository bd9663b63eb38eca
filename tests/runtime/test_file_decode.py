"""Video files with undecodable frames or a truncated end, made for real (MJPG AVI, bytes zeroed or cut).

OpenCV's read fails without moving on both for an undecodable frame and at the end of the file; the
source must count the first as skipped frames and must not count the second as anything.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.conftest import H, W, make_frames, read_video
from vsseg_edge.runtime.backends import open_backend
from vsseg_edge.runtime.pipeline import Pipeline
from vsseg_edge.runtime.sinks import MaskSink
from vsseg_edge.runtime.sources import VideoFileSource

N = 12


def write_avi(path: Path, n: int = N) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    for f in make_frames(n):
        writer.write(f)
    writer.release()
    return path


def frame_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every frame's data in the AVI's `movi` list, in order."""
    movi = data.index(b"movi")
    end = movi + struct.unpack("<I", data[movi - 4 : movi])[0]
    chunks, i = [], movi + 4
    while i + 8 <= end:
        size = struct.unpack("<I", data[i + 4 : i + 8])[0]
        if data[i + 2 : i + 4] == b"dc":
            chunks.append((i + 8, size))
        i += 8 + size + (size & 1)
    return chunks


def drain(src: VideoFileSource) -> list[int]:
    src.start()
    got = []
    while (f := src.get(timeout=10.0)) is not None:
        got.append(f.index)
    return got


def test_undecodable_frames_are_skipped_counted_and_leave_a_gap(tmp_path, onnx_model, capsys):
    path = write_avi(tmp_path / "broken.avi")
    data = bytearray(path.read_bytes())
    chunks = frame_chunks(bytes(data))
    assert len(chunks) == N
    for k in (4, 5):  # two frames in a row whose JPEG data is gone
        off, size = chunks[k]
        data[off : off + size] = bytes(size)
    path.write_bytes(bytes(data))

    src = VideoFileSource(path)
    assert drain(src) == [0, 1, 2, 3] + list(range(6, N))  # positions in the file: a gap where skipped
    assert src.decode_failures == 2
    assert "frames 4-5 failed to decode, skipped" in capsys.readouterr().err

    with open_backend(onnx_model, threads=1) as be:
        result = Pipeline(VideoFileSource(path), be, [MaskSink(tmp_path / "m")], handle_signals=False).run()
    assert result.frames == N - 2 and result.summary["decode_failures"] == 2 and result.error is None
    names = sorted(p.stem for p in (tmp_path / "m").glob("*.png"))
    assert names == [f"{i:06d}" for i in (0, 1, 2, 3, *range(6, N))]  # masks line up with the file's frames


def test_truncated_file_ends_where_it_is_cut_without_phantom_failures(tmp_path, capsys):
    path = write_avi(tmp_path / "cut.avi")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])  # an interrupted copy: the header still says 12 frames
    readable = len(read_video(path))
    assert 0 < readable < N

    src = VideoFileSource(path)
    assert src.frame_count == N
    assert drain(src) == list(range(readable))
    assert src.decode_failures == 0  # the old rule counted every missing frame up to the header's count
    err = capsys.readouterr().err
    assert f"ends after {readable} of the {N} frames its header announces" in err
    assert "failed to decode" not in err


class FakeCapture:
    """A cv2.VideoCapture stand-in whose reads follow `script` (True: a frame, False: a failed read)."""

    def __init__(self, script: list[bool], frame_count: int = 0):
        self.script, self.frame_count, self.reads = list(script), frame_count, 0

    def isOpened(self):
        return True

    def get(self, prop):
        import cv2

        return {cv2.CAP_PROP_FRAME_COUNT: self.frame_count, cv2.CAP_PROP_FPS: 25.0}.get(prop, 0.0)

    def read(self):
        ok = self.script[self.reads] if self.reads < len(self.script) else False
        self.reads += 1
        return (True, np.zeros((H, W, 3), np.uint8)) if ok else (False, None)

    def release(self):
        pass


@pytest.mark.parametrize("frame_count, reads_after_the_end", [(0, 4), (4, 1)])
def test_reads_after_the_last_frame_are_bounded(monkeypatch, tmp_path, frame_count, reads_after_the_end):
    """No frame count (some containers): `max_bad_run` failed reads end it; with a count, one read past it."""
    import cv2

    cap = FakeCapture([True, True, False, True], frame_count=frame_count)
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a, **k: cap)
    src = VideoFileSource(tmp_path / "any.mp4", max_bad_run=3)
    assert drain(src) == [0, 1, 3] and src.decode_failures == 1
    assert cap.reads == 4 + reads_after_the_end
