"""Supervised segmentation loss: cross-entropy with an ignore label, optional class weights, and the
auxiliary (deep-supervision) head.

    L_seg = CE(z, y) + aux_weight · CE(z_aux, y)

    CE(z, y) = Σ_{i valid} w_{y_i} · (−log softmax(z_i)_{y_i}) / Σ_{i valid} w_{y_i}

i.e. PyTorch's weighted mean: with class weights the sum is normalised by the summed weights of the
valid pixels, not by their count (as ETC's `CriterionDSN` via `nn.CrossEntropyLoss(weight=…)`).
Logits whose size differs from the labels are upsampled bilinearly first, with align_corners=False
as the models' own upsampling (inputs are multiples of 8; ETC's 8k+1 crops used align_corners=True).
A batch with no valid pixel gives 0 (connected to the graph), not NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...core.labels import IGNORE_INDEX

# The class-balance weights hard-coded in ETC's util/crit.py (Cityscapes trainIds 0..18); a constant
# offered for reproduction, off by default.
ETC_CITYSCAPES_CLASS_WEIGHTS = (
    0.8373,
    0.918,
    0.866,
    1.0345,
    1.0166,
    0.9969,
    0.9754,
    1.0489,
    0.8786,
    1.0023,
    0.9539,
    0.9843,
    1.1116,
    0.9037,
    1.0865,
    1.0955,
    1.0865,
    1.1529,
    1.0507,
)


def resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False, as the models) of N×C×h×w logits to `size`; no-op when equal."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean CE of N×C×h×w logits against N×H×W integer labels (logits resized to the labels)."""
    if labels.dim() != 3:
        raise ValueError(f"labels must be N×H×W, got shape {tuple(labels.shape)}")
    logits = resize_logits(logits, labels.shape[-2:])
    labels = labels.long()
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    if class_weights is not None:
        class_weights = class_weights.to(device=logits.device, dtype=logits.dtype)
    return F.cross_entropy(logits, labels, weight=class_weights, ignore_index=ignore_index)
