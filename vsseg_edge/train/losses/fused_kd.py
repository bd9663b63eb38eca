"""Distillation towards a precomputed target distribution per pixel (the temporally fused teacher, `train.targets`).

With student logits z (N×C×h×w, the model's full-resolution output "out") and a target q̄ (N×C×h×w
probabilities, NaN where a pixel has no target, e.g. crop padding):

    soft:  L = Σ_{i valid} KL_i(q̄ ‖ softmax(z)) / #valid,   KL_i = Σ_c q̄_c (log q̄_c − log p_c)
    hard:  L = Σ_{i valid, max q̄_i ≥ τ} CE(z_i, argmax q̄_i) / #(valid, confident)

Soft is the default: the fused target keeps the teacher's uncertainty where its neighbours disagree, and its
gradient (p − q̄) is that of a soft cross-entropy; KL (not soft CE) is logged so that a perfect match reads 0.
Hard pseudo-labels (with a confidence threshold τ, as cross-frame pseudo-labelling does) push margins up,
which also steadies the argmax, at the price of the teacher's calibration.

Full resolution, not stride 8: the fused target comes from the teacher's final output, and what flickers is the
final argmax (ESPNet's decoder refines its stride-8 map, so the two differ). A target of another size is
resized bilinearly (its invalid pixels spread to their neighbours and stay invalid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("soft", "hard")


def resize_target(target: torch.Tensor, size) -> torch.Tensor:
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    return F.interpolate(target, size=tuple(size), mode="bilinear", align_corners=False)


class FusedTargetLoss(nn.Module):
    """KL(q̄ ‖ p) (soft) or CE on confident argmax q̄ (hard) over the pixels that have a target."""

    def __init__(self, mode: str = "soft", threshold: float = 0.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"fused target mode must be one of {MODES}, got {mode!r}")
        if not 0 <= threshold < 1:
            raise ValueError(f"fused target threshold must be in [0, 1), got {threshold}")
        self.mode, self.threshold = mode, float(threshold)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape[:2] != logits.shape[:2]:
            raise ValueError(f"target {tuple(target.shape)} does not match the logits {tuple(logits.shape)}")
        target = resize_target(target.to(logits.dtype), logits.shape[-2:]).detach()
        valid = torch.isfinite(target).all(dim=1)  # N×h×w
        target = torch.nan_to_num(target, nan=0.0)
        log_p = torch.log_softmax(logits.float(), dim=1)
        if self.mode == "soft":
            per_pixel = (target * (torch.log(target.clamp_min(1e-8)) - log_p)).sum(dim=1)
        else:
            conf, labels = target.max(dim=1)
            valid = valid & (conf >= self.threshold)
            per_pixel = F.nll_loss(log_p, labels, reduction="none")
        weight = valid.to(per_pixel.dtype)
        return (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)
