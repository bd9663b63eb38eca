"""Calibration frames: seeded, deterministic, from the train split, disjoint from the gate's frames."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vsseg_edge.calib.frames import calibration_frames, evaluation_frames, frames_sha1
from vsseg_edge.core.errors import VssegError


def test_dataset_sample_is_seeded_and_from_train(cs_root):
    a, held = calibration_frames(cs_root, 5, seed=3)
    b, _ = calibration_frames(cs_root, 5, seed=3)
    c, _ = calibration_frames(cs_root, 5, seed=4)
    assert held is None  # datasets are gated on their val split
    assert [f.key for f in a.frames] == [f.key for f in b.frames]
    assert a.sha1 == b.sha1 != c.sha1
    assert len(a) == 5 and all(f.key.startswith("leftImg8bit_sequence/train/") for f in a.frames)
    rec = a.record()
    assert rec == {
        "source": str(cs_root),
        "kind": "cityscapes",
        "split": "train",
        "count": 5,
        "seed": 3,
        "labelled": False,
        "sha1": frames_sha1([f.key for f in a.frames]),
    }
    img = a.frames[0].read()
    assert img.dtype == np.uint8 and img.shape == (64, 128, 3)


def test_asking_for_more_frames_than_exist_takes_all_train_frames(cs_root):
    a, _ = calibration_frames(cs_root, 500, seed=0)
    assert len(a) == 12


def test_gate_frames_come_from_val_with_labels(cs_root):
    ev = evaluation_frames(cs_root, 4, seed=0)
    assert ev.split == "val" and len(ev) == 4 and ev.labelled
    assert all(f.key.startswith("leftImg8bit_sequence/val/") for f in ev.frames)
    lab = ev.frames[0].read_label()
    assert lab.shape == (64, 128) and set(np.unique(lab)) <= {0, 1, 2, 8, 13}  # labelIds → trainIds


def test_image_folder_holds_out_disjoint_frames(image_folder):
    calib, held = calibration_frames(image_folder, 100, seed=0, holdout=3)
    assert len(held) == 3 and len(calib) == 7
    assert not {f.key for f in calib.frames} & {f.key for f in held.frames}
    again, _ = calibration_frames(image_folder, 100, seed=0, holdout=3)
    assert again.sha1 == calib.sha1


def test_video_frames_are_decoded(tmp_path):
    import cv2

    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 64))
    if not vw.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG/AVI")
    for i in range(12):
        vw.write(np.full((64, 128, 3), i * 20, np.uint8))
    vw.release()
    calib, held = calibration_frames(path, 6, seed=1, holdout=2)
    assert len(calib) == 6 and len(held) == 2 and calib.kind in ("video", "images")
    frame = calib.frames[0].read()
    idx = int(re.findall(r"\d+", calib.frames[0].key)[-1])
    assert frame.shape == (64, 128, 3) and abs(int(frame.mean()) - idx * 20) <= 6
    again, _ = calibration_frames(path, 6, seed=1, holdout=2)  # decoded once: the cached frames, same draw
    assert again.sha1 == calib.sha1


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.mkdir(), "folder is empty"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")), "no frames found"),
        (lambda p: None, "not found"),
    ],
)
def test_unusable_frame_sources_give_one_line_errors(tmp_path, make, expected):
    src = tmp_path / "frames"
    make(src)
    with pytest.raises(VssegError, match=expected) as err:
        calibration_frames(src, 10)
    assert "\n" not in str(err.value) and "--frames" in str(err.value)
