"""Comparators: how far a runner's results are from a reference's, as typed records.

- `agreement(labels, reference_labels)`: the share of pixels where two lists of label maps (same frames,
  same sizes) give the same class — INT8 vs FP32 in the gate, every bench entry vs its FP32 reference;
- `agreement_breakdown(labels, reference_labels, class_names)`: where they disagree — per reference class (the
  share of its pixels the other run labels the same) and by region (pixels within a few pixels of a reference
  label boundary vs the interiors);
- `compare_outputs(outputs, references, kind, reference_kind)`: raw outputs against a reference's, frame by
  frame: the label agreement always, and for logits on both sides the largest and mean |difference|, the
  reference's largest |logit| (the scale the differences compare with) and the noise-to-signal ratio
  Σ(out − ref)² / Σ ref² (the sensitivity search's error); for label outputs the noise-to-signal ratio is
  the share of disagreeing pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..core.errors import VssegError
from ..core.preprocess import labels_from_output


@dataclass(frozen=True)
class Agreement:
    """Pixels where two predictions agree: `same` of `total` over `frames` frames."""

    same: int
    total: int
    frames: int

    @property
    def percent(self) -> float:
        return 100.0 * self.same / self.total if self.total else float("nan")

    @property
    def fraction(self) -> float:
        return self.same / self.total if self.total else float("nan")


def _frame_pairs(labels: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> Iterator[tuple]:
    """(label map, reference label map) frame by frame, checked: the same non-empty list of frames, same sizes."""
    if len(labels) != len(reference) or not len(labels):
        raise ValueError("agreement needs two non-empty lists of predictions of the same frames")
    for a, b in zip(labels, reference):
        if a.shape != b.shape:
            raise VssegError(f"label maps of shape {a.shape} and {b.shape} cannot be compared pixel by pixel")
        yield a, b


def agreement(labels: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> Agreement:
    """Agreement of two lists of label maps of the same frames (same sizes, frame by frame)."""
    same = total = 0
    for a, b in _frame_pairs(labels, reference):
        same += int(np.count_nonzero(a == b))
        total += a.size
    return Agreement(same, total, len(labels))


BOUNDARY_PX = 2  # a pixel within this many pixels (square neighbourhood) of a reference label change


def agreement_breakdown(
    labels: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    class_names: Sequence[str],
    boundary_px: int = BOUNDARY_PX,
) -> dict:
    """Where two lists of label maps disagree: {"by_class": {name: [% agreement on the reference's pixels of
    that class, % of all pixels that class covers]}, "by_region": {"boundary": [% agreement, % of pixels],
    "interior": [...]}}. Boundary pixels are those within `boundary_px` of a change of the reference label."""
    import cv2

    n = len(class_names)
    same_c, total_c = np.zeros(n, np.int64), np.zeros(n, np.int64)
    same_r, total_r = np.zeros(2, np.int64), np.zeros(2, np.int64)  # boundary, interior
    kernel = np.ones((2 * boundary_px + 1,) * 2, np.uint8)
    for a, b in _frame_pairs(labels, reference):
        ref = np.asarray(b)
        ok = np.asarray(a) == ref
        valid = ref < n  # an ignore label in the reference is no class
        total_c += np.bincount(ref[valid].ravel(), minlength=n)[:n]
        same_c += np.bincount(ref[valid & ok].ravel(), minlength=n)[:n]
        r8 = ref.astype(np.uint8)
        edge = cv2.dilate(r8, kernel) != cv2.erode(r8, kernel)
        for i, region in enumerate((edge, ~edge)):
            total_r[i] += int(region.sum())
            same_r[i] += int((region & ok).sum())
    pixels = max(int(total_r.sum()), 1)

    def pct(num, den):
        return round(100.0 * float(num) / float(den), 3) if den else None

    return {
        "by_class": {
            name: [pct(same_c[i], total_c[i]), pct(total_c[i], pixels)]
            for i, name in enumerate(class_names)
            if total_c[i]
        },
        "by_region": {
            name: [pct(same_r[i], total_r[i]), pct(total_r[i], pixels)]
            for i, name in enumerate(("boundary", "interior"))
        },
        "boundary_px": boundary_px,
    }


@dataclass(frozen=True)
class OutputComparison:
    """Raw outputs against a reference's; the logit figures are None unless both sides give logits."""

    agreement: Agreement
    noise_to_signal: float
    max_abs: float | None = None
    mean_abs: float | None = None
    ref_abs_max: float | None = None  # None unless the reference gives logits

    @property
    def frames(self) -> int:
        return self.agreement.frames


def compare_outputs(
    outputs: Iterable[np.ndarray],
    references: Iterable[np.ndarray],
    kind: str = "logits",
    reference_kind: str | None = None,
) -> OutputComparison:
    """Compare raw outputs frame by frame (`kind`/`reference_kind`: "logits" or "labels")."""
    reference_kind = reference_kind or kind
    logits = kind == reference_kind == "logits"
    same = total = frames = count = 0
    num = den = sum_abs = 0.0
    max_abs = ref_abs_max = 0.0
    for out, ref in zip(outputs, references):
        if logits and out.shape != ref.shape:
            raise VssegError(f"logits of shape {out.shape} and {ref.shape} cannot be compared")
        a, b = labels_from_output(out, kind), labels_from_output(ref, reference_kind)
        if a.shape != b.shape:
            raise VssegError(f"outputs give label maps of shape {a.shape} and {b.shape}; they cannot be compared")
        same, total, frames = same + int(np.count_nonzero(a == b)), total + a.size, frames + 1
        if reference_kind == "logits":
            ref_abs_max = max(ref_abs_max, float(np.abs(ref).max()))
        if logits:
            diff = np.abs(out.astype(np.float64) - ref)
            max_abs, sum_abs, count = max(max_abs, float(diff.max())), sum_abs + float(diff.sum()), count + diff.size
            num += float(np.sum(diff**2))
            den += float(np.sum(ref.astype(np.float64) ** 2))
    if not frames:
        raise ValueError("compare_outputs needs at least one pair of outputs")
    agree = Agreement(same, total, frames)
    if not logits:
        return OutputComparison(
            agree, (total - same) / total, ref_abs_max=ref_abs_max if reference_kind == "logits" else None
        )
    return OutputComparison(agree, num / max(den, 1e-30), max_abs, sum_abs / count, ref_abs_max)
