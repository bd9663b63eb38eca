"""Which frames calibrate a model, and which frames judge it.

Calibration frames come from a dataset's **train** split (a fixed, seeded sample; never the frames the
model is evaluated on), from any folder of images, or from video (a file or a folder of clips) — whatever
`data.frame_source` opens. Accuracy-gate frames are held out: the dataset's val split (with labels), or,
for a plain folder / video, frames disjoint from the calibration sample. The choice is recorded in the
Q/DQ manifest (`FrameSet.record`), including a sha1 of the sorted frame keys so that two calibrations can
be compared without the frames.

Only numpy, OpenCV and `vsseg_edge.data` are used (no torch).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import VssegError
from ..data.frame_source import UNLABELLED, open_frame_source


@dataclass(frozen=True)
class SampledFrame:
    """One frame drawn for calibration or the gate: a stable `key` (path relative to the source, or
    `clip#index` for video) and lazy readers (the frames are read when used, never all held at once)."""

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
    frames: list[SampledFrame]
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


def calibration_frames(
    source: str | Path, num_frames: int, seed: int = 0, split: str = "train", holdout: int = 0, reserve_tail: int = 0
) -> tuple[FrameSet, FrameSet | None]:
    """A seeded sample of `num_frames` calibration frames, plus held-out frames for a plain folder/video.

    `source` is anything `data.frame_source` opens. For a dataset the sample comes from `split` (train by
    default) and the second value is None: the gate uses `evaluation_frames` (the val split). For image
    folders and video, `holdout` frames disjoint from the calibration sample are returned as the gate's frames
    (None when `holdout` is 0), and the last `reserve_tail` frames of each clip (at most a third of it) are
    left out of both: the temporal-consistency gate measures there, on consecutive frames never calibrated on.
    """
    if num_frames <= 0:
        raise VssegError(f"--num-frames must be positive, got {num_frames}")
    ds = open_frame_source(source, split, flag="--frames")
    if ds.name in UNLABELLED:
        return _split_sample(ds, num_frames, seed, holdout, reserve_tail)
    return _dataset_frames(ds, num_frames, seed, labelled_only=False), None


def evaluation_frames(
    source: str | Path, num_frames: int, seed: int = 0, split: str = "val", flag: str = "--frames"
) -> FrameSet:
    """Held-out gate frames: the labelled frames of a dataset's `split`, or a seeded sample of a folder/video.

    `flag` is the option that named `source` (`--eval-frames` for explicit gate frames), for the errors."""
    ds = open_frame_source(source, split, flag=flag)
    if ds.name in UNLABELLED:
        return _split_sample(ds, num_frames, seed, 0)[0]
    return _dataset_frames(ds, num_frames, seed, labelled_only=True)


def frame_key(ds, ref) -> str:
    """A frame's stable key wherever the files live: clip#index for video, else the path under the root."""
    return f"{ref.sequence}#{ref.index}" if ds.name == "video" else _rel(ref.image, ds.root)


def _frame(ds, ref) -> SampledFrame:
    """A dataset frame as a SampledFrame, keyed by `frame_key`."""
    label = (lambda r=ref: ds.read_label(r)) if ref.label is not None else None
    return SampledFrame(frame_key(ds, ref), lambda r=ref: ds.read_image(r), label)


def _dataset_frames(ds, n: int, seed: int, labelled_only: bool) -> FrameSet:
    from ..data.datasets import sample_frames

    if labelled_only and len(ds) > 0:
        pool = ds.labelled()
        refs = (
            pool
            if n >= len(pool)
            else [
                pool[i] for i in sorted(np.random.default_rng(seed).choice(len(pool), size=n, replace=False).tolist())
            ]
        )
    else:
        refs = sample_frames(ds, n, seed)
    ls = ds.label_set
    return FrameSet(
        str(ds.root), ds.name, ds.split, seed, [_frame(ds, r) for r in refs], ls.num_classes, list(ls.classes)
    )


def _split_sample(ds, n: int, seed: int, holdout: int, reserve_tail: int = 0) -> tuple[FrameSet, FrameSet | None]:
    """Shuffle the frames with `seed` (each clip's last `reserve_tail` frames, at most a third, left out); the
    first `holdout` frames are held out, the next `n` calibrate."""
    refs = [r for seq in ds.sequences.values() for r in seq[: len(seq) - min(reserve_tail, len(seq) // 3)]]
    frames = [_frame(ds, r) for r in refs]
    source, kind = str(ds.root), ds.name
    if holdout and len(frames) < 2:
        raise VssegError(f"--frames {source}: {len(frames)} frame(s); need at least 2 to calibrate and hold out")
    order = np.random.default_rng(seed).permutation(len(frames)).tolist()
    k = min(holdout, len(frames) // 2) if holdout else 0
    held, calib = sorted(order[:k]), sorted(order[k : k + n])
    calib_set = FrameSet(source, kind, None, seed, [frames[i] for i in calib])
    held_set = FrameSet(source, kind, "held-out", seed, [frames[i] for i in held]) if k else None
    return calib_set, held_set


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()
