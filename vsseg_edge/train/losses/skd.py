"""Structured knowledge distillation (SKD, Liu et al., CVPR 2019 / TPAMI): the three terms ETC reuses.

Pixel-wise (weight 10):   L_pi = mean_i KL(p_T,i ‖ p_S,i) on the stride-8 logits (T = 1).
    SKD's code computes the cross-entropy Σ −p_T log p_S summed over the batch and divided by h·w only:
    same gradient as the KL up to that batch-size factor (the teacher entropy is a constant);
    `batch_sum=True` reproduces the code's scale (the loss is then N× larger).
Pair-wise (weight 0.5):   L_pa = mean_{b,i,j} (a^S_ij − a^T_ij)²,  a_ij = cosine(f_i, f_j) of the PPM output
    max-pooled into ~2×2 nodes (kernel = floor(scale · size), scale 0.5, ceil_mode: 2×2 or 3×3). As SKD's code the
    node norms are detached (the gradient flows through the numerator only) and 1e-8 is added to them.
Holistic (weight 0.1):    WGAN-GP with a spectral-norm discriminator D on the stride-8 logits:
    generator side    L_G = −w · mean D(z_S)
    critic side       L_D =  w · (mean D(z_S) − mean D(z_T) + λ_gp · GP),  λ_gp = 10
    GP = mean_b (‖∇_x̂ D(x̂)‖₂ − 1)²,  x̂ = α z_T + (1 − α) z_S,  α ~ U(0, 1) per sample.
    SKD steps D with SGD at lr 4e-4 (momentum 0.9) after each student step; both sides carry w (0.1).

The trainer steps the two sides separately: it adds `holistic_generator_loss` to the student's loss, then
zeroes D's gradients (the generator loss also writes into them), calls `holistic_discriminator_loss`
and steps D's own optimizer. D is never in the student's optimizer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ._precision import at_least_fp32, no_autocast
from .kd_pixel import kl_map

# --------------------------------------------------------------------------- pixel-wise


class SkdPixelLoss(nn.Module):
    """weight · mean per-pixel KL(p_T ‖ p_S) (× batch size when `batch_sum`, SKD's scale)."""

    def __init__(self, weight: float = 10.0, temperature: float = 1.0, batch_sum: bool = False):
        super().__init__()
        self.weight = float(weight)
        self.temperature = float(temperature)
        self.batch_sum = bool(batch_sum)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        loss = kl_map(student, teacher, self.temperature).mean()
        if self.batch_sum:
            loss = loss * student.shape[0]
        return self.weight * loss


# --------------------------------------------------------------------------- pair-wise


def node_similarity(feat: torch.Tensor) -> torch.Tensor:
    """B×M×M cosine similarity of the nodes of B×C×h×w features, norms detached (as SKD), in float32."""
    feat = at_least_fp32(feat)
    norm = feat.norm(dim=1, keepdim=True).detach() + 1e-8
    unit = (feat / norm).reshape(feat.shape[0], feat.shape[1], -1)
    with no_autocast(feat):
        return torch.bmm(unit.transpose(1, 2), unit)


class SkdPairwiseLoss(nn.Module):
    """weight · MSE of max-pooled node similarities, student vs teacher (PPM output features)."""

    def __init__(self, weight: float = 0.5, scale: float = 0.5):
        super().__init__()
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.weight = float(weight)
        self.scale = float(scale)

    def pool(self, feat: torch.Tensor) -> torch.Tensor:
        kh = max(1, int(feat.shape[-2] * self.scale))
        kw = max(1, int(feat.shape[-1] * self.scale))
        return F.max_pool2d(feat, (kh, kw), stride=(kh, kw), ceil_mode=True)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        if student_feat.shape[-2:] != teacher_feat.shape[-2:]:
            student_feat = F.interpolate(
                student_feat, size=teacher_feat.shape[-2:], mode="bilinear", align_corners=False
            )
        s = node_similarity(self.pool(student_feat))
        t = node_similarity(self.pool(teacher_feat.detach()))
        return self.weight * F.mse_loss(s, t)


# --------------------------------------------------------------------------- holistic


class SelfAttention(nn.Module):
    """SAGAN self-attention: x + γ · V softmax(QᵀK), γ initialised to 0."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 8)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).reshape(b, -1, h * w)
        k = self.key(x).reshape(b, -1, h * w)
        attn = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)
        out = torch.bmm(self.value(x).reshape(b, c, h * w), attn.transpose(1, 2))
        return x + self.gamma * out.reshape(b, c, h, w)


class SpectralNormDiscriminator(nn.Module):
    """Critic over C-channel score maps → one score per sample (B,).

    BatchNorm on the input (SKD's preprocess mode 1), then `num_layers` spectral-norm 4×4 stride-2 convs
    (channels base·2^k, LeakyReLU 0.1), SAGAN self-attention after the last two, and a 3×3 conv to one
    channel averaged over space. SKD ends with an un-normalised 4×4 conv on a 4×4 map (65×65 inputs);
    the spatial mean here lets any input size ≥ 2^num_layers through. D input: stride-8 logits.
    """

    def __init__(self, in_channels: int, base_channels: int = 64, num_layers: int = 4, attention: bool = True):
        super().__init__()
        self.num_layers = int(num_layers)
        self.input_norm = nn.BatchNorm2d(in_channels)
        blocks, ch_in = [], in_channels
        for k in range(self.num_layers):
            ch_out = base_channels * 2**k
            blocks += [spectral_norm(nn.Conv2d(ch_in, ch_out, 4, 2, 1)), nn.LeakyReLU(0.1)]
            if attention and k >= self.num_layers - 2:
                blocks.append(SelfAttention(ch_out))
            ch_in = ch_out
        self.body = nn.Sequential(*blocks)
        self.head = nn.Conv2d(ch_in, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        min_side = 2**self.num_layers
        if min(x.shape[-2:]) < min_side:
            raise ValueError(
                f"discriminator with {self.num_layers} layers needs inputs >= {min_side} px, got {tuple(x.shape[-2:])}"
            )
        return self.head(self.body(self.input_norm(x))).mean(dim=(1, 2, 3))


Critic = Callable[[torch.Tensor], torch.Tensor]


def gradient_penalty(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor | None = None
) -> torch.Tensor:
    """mean_b (‖∇_x̂ Σ critic(x̂)‖₂ − 1)² on x̂ = α·real + (1−α)·fake (inputs detached, α per sample).

    Differentiable w.r.t. the critic's parameters (create_graph=True), as WGAN-GP needs.
    """
    real, fake = real.detach(), fake.detach()
    if alpha is None:
        alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.reshape(grad.shape[0], -1).norm(dim=1)
    return ((norms - 1) ** 2).mean()


def holistic_generator_loss(discriminator: Critic, student_logits: torch.Tensor, weight: float = 0.1) -> torch.Tensor:
    """Student side: −weight · mean D(z_S); the gradient reaches the student through D."""
    return -weight * discriminator(student_logits).mean()


def holistic_discriminator_loss(
    discriminator: Critic,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    weight: float = 0.1,
    gp_weight: float = 10.0,
) -> torch.Tensor:
    """Critic side: weight · (mean D(z_S) − mean D(z_T) + gp_weight · GP); the logits are detached."""
    fake, real = student_logits.detach(), teacher_logits.detach()
    if fake.shape != real.shape:
        raise ValueError(f"student {tuple(fake.shape)} and teacher {tuple(real.shape)} logits differ")
    loss = discriminator(fake).mean() - discriminator(real).mean()
    if gp_weight:
        loss = loss + gp_weight * gradient_penalty(discriminator, real, fake)
    return weight * loss


def discriminator_optimizer(
    discriminator: nn.Module, lr: float = 4e-4, momentum: float = 0.9, weight_decay: float = 1e-4
) -> torch.optim.Optimizer:
    """SKD's critic optimiser: SGD lr 4e-4, momentum 0.9 (weight decay as the student's)."""
    return torch.optim.SGD(discriminator.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
