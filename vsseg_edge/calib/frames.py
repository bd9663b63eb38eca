"""Which frames calibrate a model, and which frames judge it.

Calibration frames come from a dataset's **train** split (a fixed, seeded sample; never the frames the
model is evaluated on), from any folder of images, or from a video. Accuracy-gate frames are held out:
the dataset's val split (with labels), or, for a plain folder / video, frames disjoint from the calibration
sample. The choice is recorded in the Q/DQ manifest (`FrameSet.record`), including a sha1 of the sorted
frame keys so that two calibrations can be compared without the frames.

Only numpy, OpenCV and `vsseg_edge.data.datasets` are used (no torch).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import VssegError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Frame:
    """One frame: a stable `key` (path relative to the source, or `video#index`) and lazy readers."""

    key: str
    read: Callable[[], np.ndarray]  # -> BGR uint8 HxWx3
    read_label: Callable[[], np.ndarray] | None = None  # -> uint8 HxW train ids, 255 = ignore


@dataclass
class FrameSet:
    """Frames drawn from one source, with what is needed to record and reproduce the draw."""

    source: str
    kind: str  # dataset kind (cityscapes, synthetic, camvid), "images" or "video"
    split: str | None
    seed: int
    frames: list[Frame]
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def labelled(self) -> bool:
        return bool(self.frames) and all(f.read_label is not None for f in self.frames)

    @property
    def sha1(self) -> str:
        return frames_sha1([f.key for f in self.frames])

    def record(self) -> dict:
        """The manifest entry: source, split, count, seed and the sha1 of the sorted frame keys."""
        return {
            "source": self.source,
            "kind": self.kind,
            "split": self.split,
            "count": len(self.frames),
            "seed": self.seed,
            "labelled": self.labelled,
            "sha1": self.sha1,
        }


def frames_sha1(keys: list[str]) -> str:
    """sha1 over the sorted frame keys, one per line: the identity of a frame selection."""
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()


def source_kind(path: str | Path, flag: str = "--frames") -> str:
    """"video", "images" or a dataset kind for `path`; a one-line error naming `flag` when nothing usable is there."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return "video"
        raise VssegError(f"{flag} {path}: expected a dataset folder, a folder of images or a video {VIDEO_SUFFIXES}")
    if not path.is_dir():
        raise VssegError(f"{flag} {path}: not found (expected a dataset folder, a folder of images or a video)")
    if not any(path.iterdir()):
        raise VssegError(f"{flag} {path}: folder is empty (expected a dataset root or image files)")
    from ..data.datasets import detect_kind

    try:
        return detect_kind(path)
    except VssegError:
        raise VssegError(
            f"{flag} {path}: no frames found (expected a dataset root (Cityscapes/CamVid/synthetic layout) "
            "or image files)"
        ) from None


def calibration_frames(source: str | Path, num_frames: int, seed: int = 0, split: str = "train",
                       holdout: int = 0, workdir: str | Path | None = None) -> tuple[FrameSet, FrameSet | None]:
    """A seeded sample of `num_frames` calibration frames, plus held-out frames for a plain folder/video.

    For a dataset the sample comes from `split` (train by default) and the second value is None: the gate
    uses `evaluation_frames` (the val split). For an image folder or a video, `holdout` frames disjoint
    from the calibration sample are returned as the gate's frames (None when `holdout` is 0).
    """
    if num_frames <= 0:
        raise VssegError(f"--num-frames must be positive, got {num_frames}")
    kind = source_kind(source)
    if kind == "video":
        return _video_frames(Path(source), num_frames, seed, holdout, workdir)
    if kind == "images":
        return _folder_frames(Path(source), num_frames, seed, holdout)
    return _dataset_frames(Path(source), split, num_frames, seed, labelled_only=False), None


def evaluation_frames(source: str | Path, num_frames: int, seed: int = 0, split: str = "val",
                      workdir: str | Path | None = None, flag: str = "--frames") -> FrameSet:
    """Held-out gate frames: the labelled frames of a dataset's `split`, or a seeded sample of a folder.

    A video's frames are decoded into `workdir` (which the caller removes), as for `calibration_frames`.
    """
    kind = source_kind(source, flag)
    if kind == "video":
        return _video_frames(Path(source), num_frames, seed, 0, workdir, flag)[0]
    if kind == "images":
        return _folder_frames(Path(source), num_frames, seed, 0)[0]
    return _dataset_frames(Path(source), split, num_frames, seed, labelled_only=True)


