"""The one preprocessing (`core.preprocess`, `PreprocessSpec`) on a torch device, plus the label resize and overlay.

`core.preprocess` stays THE definition. This module is a second implementation of the same spec for frames that
are already on a GPU (where a 1024×2048 resize + normalise on the host would cost more than the model), and is
tested equal to `core.preprocess` on CPU tensors (tests/runtime/test_device_preprocess.py) and on CUDA where
present: resized uint8 frames within 1 of OpenCV's, label maps identical.

- Resize: OpenCV's `cv2.resize` of a uint8 frame, written as separable taps: for every output row and column the
  source indices and weights, computed on the host in float64 with OpenCV's own rules (`resize_taps`), applied on
  the device as gathers and multiply-adds in float32, then rounded to uint8 before normalising, as OpenCV does.
  INTER_LINEAR: half-pixel centres, clamped at the borders (a 2× shrink of both axes is OpenCV's 2×2 box);
  INTER_AREA: pixel-coverage weights when shrinking both axes, OpenCV's area-zoom weights otherwise;
  INTER_NEAREST: floor(d · in / out). OpenCV rounds its fixed-point paths (linear, the 2× box) half up and its
  float paths (area) half to even; so do the taps. Integer-factor shrinks and nearest are exact; other linear
  factors differ by 1 on some pixels, because OpenCV's linear weights are 11-bit fixed point.
- Channel order, mean/std, scale, layout, dtype: `core.preprocess.normalize` step by step (the same float32
  constants), so the model input is exact wherever the resized frame is.
- Labels back to the frame's size: OpenCV's INTER_NEAREST rule (exact, as `labels_to_frame_size`).
- Overlay: `hud.overlay` (colour lookup, alpha blend rounded half to even as `cv2.addWeighted`).

The taps are built once per (frame size, spec) and live on the device; every call is a fixed sequence of tensor
ops on fixed shapes, so a CUDA graph can capture it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.errors import VssegError
from ..core.preprocess import PreprocessSpec

HALF_UP, HALF_EVEN, EXACT = "half_up", "half_even", "exact"


def _linear_axis(n_in: int, n_out: int, area_zoom: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Two taps per output: OpenCV's INTER_LINEAR coordinates, or its INTER_AREA zoom coordinates."""
    scale, inv = 1.0 / (n_out / n_in), n_out / n_in  # OpenCV: scale_x = 1. / inv_scale_x
    d = np.arange(n_out, dtype=np.float64)
    if area_zoom:
        sx = np.floor(d * scale)
        fx = (d + 1) - (sx + 1) * inv
        fx = np.where(fx <= 0, 0.0, fx - np.floor(fx))
    else:
        src = (d + 0.5) * scale - 0.5
        sx = np.floor(src)
        fx = src - sx
    low, high = sx < 0, sx >= n_in - 1
    sx = np.where(low, 0, np.where(high, n_in - 1, sx)).astype(np.int64)
    fx = np.where(low | high, 0.0, fx)
    return np.stack([sx, np.minimum(sx + 1, n_in - 1)], 1), np.stack([1.0 - fx, fx], 1)


def _area_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's computeResizeAreaTab: each output averages the source cells it covers, by coverage."""
    scale = n_in / n_out
    rows: list[list[tuple[int, float]]] = []
    for d in range(n_out):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_in - f1)
        s1, s2 = math.ceil(f1), min(math.floor(f2), n_in - 1)
        s1 = min(s1, s2)
        taps = [(s1 - 1, (s1 - f1) / cell)] if s1 - f1 > 1e-3 else []
        taps += [(s, 1.0 / cell) for s in range(s1, s2)]
        if f2 - s2 > 1e-3:
            taps.append((s2, min(min(f2 - s2, 1.0), cell) / cell))
        rows.append(taps)
    k = max(len(t) for t in rows)
    idx, w = np.zeros((n_out, k), np.int64), np.zeros((n_out, k), np.float64)
    for d, taps in enumerate(rows):
        for j, (s, a) in enumerate(taps):
            idx[d, j], w[d, j] = s, a
    return idx, w


