"""The one frame-source resolver: dataset root | image folder | video file, the same errors for every flag."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vsseg_edge.core.errors import VssegError
from vsseg_edge.data.frame_source import frame_source_kind, open_frame_source


def _video(path, n=5, hw=(32, 48)):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (hw[1], hw[0]))
    if not vw.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG/AVI")
    for i in range(n):
        vw.write(np.full((*hw, 3), 30 * i, np.uint8))
    vw.release()
    return path


def test_dataset_images_and_video_open_as_datasets(synth_root, tmp_path):
    assert frame_source_kind(synth_root) == "synthetic"
    ds = open_frame_source(synth_root, "val")
    assert ds.name == "synthetic" and len(ds) == ds.num_frames  # every synthetic frame is labelled
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((8, 8, 3), i, np.uint8))
    imgs = open_frame_source(folder, "val")
    assert (frame_source_kind(folder), imgs.name, imgs.num_frames, len(imgs)) == ("images", "images", 3, 0)
    clip = _video(tmp_path / "clip.avi")
    assert frame_source_kind(clip) == "video"
    video = open_frame_source(clip, "val")
    assert video.num_frames == 5 and len(video) == 0
    first, last = (video.read_image(r) for r in (video.frames()[0], video.frames()[-1]))
    assert abs(int(first.mean())) <= 6 and abs(int(last.mean()) - 120) <= 6  # decoded in order
    again = open_frame_source(clip, "val")  # decoded once: the same cached files
    assert [r.image for r in again.frames()] == [r.image for r in video.frames()]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.mkdir(), "folder is empty"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")), "no frames found"),
        (lambda p: None, "not found"),
        (lambda p: p.write_text("x"), "expected a dataset folder"),
    ],
)
def test_unusable_sources_name_the_flag_in_one_line(tmp_path, make, expected):
    src = tmp_path / "frames.txt"
    make(src)
    with pytest.raises(VssegError, match=expected) as err:
        open_frame_source(src, "val", flag="--dataset")
    assert "\n" not in str(err.value) and str(err.value).startswith("--dataset ")
