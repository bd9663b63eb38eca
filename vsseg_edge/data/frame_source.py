"""The one answer to "open these frames": a dataset root, a folder of images, a video file or a folder of clips.

`calibrate --frames`, `bench --dataset`, `eval --dataset` and the calibration gate all take a path and
need a `SegmentationDataset`; this resolver is what they share, so every command accepts the same inputs
and refuses a bad one with the same one-line error naming the flag:

    dataset root        synth.json / leftImg8bit_sequence / CamVid layout → that dataset (`open_dataset`)
    folder of images    → one unlabelled sequence ("images")
    video file          → one unlabelled clip, decoded once into the frame cache ("video")
    folder of clips     → one unlabelled sequence per clip ("video")

Video files and folders of clips are the unlabelled-video dataset kind (`open_dataset(path, split,
kind="video")`). `frame_source_kind` names the kind without opening anything (a video is not decoded).
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import VssegError
from .datasets import KINDS, SegmentationDataset, detect_kind, open_dataset

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
EXPECTED = "a dataset folder, a folder of images, a video file or a folder of clips"
UNLABELLED = ("images", "video")  # kinds whose frames have no labels and no splits


def frame_source_kind(path: str | Path, flag: str = "--frames") -> str:
    """"video", "images" or a dataset kind (cityscapes, synthetic, camvid) for `path`; one-line error otherwise."""
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
        raise VssegError(f"{flag} {path}: no frames found (expected {EXPECTED}: a Cityscapes / CamVid / "
                         "synthetic root, image files, or video files / folders of frames)") from None


def open_frame_source(path: str | Path, split: str = "val", kind: str = "auto",
                      flag: str = "--dataset") -> SegmentationDataset:
    """Open `path` as a dataset (see the module docstring); `kind` other than "auto" forces a layout."""
    path = Path(path)
    if kind == "auto":
        kind = frame_source_kind(path, flag)
    if kind == "video":
        return open_video_frames(path, split)
    return open_dataset(path, split, kind)


def open_video_frames(path: Path, split: str) -> SegmentationDataset:
    """A video file or a folder of clips as the unlabelled-video dataset kind."""
    if "video" in KINDS:
        return open_dataset(path, split, kind="video")
    if path.is_file():  # until the video dataset kind exists: one file, decoded once into the frame cache
        return open_dataset(_decoded_frames(path), split, kind="images")
    raise VssegError(f"{path}: folders of clips need the video dataset kind, which this build lacks")


def _decoded_frames(path: Path) -> Path:
    """The frames of a video file as PNGs in the user frame cache, decoded once (atomically, per file version)."""
    import hashlib
    import os
    import shutil
    import tempfile

    import cv2

    from ..core.cache import user_cache_dir

    st = path.resolve().stat()
    key = hashlib.sha1(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{cv2.__version__}".encode()).hexdigest()
    out = user_cache_dir("frames") / f"{path.stem}-{key[:16]}"
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise VssegError(f"{path}: OpenCV cannot open this video")
        count = 0
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if not cv2.imwrite(str(tmp / f"{count:06d}.png"), frame, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
                raise VssegError(f"{tmp}: cannot write decoded frames (disk full?)")
            count += 1
        cap.release()
        if count == 0:
            raise VssegError(f"{path}: video has no frames")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
