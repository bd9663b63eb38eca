"""Source URIs in jetson-utils' words: parsing, options, host-side flips, the CSI pipeline, globs and file://."""

from __future__ import annotations

import numpy as np
import pytest

from vsseg_edge.core.errors import VssegError
from vsseg_edge.runtime import sources
from vsseg_edge.runtime.sources import FolderSource, VideoFileSource, csi_pipeline, open_source
from vsseg_edge.runtime.uri import FLIPS, SourceOptions, flip_frame, parse_source, rtp_input_sdp


@pytest.mark.parametrize(
    "text, kind, location, index",
    [
        ("csi://0", "csi", "0", 0),
        ("csi://2", "csi", "2", 2),
        ("v4l2:///dev/video0", "v4l2", "/dev/video0", 0),
        ("/dev/video1", "v4l2", "/dev/video1", 1),
        ("/dev/v4l/by-id/usb-Logitech-video-index0", "v4l2", "/dev/v4l/by-id/usb-Logitech-video-index0", None),
        ("3", "v4l2", "/dev/video3", 3),
        ("rtsp://user:pw@10.0.0.2:554/stream1", "stream", "rtsp://user:pw@10.0.0.2:554/stream1", None),
        ("http://cam.local/mjpg", "stream", "http://cam.local/mjpg", None),
        ("rtp://@:1234", "rtp", "rtp://@:1234", None),
        ("rtp://224.0.0.1:5000", "rtp", "rtp://224.0.0.1:5000", None),
        ("v4l2src ! videoconvert ! appsink", "gstreamer", "v4l2src ! videoconvert ! appsink", None),
    ],
)
def test_device_and_network_uris(text, kind, location, index):
    uri = parse_source(text)
    assert (uri.kind, uri.location, uri.index) == (kind, location, index)
    assert uri.live


@pytest.mark.parametrize(
    "text, message",
    [
        ("csi://front", "expected csi://N with N the sensor id"),
        ("v4l2://video0", r"expected v4l2:///dev/videoN"),
        ("rtp://@", r"expected rtp://@:PORT"),
        ("ftp://host/x.mp4", r"unknown scheme ftp://"),
        ("", "--source: empty"),
    ],
)
def test_bad_uris_fail_in_one_line(text, message):
    with pytest.raises(VssegError, match=message) as info:
        parse_source(text)
    assert "\n" not in str(info.value)


def test_files_folders_globs_and_file_uris(video_file, image_folder, tmp_path, monkeypatch):
    assert parse_source(str(video_file)).kind == "video"
    assert parse_source(f"file://{video_file}").location == str(video_file)  # file:///abs/path
    monkeypatch.chdir(video_file.parent)
    assert parse_source(f"file://{video_file.name}").location == video_file.name  # file://relative (jetson)
    assert parse_source(f"file://{image_folder}/").kind == "images"
    # a glob: images only, natural order (frame_2 before frame_10), whatever the shell would have done
    import cv2

    for i in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"frame_{i}.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    uri = parse_source(str(tmp_path / "frame_*"))
    assert uri.kind == "images" and [f.rsplit("/", 1)[1] for f in uri.files] == [
        "frame_1.jpg",
        "frame_2.jpg",
        "frame_10.jpg",
    ]
    src = open_source(str(tmp_path / "*.jpg"))
    assert isinstance(src, FolderSource) and [p.name for p in src.files] == [
        "frame_1.jpg",
        "frame_2.jpg",
        "frame_10.jpg",
    ]
    assert isinstance(open_source(f"file://{video_file}"), VideoFileSource)
    with pytest.raises(VssegError, match=r"^--source .*\*\.png: no images match this pattern"):
        parse_source(str(tmp_path / "*.png"))
    with pytest.raises(VssegError, match="no such file or folder"):
        parse_source("file:///nonexistent/video.mp4")


