"""Pair-wise-frames dependency distillation (ETC's `CriterionSDcos_sig` + `Cos_Attn_no`).

Each position of a stride-8 map is a node. Between frame t (features a) and a neighbour n (features b),
the cross-frame affinity is the N×N cosine-similarity matrix (N = h·w):

    A(a, b)_ij = ⟨a_i, b_j⟩ / (‖a_i‖ · ‖b_j‖)

and the loss makes the student's affinity match the teacher's:

    L = mean over neighbours n of  mean_{batch,i,j} (A(s_t, s_n) − A(T_t, T_n))²

computed on the stride-8 logits (`out_s8`, ETC's mode "logits"), teacher detached. Being a cosine, A is
invariant to any positive rescaling of individual nodes' vectors and to a rotation of the channel space
shared by both frames, so only the *directions* of the student's outputs are constrained.

ETC's code divides ⟨a_i, b_j⟩ by ‖b_i‖·‖a_j‖ — the two norms are swapped (row i of the query is divided
by the key's norm at i). That is a bug (it is not a cosine and it is not bounded); `etc_compat=True`
reproduces it for comparison. No softmax/sigmoid: ETC builds one but leaves it unused.

Cost: A is N² floats per image and pair: a 512×512 crop gives 64×64 = 4096 nodes → 4096² × 4 B = 64 MiB
per affinity; batch 8, student + teacher, one neighbour → about 1 GiB forward, plus the student's
saved for backward. 769 crops (97×97 = 9409 nodes) need ~340 MiB per affinity, ~5.4 GiB per neighbour
at batch 8. `pool > 1` average-pools both maps first (N shrinks by pool²) when that is too much.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._precision import at_least_fp32, no_autocast
from .ce import resize_logits

EPS = 1e-8


def cross_frame_affinity(a: torch.Tensor, b: torch.Tensor, etc_compat: bool = False) -> torch.Tensor:
    """B×N×N cosine affinity between the nodes of a (frame t) and b (frame n), both B×C×h×w (fp32)."""
    if a.shape != b.shape:
        raise ValueError(f"frames must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    bsz, c = a.shape[:2]
    qa = at_least_fp32(a).reshape(bsz, c, -1)
    kb = at_least_fp32(b).reshape(bsz, c, -1)
    with no_autocast(a):
        dots = torch.bmm(qa.transpose(1, 2), kb)
    na = qa.norm(dim=1)
    nb = kb.norm(dim=1)
    if etc_compat:
        denom = nb.unsqueeze(2) * na.unsqueeze(1)
    else:
        denom = na.unsqueeze(2) * nb.unsqueeze(1)
    return dots / denom.clamp_min(EPS)


class PairwiseFramesKDLoss(nn.Module):
    """Student-vs-teacher MSE of cross-frame affinities; see the module docstring."""

    def __init__(self, etc_compat: bool = False, pool: int = 1):
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.etc_compat = bool(etc_compat)
        self.pool = int(pool)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.pool, ceil_mode=True) if self.pool > 1 else x

    def pair(self, s_t, s_n, t_t, t_n) -> torch.Tensor:
        """MSE between the student's and the teacher's affinity of one (t, n) pair."""
        size = t_t.shape[-2:]
        s_t, s_n = resize_logits(s_t, size), resize_logits(s_n, size)
        a_s = cross_frame_affinity(self._prep(s_t), self._prep(s_n), self.etc_compat)
        with torch.no_grad():
            a_t = cross_frame_affinity(self._prep(t_t.detach()), self._prep(t_n.detach()), self.etc_compat)
        return F.mse_loss(a_s, a_t)

    def forward(
        self,
        student_t: torch.Tensor,
        teacher_t: torch.Tensor,
        student_neighbours: Sequence[torch.Tensor],
        teacher_neighbours: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        if len(student_neighbours) != len(teacher_neighbours) or not student_neighbours:
            raise ValueError("pair-wise-frames KD needs the same (>= 1) neighbour frames for student and teacher")
        terms = [self.pair(student_t, s_n, teacher_t, t_n) for s_n, t_n in zip(student_neighbours, teacher_neighbours)]
        return torch.stack(terms).mean()
