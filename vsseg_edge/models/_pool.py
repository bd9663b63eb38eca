"""Exportable adaptive average pooling and the pyramid pooling module (PPM).

`F.adaptive_avg_pool2d` with an output size that does not divide the input (bins 3 and 6 on an 8×16
feature map) fails in torch's legacy ONNX exporter and explodes in the dynamo exporter. `adaptive_avg_pool2d`
here computes exactly the same numbers with standard ops: an `avg_pool2d` when the bin divides both
sides, otherwise two constant pooling matrices, Y = P_h @ X @ P_w^T, built from adaptive pooling's
window formula start = floor(i·n/b), end = ceil((i+1)·n/b). Shapes are static, so the matrices are
constants in the exported graph (MatMul nodes).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def pooling_matrix(size: int, bins: int) -> list[list[float]]:
    """The bins×size matrix whose row i averages adaptive pooling's window i (as nested lists)."""
    rows = []
    for i in range(bins):
        start = (i * size) // bins
        end = -((-(i + 1) * size) // bins)  # ceil((i+1)·size/bins)
        weight = 1.0 / (end - start)
        rows.append([weight if start <= j < end else 0.0 for j in range(size)])
    return rows


def adaptive_avg_pool2d(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal to `F.adaptive_avg_pool2d(x, bins)` (to float rounding) using only AvgPool / MatMul."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % bins == 0 and w % bins == 0:
        kernel = (h // bins, w // bins)
        return F.avg_pool2d(x, kernel_size=kernel, stride=kernel)
    if x.is_cuda and not x.requires_grad and not _tracing():
        p_h, p_w_t = _cached_matrices(h, w, bins, x.dtype, x.device)  # no host→device copy: CUDA-graph safe
    else:
        p_h, p_w_t = _matrices(h, w, bins, x.dtype, x.device)
    return torch.matmul(torch.matmul(p_h, x), p_w_t)


def _matrices(h: int, w: int, bins: int, dtype: torch.dtype, device: torch.device):
    p_h = torch.tensor(pooling_matrix(h, bins), dtype=dtype, device=device)
    return p_h, torch.tensor(pooling_matrix(w, bins), dtype=dtype, device=device).t()


@functools.lru_cache(maxsize=64)
def _cached_matrices(h: int, w: int, bins: int, dtype: torch.dtype, device: torch.device):
    """Inference on CUDA: the matrices are made once per shape, so a CUDA graph can capture the forward."""
    return _matrices(h, w, bins, dtype, device)


def _tracing() -> bool:
    """Exporters and compilers must see the matrices being built (constants of their graph), never a cache."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


class PyramidPooling(nn.Module):
    """PSPNet's PPM: for each bin, pool → 1×1 conv → BN → ReLU → bilinear upsample; concat with the input.

    The upsampling uses align_corners=True, as the ETC / semseg reference code (model/pspnet_18.py) does,
    so weights trained there behave the same here. Output channels: in_dim + len(bins)·reduction_dim.
    """

    def __init__(self, in_dim: int, reduction_dim: int, bins=(1, 2, 3, 6), align_corners: bool = True):
        super().__init__()
        self.bins = tuple(int(b) for b in bins)
        self.align_corners = align_corners
        self.features = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_dim, reduction_dim, kernel_size=1, bias=False),
                nn.BatchNorm2d(reduction_dim),
                nn.ReLU(inplace=True),
            )
            for _ in self.bins
        )
        self.out_channels = in_dim + len(self.bins) * reduction_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        out = [x]
        for b, branch in zip(self.bins, self.features):
            y = branch(adaptive_avg_pool2d(x, b))
            out.append(F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners))
        return torch.cat(out, 1)
