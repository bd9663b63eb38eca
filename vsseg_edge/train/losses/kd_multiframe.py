"""Multi-frame dependency distillation through a shared ConvLSTM (ETC's `CriterionLSTM`).

For each frame f of the clip (t−k, t, t+k, in time order) and each network:

    P_f = avgpool_{k×k, stride k}(ppm_f)                the pyramid-pooling output features, pooled
    G_f = self-cosine graph of P_f:  G_ij = ⟨p_i, p_j⟩ / (‖p_i‖‖p_j‖),  B×1×M×M  (M = pooled nodes)
    (h, c) = ConvLSTM(G_{t+k}, ConvLSTM(G_t, ConvLSTM(G_{t−k}, 0)))      one shared cell, 1 → 4 channels
    L = MSE(c_S, c_T) + MSE(h_S, h_T)

This is ETC's maths (same cell and gate order, MSE on both states, teacher graphs through the same cell).
Pooling: ETC uses `nn.AvgPool2d(kernel_size=16, stride=16)` on the maps of its 768×768 crops (97×97 →
6×6 = 36 nodes; a 512 crop gives 4×4). The kernel here is ETC's `pool`, shrunk where the map is small so
the grid keeps at least `min_side` (4) nodes a side: k = max(1, min(pool, min(h, w) // min_side)). ETC's
crops are unchanged; a 128×256 crop (16×32 map) gets k = 4, a 4×8 grid, where ETC's kernel would leave
1×2 nodes — a 2×2 graph whose only free entry is one cosine per frame (with `min_side=1`, ETC's kernel).

The ConvLSTM is shared by the student's and the teacher's sequences; when trainable, gradients reach it
through both (the teacher's features are constants). The optimizer must then include its parameters
(`EtcLoss.student_side_parameters()` returns them); ETC's setting is unknown (its SD training script is
not released; its config's mode name `label_lstm_update_…` suggests the cell is updated).
Why the cell is frozen by default: trained with the very loss it computes, the cell can minimise that
loss by ignoring its input — the loss is 0 for any input-independent cell — and then passes on almost
none of the student–teacher graph discrepancy while the logged term falls. `trainable=False` freezes the
randomly initialised cell: a fixed non-linear temporal probe that cannot collapse. A default-initialised
cell passes on only a small part of the graph difference (small gate weights, sigmoid gates near ½), so
the term needs a large weight to act. The measurements behind both choices are in
benchmarks/reports/etc_seeds_kd.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._precision import at_least_fp32, no_autocast

EPS = 1e-8
MIN_SIDE = 4  # nodes per side of the pooled grid, at least (ETC's crops give 4-6; see the module docstring)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: gates = conv([x, h]) → i, f, o, g; c' = f·c + i·tanh(g); h' = o·tanh(c')."""

    def __init__(self, input_channels: int = 1, hidden_channels: int = 4, kernel_size: int = 3):
        super().__init__()
        self.hidden_channels = int(hidden_channels)
        self.gates = nn.Conv2d(
            input_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2
        )

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x: B×Cin×H×W; state (h, c) each B×hidden×H×W or None (zeros). Returns (h, c)."""
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[-2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat((x, h), dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def self_cosine_graph(x: torch.Tensor) -> torch.Tensor:
    """B×1×M×M cosine similarity between all node pairs of a B×C×h×w map (M = h·w), in float32."""
    flat = at_least_fp32(x).reshape(x.shape[0], x.shape[1], -1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(EPS)
    with no_autocast(x):
        return torch.bmm(unit.transpose(1, 2), unit).unsqueeze(1)


class MultiFrameKDLoss(nn.Module):
    """MSE on the final (h, c) of a shared ConvLSTM run over student vs teacher graph sequences."""

    def __init__(
        self,
        pool: int = 16,
        hidden_channels: int = 4,
        kernel_size: int = 3,
        trainable: bool = True,
        min_side: int = MIN_SIDE,
    ):
        super().__init__()
        self.pool = int(pool)
        self.min_side = max(1, int(min_side))
        self.convlstm = ConvLSTMCell(1, hidden_channels, kernel_size)
        self.convlstm.requires_grad_(bool(trainable))

    def kernel(self, height: int, width: int) -> int:
        """Square pooling kernel (= stride): ETC's `pool`, shrunk so the grid keeps ≥ min_side nodes a side."""
        return max(1, min(self.pool, min(height, width) // self.min_side))

    def graph(self, feat: torch.Tensor) -> torch.Tensor:
        k = self.kernel(*feat.shape[-2:])
        return self_cosine_graph(F.avg_pool2d(feat, k, stride=k))

    def run(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (h, c) of the ConvLSTM over the graphs of a time-ordered feature sequence."""
        state = None
        for feat in feats:
            state = self.convlstm(self.graph(feat), state)
        return state

    def forward(self, student_seq: Sequence[torch.Tensor], teacher_seq: Sequence[torch.Tensor]) -> torch.Tensor:
        """Both sequences time-ordered (e.g. [t−k, t, t+k]) PPM features, B×C×h×w each."""
        if len(student_seq) != len(teacher_seq) or len(student_seq) < 1:
            raise ValueError("multi-frame KD needs equally long, non-empty student and teacher sequences")
        h_s, c_s = self.run(student_seq)
        h_t, c_t = self.run([f.detach() for f in teacher_seq])
        return F.mse_loss(c_s, c_t) + F.mse_loss(h_s, h_t)