def _dataset_frames(root: Path, split: str, n: int, seed: int, labelled_only: bool) -> FrameSet:
    from ..data.datasets import open_dataset, sample_frames

    ds = open_dataset(root, split)
    if labelled_only and len(ds) > 0:
        pool = ds.labelled()
        refs = pool if n >= len(pool) else [pool[i] for i in sorted(
            np.random.default_rng(seed).choice(len(pool), size=n, replace=False).tolist())]
    else:
        refs = sample_frames(ds, n, seed)
    frames = [
        Frame(
            key=_rel(ref.image, root),
            read=(lambda r=ref: ds.read_image(r)),
            read_label=(lambda r=ref: ds.read_label(r)) if ref.label is not None else None,
        )
        for ref in refs
    ]
    ls = ds.label_set
    return FrameSet(str(root), ds.name, split, seed, frames, ls.num_classes, list(ls.classes))


def _folder_frames(root: Path, n: int, seed: int, holdout: int) -> tuple[FrameSet, FrameSet | None]:
    from ..data.datasets import open_dataset

    refs = open_dataset(root, "images", kind="images").frames()
    frames = [Frame(_rel(r.image, root), _image_reader(r.image)) for r in refs]
    return _split_sample(str(root), "images", frames, n, seed, holdout)


def _split_sample(source: str, kind: str, frames: list[Frame], n: int, seed: int,
                  holdout: int) -> tuple[FrameSet, FrameSet | None]:
    """Shuffle with `seed`; the first `holdout` frames are held out, the next `n` calibrate."""
    if holdout and len(frames) < 2:
        raise VssegError(f"--frames {source}: {len(frames)} frame(s); need at least 2 to calibrate and hold out")
    order = np.random.default_rng(seed).permutation(len(frames)).tolist()
    k = min(holdout, len(frames) // 2) if holdout else 0
    held, calib = sorted(order[:k]), sorted(order[k:k + n])
    calib_set = FrameSet(source, kind, None, seed, [frames[i] for i in calib])
    held_set = FrameSet(source, kind, "held-out", seed, [frames[i] for i in held]) if k else None
    return calib_set, held_set


def _video_frames(path: Path, n: int, seed: int, holdout: int, workdir: str | Path | None,
                  flag: str = "--frames") -> tuple[FrameSet, FrameSet | None]:
    """Decode the chosen frames of a video once into PNGs in `workdir` (random access for chunked calibration).

    Without a `workdir` the PNGs go to a new temporary folder that nobody removes: callers pass one they
    clean up. A video whose chosen frames do not decode (truncated, corrupt) is refused in one line.
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VssegError(f"{flag} {path}: OpenCV cannot open this video")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if total <= 0:
        total = _count_frames(cap)
        cap.release()
        cap = cv2.VideoCapture(str(path))
    if total <= 0:
        cap.release()
        raise VssegError(f"{flag} {path}: video has no frames")
    placeholders = [Frame(f"{path.name}#{i}", lambda: None) for i in range(total)]
    calib, held = _split_sample(str(path), "video", placeholders, n, seed, holdout)
    wanted = {int(f.key.rsplit("#", 1)[1]) for s in (calib, held) if s for f in s.frames}
    out = Path(workdir or tempfile.mkdtemp(prefix="vsseg-calib-video-"))
    out.mkdir(parents=True, exist_ok=True)
    decoded = _decode_indices(cap, wanted, out)
    cap.release()
    if len(decoded) < len(wanted):
        raise VssegError(f"{flag} {path}: {len(wanted) - len(decoded)} of the {len(wanted)} chosen frames do not "
                         f"decode (the video says it has {total}; truncated or corrupt?)")
    for s in (calib, held):
        if s is not None:
            s.frames = [Frame(f.key, _image_reader(decoded[int(f.key.rsplit("#", 1)[1])]))
                        for f in s.frames if int(f.key.rsplit("#", 1)[1]) in decoded]
    return calib, held


def _count_frames(cap) -> int:
    n = 0
    while cap.grab():
        n += 1
    return n


def _decode_indices(cap, wanted: set[int], out: Path) -> dict[int, Path]:
    import cv2

    from ..core.fileio import write_image

    paths: dict[int, Path] = {}
    last = max(wanted)
    for i in range(last + 1):
        if not cap.grab():
            break
        if i in wanted:
            ok, frame = cap.retrieve()
            if ok and frame is not None:
                p = out / f"frame_{i:07d}.png"
                write_image(p, frame, [cv2.IMWRITE_PNG_COMPRESSION, 1])
                paths[i] = p
    return paths


def _image_reader(path: Path) -> Callable[[], np.ndarray]:
    from ..core.fileio import read_image

    return lambda: read_image(path)


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()
