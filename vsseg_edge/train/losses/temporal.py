"""ETC's temporal (optical-flow) consistency loss.

For frame t and a neighbour n = t+k (k ∈ {+3, +2, +1, −1, −2} in ETC) with forward flow F_{t→n}:

    ẑ(x) = z_n(x + F(x))              neighbour's output warped into t   (`flow_warp`)
    Î(x) = I_n(x + F(x))              neighbour's image warped into t
    M(x) = exp(−| Σ_c (I_t − Î)_c(x) |)   occlusion / warping-error mask (a signed sum over channels,
                                           inside the absolute value, exactly as ETC's code)
    V(x) = 1 where F(x) is finite and lands inside the frame, else 0
    L    = weight · mean_{n,c,h,w}( V · M^p · (q_t − q̂)² )

q = z (logits, `on="logits"`, ETC's code) or q = softmax(z) (`on="probs"`, the paper's formula).
p = 2 by default: ETC computes MSE(M·z_t, M·ẑ) = mean(M²(z_t − ẑ)²); `square_mask=False` gives the
paper's V_i‖q_t − q̂‖² weighting (p = 1). The mean runs over every element (classes included), as
`nn.MSELoss` does in ETC; the paper's (1/N)Σ_i sums over classes instead, i.e. it is C× larger.
Default weight 0.1 (ETC's cityscapes_pspnet18_flow.yaml `st_weight`).

Images: ETC feeds the *normalised* network inputs ((x − mean)/std with ImageNet statistics on the
0–255 scale) to the mask, so a difference of 1 is about one standard deviation; pass the same tensors
the model sees. On raw 0–255 images M would be ~0 wherever Î ≠ I_t by more than a few grey levels.

Gradient: ETC does not detach the neighbour's output — the student runs on both frames with autograd
and the loss pulls both towards each other, so `detach_neighbour=False` by default; True makes the
neighbour a fixed target (half the backward cost). M and V carry no gradient (images and flow are data).

Out-of-frame samples: ETC border-clamps and keeps them (only M can down-weight them); here they are
dropped by default (`exclude_out_of_frame=True`) because a clamped border pixel is not the same scene
point. NaN flow vectors are always dropped.

Resolution: the flow may come at image resolution while q is at full or stride-8 resolution; flow (with
its vectors rescaled, `resize_flow` with align_corners=False as the models' upsampling) and images are
resized to q's size. ETC upsamples stride-8 logits to full size and warps there; with
`model(...)["out"]` that is what the default composition does (then no resizing happens at all).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._precision import at_least_fp32
from .warp import flow_validity, flow_warp, resize_flow

ON_CHOICES = ("logits", "probs")


def photometric_weight(image_t: torch.Tensor, warped_image: torch.Tensor) -> torch.Tensor:
    """M = exp(−|Σ_c (I_t − Î)_c|) as N×1×H×W: a weight in (0, 1], 1 exactly where the warped image equals I_t
    (ETC calls it the occlusion mask; TC's boolean forward-backward check is `metrics.tc.occluded_pixels`)."""
    return torch.exp(-torch.abs((image_t - warped_image).sum(dim=1, keepdim=True)))


def _resize_images(img: torch.Tensor, size) -> torch.Tensor:
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    return F.interpolate(img, size=tuple(size), mode="bilinear", align_corners=False)


class TemporalLoss(nn.Module):
    """weight · mean(V · M^p · (q_t − warp(q_n, F))²); see the module docstring."""

    def __init__(
        self,
        weight: float = 0.1,
        on: str = "logits",
        square_mask: bool = True,
        detach_neighbour: bool = False,
        exclude_out_of_frame: bool = True,
    ):
        super().__init__()
        if on not in ON_CHOICES:
            raise ValueError(f"on must be one of {ON_CHOICES}, got {on!r}")
        self.weight = float(weight)
        self.on = on
        self.square_mask = bool(square_mask)
        self.detach_neighbour = bool(detach_neighbour)
        self.exclude_out_of_frame = bool(exclude_out_of_frame)

    @torch.no_grad()
    def mask(self, image_t: torch.Tensor, image_n: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """V · M^p at the flow's resolution (images resized to it), N×1×H×W, without gradient."""
        image_t = _resize_images(image_t, flow.shape[-2:])
        image_n = _resize_images(image_n, flow.shape[-2:])
        m = photometric_weight(image_t, flow_warp(image_n, flow))
        if self.square_mask:
            m = m * m
        return m * flow_validity(flow, self.exclude_out_of_frame)

    def forward(
        self,
        out_t: torch.Tensor,
        out_n: torch.Tensor,
        image_t: torch.Tensor,
        image_n: torch.Tensor,
        flow: torch.Tensor,
    ) -> torch.Tensor:
        """out_*: N×C×h×w logits of frame t and its neighbour; images N×3×H×W; flow N×2×H'×W' (t → n)."""
        if out_t.shape != out_n.shape:
            raise ValueError(f"outputs of t {tuple(out_t.shape)} and neighbour {tuple(out_n.shape)} differ")
        out_t, out_n = at_least_fp32(out_t), at_least_fp32(out_n)
        flow = resize_flow(flow.to(out_t.dtype), out_t.shape[-2:])
        if self.detach_neighbour:
            out_n = out_n.detach()
        q_t, q_n = out_t, out_n
        if self.on == "probs":
            q_t, q_n = torch.softmax(out_t, dim=1), torch.softmax(out_n, dim=1)
        warped = flow_warp(q_n, flow)
        m = self.mask(image_t.to(out_t.dtype), image_n.to(out_t.dtype), flow)
        return self.weight * (m * (q_t - warped) ** 2).mean()