def test_options_are_checked_in_jetson_words():
    assert SourceOptions(width=1920, height=1080).size == (1080, 1920)
    assert SourceOptions(flip="rotate-180").flip_method == 2
    assert SourceOptions(flip="upper-left-diagonal").flip_method == 7
    for kwargs, message in (
        ({"width": 640}, "--input-width and --input-height: give both"),
        ({"flip": "mirror"}, "--input-flip mirror: expected one of none, counterclockwise"),
        ({"rate": 0}, "--input-rate 0"),
        ({"codec": "av1"}, "--input-codec av1"),
        ({"sensor_mode": -1}, "--sensor-mode -1"),
    ):
        with pytest.raises(VssegError, match=message):
            SourceOptions(**kwargs)


def test_host_flips_match_nvvidconv_flip_methods():
    img = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3, 1).repeat(3, axis=2)  # [[0 1 2], [3 4 5]]
    expect = {
        "none": [[0, 1, 2], [3, 4, 5]],
        "counterclockwise": [[2, 5], [1, 4], [0, 3]],
        "rotate-180": [[5, 4, 3], [2, 1, 0]],
        "clockwise": [[3, 0], [4, 1], [5, 2]],
        "horizontal": [[2, 1, 0], [5, 4, 3]],
        "vertical": [[3, 4, 5], [0, 1, 2]],
        "upper-left-diagonal": [[0, 3], [1, 4], [2, 5]],  # transpose
        "upper-right-diagonal": [[5, 2], [4, 1], [3, 0]],  # across the other diagonal
    }
    assert set(expect) == set(FLIPS)
    for flip, want in expect.items():
        assert flip_frame(img, flip)[..., 0].tolist() == want, flip


def test_csi_pipeline_takes_sensor_mode_size_rate_and_flip(monkeypatch):
    pipe = csi_pipeline(1, width=1920, height=1080, fps=59.94, flip=2, sensor_mode=3)
    assert "sensor-id=1 sensor-mode=3" in pipe and "width=1920, height=1080" in pipe
    assert "framerate=59940/1000" in pipe and "flip-method=2" in pipe
    assert "sensor-mode" not in csi_pipeline() and "framerate=30/1" in csi_pipeline()
    seen = {}
    monkeypatch.setattr(sources, "_opencv_has", lambda name: True)
    monkeypatch.setattr(sources, "_stream_opener", lambda pipe, api, what: seen.setdefault("pipe", pipe) and _fail())
    with pytest.raises(VssegError, match="no camera here"):
        open_source("csi://1", options=SourceOptions(width=1920, height=1080, rate=60, flip="clockwise", sensor_mode=0))
    assert "sensor-id=1 sensor-mode=0" in seen["pipe"] and "flip-method=3" in seen["pipe"]
    assert "framerate=60/1" in seen["pipe"] and "width=1920, height=1080" in seen["pipe"]


def _fail():
    raise VssegError("no camera here")


def test_csi_and_v4l2_fail_in_one_line_without_the_device(monkeypatch):
    monkeypatch.setattr(sources, "_opencv_has", lambda name: False)
    with pytest.raises(VssegError, match=r"^--source csi://0: this OpenCV build has no GStreamer support"):
        open_source("csi://0")
    with pytest.raises(VssegError, match=r"^--source /dev/video97: no camera at index 97"):
        open_source("/dev/video97")
    with pytest.raises(VssegError, match=r"^--source v4l2:///dev/video97: no camera at index 97"):
        open_source("v4l2:///dev/video97")


def test_flip_and_resize_apply_to_file_frames(video_file):
    plain = open_source(str(video_file)).start()
    first = plain.get(timeout=5.0).image
    plain.stop()
    src = open_source(str(video_file), options=SourceOptions(flip="clockwise", width=32, height=48)).start()
    frame = src.get(timeout=5.0).image
    src.stop()
    import cv2

    want = cv2.resize(cv2.rotate(first, cv2.ROTATE_90_CLOCKWISE), (32, 48), interpolation=cv2.INTER_AREA)
    assert frame.shape == (48, 32, 3) and np.array_equal(frame, want)


def test_rtp_input_description_names_port_and_codec():
    sdp = rtp_input_sdp(parse_source("rtp://@:5004"), "h265")
    assert "m=video 5004 RTP/AVP 96" in sdp and "a=rtpmap:96 H265/90000" in sdp and "c=IN IP4 0.0.0.0" in sdp
    assert "c=IN IP4 239.1.1.1" in rtp_input_sdp(parse_source("rtp://239.1.1.1:5004"), "h264")
