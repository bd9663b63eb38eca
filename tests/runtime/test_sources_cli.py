"""Source selection and one-line errors; the runtime's import boundary (no torch / tensorrt at import)."""

from __future__ import annotations

import time

import pytest

from tests.runtime.conftest import wait_for
from vsseg_edge.core.errors import VssegError
from vsseg_edge.runtime import sources
from vsseg_edge.runtime.sources import FolderSource, VideoFileSource, csi_pipeline, open_source


def test_files_and_folders_pick_ordered_sources(video_file, image_folder, tmp_path):
    assert isinstance(open_source(str(video_file)), VideoFileSource)
    folder = open_source(str(image_folder))
    assert isinstance(folder, FolderSource) and [p.name for p in folder.files] == sorted(p.name for p in folder.files)
    with pytest.raises(VssegError, match=r"^--source .*nothing: no such file or folder$"):
        open_source(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VssegError, match="no images"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(VssegError, match="OpenCV cannot open this video"):
        open_source(str(tmp_path / "junk.mp4"))


def test_gstreamer_and_csi_need_an_opencv_with_gstreamer(monkeypatch):
    monkeypatch.setattr(sources, "_opencv_has", lambda name: False)
    with pytest.raises(VssegError, match="no GStreamer support"):
        open_source("videotestsrc ! videoconvert ! appsink")
    with pytest.raises(VssegError, match="^--csi: .*no GStreamer support"):
        open_source(csi=True)
    pipe = csi_pipeline(width=1280, height=720)
    assert pipe.startswith("nvarguscamerasrc") and "width=1280, height=720" in pipe and "appsink drop=true" in pipe


def test_unreachable_stream_fails_fast_with_one_line():
    t0 = time.perf_counter()
    with pytest.raises(VssegError, match=r"^--source rtsp://127.0.0.1:9/cam: OpenCV cannot open this stream$"):
        open_source("rtsp://127.0.0.1:9/cam")
    assert time.perf_counter() - t0 < 15.0


def test_show_without_display_is_refused(monkeypatch):
    from vsseg_edge.runtime.sinks import WindowSink

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(VssegError, match="^--show: no display"):
        WindowSink()


def test_end_of_folder_reaches_a_consumer_slower_than_the_reader(image_folder):
    src = FolderSource(image_folder, prefetch=1).start()
    got = [src.get(timeout=5.0).index for _ in range(5)]
    wait_for(src._queue.full, what="the last frame in the queue")  # the reader is at the end marker now,
    time.sleep(1.5)  # which must wait behind the last frame, however long the consumer takes
    while (f := src.get(timeout=5.0)) is not None:
        got.append(f.index)
    assert got == list(range(6))


def test_folder_frames_come_in_natural_order(tmp_path):
    """frame_2 before frame_10 (plain string order would put frame_10 first); zero-padded names keep their order."""
    from pathlib import Path

    import cv2
    import numpy as np

    from vsseg_edge.data.datasets import natural_key

    for i in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"frame_{i}.png"), np.full((4, 6, 3), i, np.uint8))
    src = FolderSource(tmp_path).start()
    values = []
    while (f := src.get(timeout=5.0)) is not None:
        values.append(int(f.image[0, 0, 0]))
    assert values == [1, 2, 10]
    padded = [Path(f"x_{i:06d}.png") for i in (30, 4, 100)]
    assert sorted(padded, key=natural_key) == sorted(padded)
