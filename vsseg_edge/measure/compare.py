"""Comparators: how far a runner's results are from a reference's, as typed records.

- `agreement(labels, reference_labels)`: the share of pixels where two lists of label maps (same frames,
  same sizes) give the same class — INT8 vs FP32 in the gate, every bench entry vs its FP32 reference;
- `compare_outputs(outputs, references, kind, reference_kind)`: raw outputs against a reference's, frame by
  frame: the label agreement always, and for logits on both sides the largest and mean |difference|, the
  reference's largest |logit| (the scale the differences compare with) and the noise-to-signal ratio
  Σ(out − ref)² / Σ ref² (the sensitivity search's error); for label outputs the noise-to-signal ratio is
  the share of disagreeing pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

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


def agreement(labels: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> Agreement:
    """Agreement of two lists of label maps of the same frames (same sizes, frame by frame)."""
    if len(labels) != len(reference) or not len(labels):
        raise ValueError("agreement needs two non-empty lists of predictions of the same frames")
    same = total = 0
    for a, b in zip(labels, reference):
        if a.shape != b.shape:
            raise VssegError(f"label maps of shape {a.shape} and {b.shape} cannot be compared pixel by pixel")
        same += int(np.count_nonzero(a == b))
        total += a.size
    return Agreement(same, total, len(labels))


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
