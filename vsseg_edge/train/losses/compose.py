"""The ETC training objective: every term, weighted, computed only when its weight is non-zero.

    total = seg·CE(out) + aux·CE(aux) + temporal·TL + kd_pixel·PixelKD + kd_pairwise_frames·PairKD
            + kd_multiframe·LSTMKD + skd_pixel·KL + skd_pairwise·PA + skd_holistic·(−mean D(out_s8))
            + fused_kd·KL(q̄ ‖ softmax(out))

Inputs follow the model output contract `model(x, return_features=True)` → {"out": logits at input
resolution, "out_s8": logits at stride 8, "aux": aux logits or None, "feat": head features (stride 8),
"ppm": pyramid-pooling output}, the same for student and teacher:

    out  → CE, temporal loss (with temporal_resolution="full", as ETC upsamples before warping), fused KD
    out_s8 → pixel KD (or `out` with kd_resolution="full"), pair-wise-frames KD, SKD pixel, holistic
             discriminator (ETC/SKD "logits")
    ppm  → multi-frame KD and SKD pair-wise (ETC's "fea" / SKD's feature after PSP)

A clip is frame t (`FrameOutputs`, labelled) plus neighbours t±k, each with the forward flow t → it.
With several neighbours: the temporal loss and the pair-wise-frames KD are averaged over them (ETC
draws one neighbour per sample), the pixel KD is KL_t + 0.4·Σ_n KL_n (ETC), and the multi-frame KD runs
the ConvLSTM over all frames sorted by `offset` (t−k, t, t+k; ETC's order of its "f"/"b" frames is
ambiguous, the result differs only by which end the recurrence starts from). The aux term is skipped
when the model returns no aux logits (eval mode). Labels are only needed for seg/aux (and
`kd_ignore_unlabelled`); the fused KD needs frame t's precomputed target (`FrameOutputs.target`).
Parameters outside the student that must be optimised: `student_side_parameters()` (the multi-frame
ConvLSTM) join the student's optimizer; `discriminator` gets its own optimizer
(`make_discriminator_optimizer()`), stepped with `discriminator_loss` after each student step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...core.errors import VssegError
from .ce import cross_entropy
from .config import LossConfig, LossWeights
from .fused_kd import FusedTargetLoss
from .kd_multiframe import MultiFrameKDLoss
from .kd_pairwise_frames import PairwiseFramesKDLoss
from .kd_pixel import PixelKDLoss, valid_from_labels
from .skd import (
    SkdPairwiseLoss,
    SkdPixelLoss,
    SpectralNormDiscriminator,
    discriminator_optimizer,
    holistic_discriminator_loss,
    holistic_generator_loss,
)
from .temporal import TemporalLoss

Outputs = Mapping[str, torch.Tensor | None]


@dataclass
class FrameOutputs:
    """One frame of a training clip: the networks' outputs, its image, and the flow from frame t to it."""

    student: Outputs
    teacher: Outputs | None = None
    image: torch.Tensor | None = None  # N×3×H×W, the (normalised) tensor the networks saw
    flow: torch.Tensor | None = None  # N×2×H×W forward flow t → this frame; None for frame t itself
    offset: int = 0  # position relative to t (e.g. −2, +3); orders the multi-frame sequence
    target: torch.Tensor | None = None  # N×C×H×W fused target probabilities (NaN: no target), frame t only


def _get(outputs: Outputs | None, key: str, who: str) -> torch.Tensor:
    if outputs is None:
        raise VssegError(
            f"loss config: a distillation weight is > 0 but no {who} outputs were given "
            f"(set the kd_*/skd_* weights to 0 or provide a teacher)"
        )
    value = outputs.get(key)
    if value is None:
        raise VssegError(
            f"model outputs: {who} has no {key!r}; the losses need "
            f"model(x, return_features=True) with keys out, out_s8, aux, feat, ppm"
        )
    return value


