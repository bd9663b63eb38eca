"""The one answer to "open these frames": a dataset root, a folder of images, a video file or a folder of clips.

`calibrate --frames`, `bench --dataset`, `eval --dataset` and the calibration gate all take a path and
need a `SegmentationDataset`; this resolver is what they share, so every command accepts the same inputs
and refuses a bad one with the same one-line error naming the flag:

    dataset root        synth.json / leftImg8bit_sequence / CamVid layout → that dataset (`open_dataset`)
    folder of images    → one unlabelled sequence ("images")
    video file          → one unlabelled clip, decoded once into the frame cache ("video")
    folder of clips     → one unlabelled sequence per clip ("video")

Video files and folders of clips are the unlabelled-video dataset kind (`open_dataset(path, split,
kind="video")`, `data.video`). `frame_source_kind` names the kind without opening anything (a video is
not decoded).
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import VssegError
from .datasets import SegmentationDataset, detect_kind, open_dataset
from .video import VIDEO_SUFFIXES

EXPECTED = "a dataset folder, a folder of images, a video file or a folder of clips"
UNLABELLED = ("images", "video")  # kinds whose frames have no labels and no splits


def frame_source_kind(path: str | Path, flag: str = "--frames") -> str:
    """ "video", "images" or a dataset kind (cityscapes, synthetic, camvid) for `path`; one-line error otherwise."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return "video"
        raise VssegError(f"{flag} {path}: expected {EXPECTED} (video files: {', '.join(VIDEO_SUFFIXES)})")
    if not path.is_dir():
        raise VssegError(f"{flag} {path}: not found (expected {EXPECTED})")
    if not any(path.iterdir()):
        raise VssegError(f"{flag} {path}: folder is empty (expected {EXPECTED})")
    try:
        return detect_kind(path)
    except VssegError:
        raise VssegError(
            f"{flag} {path}: no frames found (expected {EXPECTED}: a Cityscapes / CamVid / "
            "synthetic root, image files, or video files / folders of frames)"
        ) from None


def open_frame_source(
    path: str | Path, split: str = "val", kind: str = "auto", flag: str = "--dataset", classes=None
) -> SegmentationDataset:
    """Open `path` as a dataset (see the module docstring); `kind` other than "auto" forces a layout;
    `classes` (a set name, class file or LabelSet) as `open_dataset` takes it."""
    path = Path(path)
    if kind == "auto":
        kind = frame_source_kind(path, flag)
    return open_dataset(path, split, kind, classes=classes)
