"""Backward warping with optical flow, flow validity, and flow resizing.

Convention (the same as `vsseg_edge.data.flowio`): `flow` is N×2×H×W (u, v) in pixels, *forward* from
frame t to a neighbour frame n: the pixel x of t is seen at x + flow(x) in n. Warping the neighbour
into t therefore samples it there:

    warp(x_n, flow)(x) = x_n(x + flow(x))        (bilinear)

as ETC's Resample2d / grid_sample, with border padding and align_corners=True, i.e. pixel centres at
integer coordinates 0..W−1 mapped onto −1..1 — the convention of the numpy warp `data.warp`, whose
"inside the frame" rule the validity mask applies. This is the differentiable (torch) counterpart of that
warp, for the temporal loss. Out-of-frame samples repeat the border; the validity mask marks them (and NaN
vectors, e.g. KITTI's invalid bit) so losses can leave them out. NaN vectors are
replaced by 0 before sampling so that they never poison the result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...data.warp import inside_frame
from ._precision import at_least_fp32


def _check_flow(flow: torch.Tensor) -> None:
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be N×2×H×W, got shape {tuple(flow.shape)}")


def _sample_coords(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute pixel coordinates x + u, y + v (N×H×W each) that the flow points at."""
    n, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    return xs + flow[:, 0], ys + flow[:, 1]


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Sample N×C×H×W `x` at x + flow (bilinear, align_corners=True); differentiable w.r.t. `x`.

    `flow` must have x's spatial size (see `resize_flow`); NaN vectors sample at the pixel itself.
    Coordinates and sampling run in at least float32 (half precision cannot address pixels of large
    frames), so the result is float32 for half-precision inputs.
    """
    _check_flow(flow)
    if tuple(flow.shape[-2:]) != tuple(x.shape[-2:]) or flow.shape[0] != x.shape[0]:
        raise ValueError(f"flow {tuple(flow.shape)} does not match the warped tensor {tuple(x.shape)}")
    x = at_least_fp32(x)
    flow = torch.nan_to_num(flow.to(x.dtype), nan=0.0, posinf=0.0, neginf=0.0)
    sx, sy = _sample_coords(flow)
    h, w = x.shape[-2:]
    gx = 2.0 * sx / max(w - 1, 1) - 1.0
    gy = 2.0 * sy / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def flow_validity(flow: torch.Tensor, exclude_out_of_frame: bool = True) -> torch.Tensor:
    """N×1×H×W float mask: 1 where the vector is finite (and, if asked, lands inside the frame)."""
    _check_flow(flow)
    flow = at_least_fp32(flow)
    valid = torch.isfinite(flow).all(dim=1)
    if exclude_out_of_frame:  # the bilinear rule of the one warp (data.warp.inside_frame), shared with TC
        sx, sy = _sample_coords(torch.nan_to_num(flow, nan=-1e9, posinf=-1e9, neginf=-1e9))
        valid = valid & inside_frame(sx, sy, flow.shape[-2], flow.shape[-1], "linear")
    return valid.unsqueeze(1).to(flow.dtype)


def resize_flow(flow: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Resize an N×2×H×W flow field to `size` (h, w) AND rescale its vectors to the new pixel grid.

    `align_corners` names how the two grids correspond. False (default; the models upsample their
    stride-8 logits that way, inputs being multiples of 8): pixel centres x+½ scale by w/W, so a
    displacement scales by w/W. True (ETC's 8k+1 crops): pixel i maps to i·(w−1)/(W−1), displacements
    scale by (w−1)/(W−1). Values are resampled bilinearly; a NaN vector spreads to its bilinear
    neighbours, which the validity mask then drops.
    """
    _check_flow(flow)
    flow = at_least_fp32(flow)
    h_in, w_in = flow.shape[-2:]
    h, w = int(size[0]), int(size[1])
    if (h, w) == (h_in, w_in):
        return flow
    out = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=align_corners)
    if align_corners:
        sx = (w - 1) / max(w_in - 1, 1)
        sy = (h - 1) / max(h_in - 1, 1)
    else:
        sx, sy = w / w_in, h / h_in
    scale = torch.tensor([sx, sy], dtype=out.dtype, device=out.device).view(1, 2, 1, 1)
    return out * scale