class EtcLoss(nn.Module):
    """All ETC/SKD loss terms composed from a `LossConfig` (or bare `LossWeights`)."""

    def __init__(self, cfg: LossConfig | LossWeights | None = None, num_classes: int | None = None):
        super().__init__()
        if cfg is None:
            cfg = LossConfig()
        if isinstance(cfg, LossWeights):
            cfg = LossConfig(weights=cfg)
        self.cfg = cfg
        w = cfg.weights
        cw = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", cw, persistent=False)
        self.temporal = (
            TemporalLoss(
                1.0,
                cfg.temporal_on,
                cfg.temporal_square_mask,
                cfg.temporal_detach_neighbour,
                cfg.temporal_exclude_out_of_frame,
            )
            if w.temporal
            else None
        )
        self.kd_pixel = (
            PixelKDLoss(cfg.kd_temperature, cfg.kd_neighbour_weight, cfg.kd_reduction, cfg.kd_class_balance)
            if w.kd_pixel
            else None
        )
        self.kd_pairwise_frames = (
            PairwiseFramesKDLoss(cfg.pairwise_etc_compat, cfg.pairwise_pool) if w.kd_pairwise_frames else None
        )
        self.kd_multiframe = (
            MultiFrameKDLoss(cfg.multiframe_pool, trainable=cfg.multiframe_trainable) if w.kd_multiframe else None
        )
        self.skd_pixel = SkdPixelLoss(1.0, cfg.kd_temperature, cfg.skd_pixel_batch_sum) if w.skd_pixel else None
        self.skd_pairwise = SkdPairwiseLoss(1.0, cfg.skd_pool_scale) if w.skd_pairwise else None
        self.fused_kd = FusedTargetLoss(cfg.fused_kd_mode, cfg.fused_kd_threshold) if w.fused_kd else None
        self.discriminator = None
        if w.skd_holistic:
            if not num_classes:
                raise ValueError("EtcLoss: skd_holistic > 0 needs num_classes (the discriminator's input channels)")
            self.discriminator = SpectralNormDiscriminator(num_classes, cfg.skd_disc_channels, cfg.skd_disc_layers)

    # ------------------------------------------------------------------ parameters the trainer steps

    def student_side_parameters(self) -> Iterator[nn.Parameter]:
        """Trainable loss parameters that belong in the student's optimizer (the multi-frame ConvLSTM)."""
        if self.kd_multiframe is not None:
            yield from (p for p in self.kd_multiframe.parameters() if p.requires_grad)

    def make_discriminator_optimizer(self, weight_decay: float = 1e-4) -> torch.optim.Optimizer | None:
        """SGD for the holistic critic at `cfg.skd_disc_lr` (4e-4), or None when the term is off."""
        if self.discriminator is None:
            return None
        return discriminator_optimizer(self.discriminator, self.cfg.skd_disc_lr, weight_decay=weight_decay)

    def discriminator_loss(self, frame_t: FrameOutputs) -> torch.Tensor:
        """Critic-side WGAN-GP loss on frame t's stride-8 logits (zero D's grads before backward)."""
        if self.discriminator is None:
            raise RuntimeError("discriminator_loss called but skd_holistic is 0")
        return holistic_discriminator_loss(
            self.discriminator,
            _get(frame_t.student, "out_s8", "student"),
            _get(frame_t.teacher, "out_s8", "teacher"),
            self.cfg.weights.skd_holistic,
            self.cfg.skd_gp_weight,
        )

    # ------------------------------------------------------------------ the student's objective

    def forward(
        self, frame_t: FrameOutputs, labels: torch.Tensor | None, neighbours: Sequence[FrameOutputs] = ()
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(total, {term: weighted value as float, ..., "total": float}) for one clip."""
        terms: dict[str, torch.Tensor] = {}
        w = self.cfg.weights
        self._supervised(frame_t, labels, terms)
        if self.temporal is not None:
            terms["temporal"] = w.temporal * self._temporal(frame_t, neighbours)
        self._distillation(frame_t, labels, neighbours, terms)
        if self.fused_kd is not None:
            if frame_t.target is None:
                raise VssegError(
                    "loss config: fused_kd > 0 needs frame t's fused target (unlabelled video with "
                    "teacher.checkpoint set)"
                )
            terms["fused_kd"] = w.fused_kd * self.fused_kd(_get(frame_t.student, "out", "student"), frame_t.target)
        if not terms:
            raise VssegError("loss config: every loss weight is 0; nothing to train")
        total = torch.stack([t.reshape(()) for t in terms.values()]).sum()
        log = {k: float(v.detach()) for k, v in terms.items()}
        log["total"] = float(total.detach())
        return total, log

    def _supervised(self, frame_t: FrameOutputs, labels, terms) -> None:
        w = self.cfg.weights
        if not (w.seg or w.aux):
            return
        if labels is None:
            raise VssegError("loss config: seg/aux weights are > 0 but the batch has no labels")
        ignore = self.cfg.ignore_index
        if w.seg:
            terms["seg"] = w.seg * cross_entropy(
                _get(frame_t.student, "out", "student"), labels, self.class_weights, ignore
            )
        aux = frame_t.student.get("aux")
        if w.aux and aux is not None:
            terms["aux"] = w.aux * cross_entropy(aux, labels, self.class_weights, ignore)

    def _temporal(self, frame_t: FrameOutputs, neighbours: Sequence[FrameOutputs]) -> torch.Tensor:
        key = "out" if self.cfg.temporal_resolution == "full" else "out_s8"
        pairs = [n for n in neighbours if n.flow is not None]
        if not pairs or frame_t.image is None or any(n.image is None for n in pairs):
            raise VssegError("loss config: temporal > 0 needs neighbour frames with images and flow t → neighbour")
        out_t = _get(frame_t.student, key, "student")
        losses = [self.temporal(out_t, _get(n.student, key, "student"), frame_t.image, n.image, n.flow) for n in pairs]
        return torch.stack(losses).mean()

    def _distillation(self, frame_t: FrameOutputs, labels, neighbours: Sequence[FrameOutputs], terms) -> None:
        w = self.cfg.weights
        if not w.needs_teacher:
            return
        s8 = lambda f, who: _get(getattr(f, who), "out_s8", who)  # noqa: E731
        if self.kd_pixel is not None:
            key = "out" if self.cfg.kd_resolution == "full" else "out_s8"
            px = lambda f, who: _get(getattr(f, who), key, who)  # noqa: E731
            valid = None
            if self.cfg.kd_ignore_unlabelled and labels is not None:
                valid = valid_from_labels(labels, px(frame_t, "teacher").shape[-2:], self.cfg.ignore_index)
            terms["kd_pixel"] = w.kd_pixel * self.kd_pixel(
                px(frame_t, "student"),
                px(frame_t, "teacher"),
                [px(n, "student") for n in neighbours],
                [px(n, "teacher") for n in neighbours],
                valid,
            )
        if self.kd_pairwise_frames is not None:
            if not neighbours:
                raise VssegError("loss config: kd_pairwise_frames > 0 needs neighbour frames")
            terms["kd_pairwise_frames"] = w.kd_pairwise_frames * self.kd_pairwise_frames(
                s8(frame_t, "student"),
                s8(frame_t, "teacher"),
                [s8(n, "student") for n in neighbours],
                [s8(n, "teacher") for n in neighbours],
            )
        if self.kd_multiframe is not None:
            clip = sorted([frame_t, *neighbours], key=lambda f: f.offset)
            terms["kd_multiframe"] = w.kd_multiframe * self.kd_multiframe(
                [_get(f.student, "ppm", "student") for f in clip], [_get(f.teacher, "ppm", "teacher") for f in clip]
            )
        if self.skd_pixel is not None:
            terms["skd_pixel"] = w.skd_pixel * self.skd_pixel(s8(frame_t, "student"), s8(frame_t, "teacher"))
        if self.skd_pairwise is not None:
            terms["skd_pairwise"] = w.skd_pairwise * self.skd_pairwise(
                _get(frame_t.student, "ppm", "student"), _get(frame_t.teacher, "ppm", "teacher")
            )
        if self.discriminator is not None:
            terms["skd_holistic"] = holistic_generator_loss(self.discriminator, s8(frame_t, "student"), w.skd_holistic)


def build_losses(cfg: LossConfig | LossWeights | None = None, num_classes: int | None = None) -> EtcLoss:
    """The composed objective for `cfg`; terms with weight 0 are not built."""
    return EtcLoss(cfg, num_classes)
