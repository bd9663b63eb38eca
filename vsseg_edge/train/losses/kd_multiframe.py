"""Multi-frame dependency distillation through a shared ConvLSTM (ETC's `CriterionLSTM`).

For each frame f of the clip (t−k, t, t+k, in time order) and each network:

    P_f = avgpool_{16×16, stride 16}(ppm_f)             the pyramid-pooling output features, pooled
    G_f = self-cosine graph of P_f:  G_ij = ⟨p_i, p_j⟩ / (‖p_i‖‖p_j‖),  B×1×M×M  (M = pooled nodes)
    (h, c) = ConvLSTM(G_{t+k}, ConvLSTM(G_t, ConvLSTM(G_{t−k}, 0)))      one shared cell, 1 → 4 channels
    L = MSE(c_S, c_T) + MSE(h_S, h_T)

The pooling is a 16×16 *kernel* as ETC's `nn.AvgPool2d(kernel_size=16, stride=16)` (a 65×65 map of a
512 crop gives 4×4 = 16 nodes, a 16×16 graph); it is clamped to the map size for tiny inputs.

The ConvLSTM is trainable and shared by the student's and the teacher's sequences; gradients reach it
through both (as in ETC, the teacher's features are constants but its graph sequence still runs through
the trainable cell). The optimizer must therefore include `MultiFrameKDLoss.convlstm.parameters()`
(`EtcLoss.student_side_parameters()` returns them) — with the student's optimizer, ETC's setting is
unknown: its SD training script is not released. Beware: since the loss alone trains the cell, it can
lower the loss by making the cell ignore its input; `trainable=False` freezes the (randomly initialised)
cell, which keeps it a fixed non-linear temporal probe.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._precision import at_least_fp32, no_autocast

EPS = 1e-8


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: gates = conv([x, h]) → i, f, o, g; c' = f·c + i·tanh(g); h' = o·tanh(c')."""

    def __init__(self, input_channels: int = 1, hidden_channels: int = 4, kernel_size: int = 3):
        super().__init__()
        self.hidden_channels = int(hidden_channels)
        self.gates = nn.Conv2d(input_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                               padding=kernel_size // 2)

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

    def __init__(self, pool: int = 16, hidden_channels: int = 4, kernel_size: int = 3, trainable: bool = True):
        super().__init__()
        self.pool = int(pool)
        self.convlstm = ConvLSTMCell(1, hidden_channels, kernel_size)
        self.convlstm.requires_grad_(bool(trainable))

    def graph(self, feat: torch.Tensor) -> torch.Tensor:
        kh, kw = min(self.pool, feat.shape[-2]), min(self.pool, feat.shape[-1])
        return self_cosine_graph(F.avg_pool2d(feat, (kh, kw), stride=(kh, kw)))

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