def _box_axis(n_in: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.arange(n_in // factor)[:, None]
    return d * factor + np.arange(factor)[None, :], np.full((n_in // factor, factor), 1.0 / factor)


def _nearest_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    ifx = 1.0 / (n_out / n_in)
    idx = np.minimum(np.floor(np.arange(n_out) * ifx).astype(np.int64), n_in - 1)
    return idx[:, None], np.ones((n_out, 1))


def _integer_factor(n_in: int, n_out: int) -> int | None:
    scale = n_in / n_out
    return int(round(scale)) if abs(scale - round(scale)) < np.finfo(np.float64).eps else None


def resize_taps(in_hw: tuple[int, int], out_hw: tuple[int, int], interpolation: str):
    """(rows, cols, rounding) of cv2.resize(in_hw → out_hw, interpolation) for uint8 frames.

    rows/cols are (index int64 [n_out, K], weight float64 [n_out, K]); rounding is HALF_UP, HALF_EVEN or EXACT.
    """
    (h, w), (oh, ow) = in_hw, out_hw
    if interpolation == "nearest":
        return _nearest_axis(h, oh), _nearest_axis(w, ow), EXACT
    if interpolation not in ("linear", "area"):
        raise VssegError(f"preprocessing: interpolation {interpolation!r} has no device implementation")
    fy, fx = _integer_factor(h, oh), _integer_factor(w, ow)
    shrink = h >= oh and w >= ow
    if shrink and fy and fx and (interpolation == "area" or fy == fx == 2):
        # OpenCV's fast area path (also taken by INTER_LINEAR for 2×2): a box; its 2×2 kernel rounds half up
        return _box_axis(h, fy), _box_axis(w, fx), HALF_UP if fy == fx == 2 else HALF_EVEN
    if interpolation == "area" and shrink:
        return _area_axis(h, oh), _area_axis(w, ow), HALF_EVEN
    zoom = interpolation == "area"
    return _linear_axis(h, oh, zoom), _linear_axis(w, ow, zoom), HALF_UP


class _Taps:
    """One axis's taps on the device; `apply` gathers along `dim` and sums the weighted rows/columns."""

    def __init__(self, taps: tuple[np.ndarray, np.ndarray], device):
        idx, w = taps
        self.idx = [torch.from_numpy(np.ascontiguousarray(idx[:, k])).to(device) for k in range(idx.shape[1])]
        self.w = [torch.from_numpy(w[:, k].astype(np.float32)).to(device) for k in range(w.shape[1])]
        self.unit = w.shape[1] == 1 and bool(np.all(w == 1.0))

    def apply(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        shape = [1, 1, 1]
        shape[dim] = -1
        out = None
        for idx, w in zip(self.idx, self.w):
            part = x.index_select(dim, idx)
            if self.unit:
                return part
            part = part.float().mul_(w.view(shape))
            out = part if out is None else out.add_(part)
        return out


class DevicePreprocess:
    """BGR uint8 H×W×3 frames of one size → the model input of `spec` (a batch of one), on `device`.

    The frame is resized as OpenCV would, rounded to uint8 values, then normalised and laid out exactly as
    `core.preprocess` does. Built once per frame size; calling it allocates only the op results (which torch's
    caching allocator, or a CUDA graph, serves without a driver allocation).
    """

    def __init__(self, spec: PreprocessSpec, frame_hw: tuple[int, int], device="cpu"):
        self.spec, self.frame_hw = spec, tuple(frame_hw)
        if self.frame_hw != spec.size and spec.resize == "none":
            raise VssegError(
                f"frame: is {frame_hw[0]}x{frame_hw[1]}, the model takes {spec.height}x{spec.width} "
                "and its preprocessing does not resize"
            )
        self.rows = self.cols = None
        self.rounding = EXACT
        if self.frame_hw != spec.size:
            rows, cols, self.rounding = resize_taps(self.frame_hw, spec.size, spec.interpolation)
            self.rows, self.cols = _Taps(rows, device), _Taps(cols, device)
        order = [2, 1, 0] if spec.channel_order == "rgb" else [0, 1, 2]
        self.order = torch.tensor(order, device=device)
        # the same float32 constants as core.preprocess.normalize
        self.mean = torch.from_numpy(np.asarray(spec.mean, np.float32)).to(device)
        self.inv = torch.from_numpy(np.asarray([spec.scale / s for s in spec.std], np.float32)).to(device)

    def resize(self, frame: torch.Tensor) -> torch.Tensor:
        """The resized frame, H×W×3 float32 holding uint8 values (BGR, as the frame)."""
        if tuple(frame.shape) != (*self.frame_hw, 3) or frame.dtype != torch.uint8:
            raise VssegError(
                f"frame: expected uint8 {self.frame_hw[0]}x{self.frame_hw[1]}x3, got {frame.dtype} {tuple(frame.shape)}"
            )
        if self.rows is None:
            return frame.float()
        x = self.cols.apply(self.rows.apply(frame, 0), 1).float()
        if self.rounding == HALF_UP:
            x = x.add_(0.5).floor_()
        elif self.rounding == HALF_EVEN:
            x = x.round_()
        return x.clamp_(0, 255)

    def __call__(self, frame: torch.Tensor) -> torch.Tensor:
        x = self.resize(frame)
        spec = self.spec
        if spec.dtype == "uint8":
            x = x.to(torch.uint8).index_select(2, self.order)
            return (x if spec.layout == "nhwc" else x.permute(2, 0, 1)).contiguous().unsqueeze(0)
        if spec.layout == "nchw":
            x = x.permute(2, 0, 1).index_select(0, self.order)
            x = x.sub_(self.mean.view(3, 1, 1)).mul_(self.inv.view(3, 1, 1))
        else:
            x = x.index_select(2, self.order).sub_(self.mean).mul_(self.inv)
        return x.unsqueeze(0)


class LabelResize:
    """Model-resolution labels h×w → the frame's size, OpenCV's INTER_NEAREST (as `labels_to_frame_size`)."""

    def __init__(self, labels_hw: tuple[int, int], frame_hw: tuple[int, int], device="cpu"):
        self.same = tuple(labels_hw) == tuple(frame_hw)
        if not self.same:
            rows, cols, _ = resize_taps(labels_hw, frame_hw, "nearest")
            self.rows = torch.from_numpy(rows[0][:, 0].copy()).to(device)
            self.cols = torch.from_numpy(cols[0][:, 0].copy()).to(device)

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        return labels if self.same else labels.index_select(0, self.rows).index_select(1, self.cols)


def overlay(frame: torch.Tensor, labels: torch.Tensor, lut: torch.Tensor, alpha: float) -> torch.Tensor:
    """`hud.overlay` on the device: colours = lut[labels], blended over the frame, rounded like cv2.addWeighted."""
    colours = lut.index_select(0, labels.reshape(-1).long()).view(*labels.shape, 3)
    a = float(np.float32(alpha))
    b = float(np.float32(1.0 - alpha))
    out = colours.float().mul_(a).add_(frame.float().mul_(b))
    return out.round_().clamp_(0, 255).to(torch.uint8)
