"""Mean intersection-over-union from one confusion matrix accumulated over all frames.

Conventions (the same as cityscapesScripts' `evalPixelLevelSemanticLabeling`, which a test checks):

- Pixels whose *label* is the ignore index are not counted at all.
- A *prediction* equal to the ignore index on a valid pixel counts as wrong: a false negative of the
  labelled class and a false positive of no class (cityscapesScripts treats a predicted "void" id the
  same way). Any other prediction outside 0..C-1 is a bug in the predictor and raises `VssegError`.
- IoU_c = TP / (TP + FP + FN) over the accumulated matrix (not a mean of per-image IoUs); a class absent
  from both labels and predictions has 0/0 and is NaN, left out of the mean and listed in the report.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import VssegError
from ..core.labels import IGNORE_INDEX


class ConfusionMatrix:
    """Counts of (label, prediction) pixel pairs; column C holds predictions equal to the ignore index."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        if num_classes < 1 or num_classes > 255:
            raise ValueError(f"num_classes must be in 1..255, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = np.zeros((num_classes, num_classes + 1), np.int64)

    def update(self, pred: np.ndarray, label: np.ndarray, where: str = "prediction") -> None:
        """Add one frame (or a batch of frames: any equal shapes) to the matrix."""
        pred = np.asarray(pred)
        label = np.asarray(label)
        if pred.shape != label.shape:
            raise VssegError(f"{where}: prediction shape {pred.shape} differs from label shape {label.shape}")
        c = self.num_classes
        valid = label != self.ignore_index
        lab = label[valid].astype(np.int64)
        prd = pred[valid].astype(np.int64)
        if lab.size and (lab.min() < 0 or lab.max() >= c):
            bad = np.unique(lab[(lab < 0) | (lab >= c)])[:5].tolist()
            raise VssegError(f"{where}: label holds class id(s) {bad}; expected 0..{c - 1} or {self.ignore_index}")
        out = (prd < 0) | (prd >= c)
        if out.any():
            bad_ids = np.unique(prd[out])
            bad = bad_ids[bad_ids != self.ignore_index]
            if bad.size:
                raise VssegError(
                    f"{where}: predicted class id(s) {bad[:5].tolist()}; expected 0..{c - 1} "
                    f"(or {self.ignore_index}, counted as wrong)"
                )
            prd = np.where(out, c, prd)
        self.mat += np.bincount(lab * (c + 1) + prd, minlength=c * (c + 1)).reshape(c, c + 1)

    @property
    def total(self) -> int:
        """Number of evaluated (non-ignored) pixels."""
        return int(self.mat.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU in 0..1 (float64, length C); NaN where the class never occurs in labels or predictions."""
        c = self.num_classes
        tp = np.diag(self.mat[:, :c]).astype(np.float64)
        fn = self.mat.sum(axis=1) - tp
        fp = self.mat[:, :c].sum(axis=0) - tp
        denom = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU (0..1) over the classes that are not NaN; NaN when no pixel was evaluated."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Fraction of evaluated pixels predicted correctly; NaN when none was evaluated."""
        total = self.total
        return float(np.trace(self.mat[:, : self.num_classes]) / total) if total else float("nan")

    def to_dict(self, class_names: list[str] | tuple[str, ...] | None = None) -> dict:
        """A JSON-ready report: percentages, the per-class table and the classes left out as NaN."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        iou = self.iou()
        return {
            "miou": _pct(self.miou()),
            "pixel_accuracy": _pct(self.pixel_accuracy()),
            "pixels": self.total,
            "per_class": {n: _pct(v) for n, v in zip(names, iou)},
            "nan_classes": [n for n, v in zip(names, iou) if np.isnan(v)],
            "classes_in_mean": int(np.isfinite(iou).sum()),
        }


def _pct(x: float) -> float | None:
    """0..1 → percent rounded for reports; NaN → None (JSON has no NaN)."""
    return None if x is None or np.isnan(x) else round(float(x) * 100.0, 4)
