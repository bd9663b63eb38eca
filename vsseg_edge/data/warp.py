"""The one flow warp: sample a frame b at x + flow_ab(x), with one rule for what lies inside the frame.

Convention (as in `flowio`): a flow a→b is float32 HxWx2 (u, v); the pixel at x in frame a is seen at
x + flow(x) in frame b; NaN marks an unknown vector. `warp_backward(b, flow_ab)` therefore brings b into
a's pixel grid, which is what TC (warp the prediction of t+1 into t), exact-flow chaining and the temporal
loss (warp the neighbour into t) need. Pixel centres sit at integer coordinates 0..W−1.

Inside the frame (`inside_frame`, the same rule for numpy arrays and torch tensors, so the temporal loss
in `train.losses.warp` keeps exactly the pixels this module keeps):
- nearest: the sample rounds to a pixel of the frame, i.e. −0.5 ≤ x < W − 0.5 (and likewise for y);
- linear (bilinear, and ETC's Resample2d): all four neighbours are pixels of the frame, 0 ≤ x ≤ W − 1.
A NaN vector or a sample outside the frame gives `fill` and is invalid.

Interpolations: `nearest` for label maps (never invents a class), `linear` for images, logits and flow
fields, `resample2d` for ETC's TC script compatibility (bilinear with FlowNet2 Resample2d's float
arithmetic, bit for bit; see `metrics.tc`).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import VssegError

INTERPOLATIONS = ("nearest", "linear", "resample2d")
_FAR = -1.0e5  # sample position of an invalid vector: outside any frame


def inside_frame(x, y, height: int, width: int, interpolation: str):
    """Where sample positions (x, y) lie inside a height×width frame, by the rule of the module docstring.

    Works on numpy arrays and torch tensors alike (comparisons only).
    """
    if interpolation == "nearest":
        return (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def sample_positions(flow: np.ndarray, interpolation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map_x, map_y, valid) for sampling at x + flow(x); invalid positions point far outside the frame."""
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise VssegError(f"flow has shape {flow.shape}, expected HxWx2")
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(map_x) & np.isfinite(map_y) & inside_frame(map_x, map_y, h, w, interpolation)
    map_x[~valid] = _FAR
    map_y[~valid] = _FAR
    return map_x, map_y, valid


def warp_backward(array_b: np.ndarray, flow_ab: np.ndarray, interpolation: str = "nearest", fill=0):
    """Sample b (HxW or HxWxC) at x + flow_ab(x): returns (b warped into a's grid, valid mask HxW bool)."""
    import cv2

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if array_b.shape[:2] != np.shape(flow_ab)[:2]:
        raise VssegError(f"warp: array is {array_b.shape[:2]} but flow is {np.shape(flow_ab)[:2]} (HxW)")
    map_x, map_y, valid = sample_positions(flow_ab, interpolation)
    if interpolation == "resample2d":
        warped = _resample2d(array_b.astype(np.float32), map_x, map_y)
    else:
        mode = cv2.INTER_NEAREST if interpolation == "nearest" else cv2.INTER_LINEAR
        src = array_b.astype(np.float32) if array_b.dtype in (np.int32, np.int64, np.bool_) else array_b
        warped = cv2.remap(src, map_x, map_y, mode, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if warped.ndim < array_b.ndim:  # cv2 drops a trailing channel axis of size 1
            warped = warped[..., None]
        warped = warped.astype(array_b.dtype, copy=False)
    warped[~valid] = fill
    return warped, valid


def _resample2d(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Bilinear sampling of an HxW float32 map with the arithmetic of FlowNet2's Resample2d kernel.

    Indices clamp to the border; the weights are formed in double from float32 fractions and each of the
    four terms is added to a float32 accumulator, so truncating the result to uint8 gives the same class
    ids as ETC's TC script (cv2.remap INTER_LINEAR rounds its weights and disagrees by one on a few percent
    of the pixels near class boundaries).
    """
    if img.ndim != 2:
        raise ValueError(f"resample2d samples HxW maps, got shape {img.shape}")
    h, w = img.shape
    x0, y0 = np.floor(map_x), np.floor(map_y)
    alpha = (map_x - x0).astype(np.float64)
    beta = (map_y - y0).astype(np.float64)
    xl = np.clip(x0, 0, w - 1).astype(np.intp)
    xr = np.clip(x0 + 1, 0, w - 1).astype(np.intp)
    yt = np.clip(y0, 0, h - 1).astype(np.intp)
    yb = np.clip(y0 + 1, 0, h - 1).astype(np.intp)
    val = np.zeros(img.shape, np.float32)
    for weight, yy, xx in (
        ((1.0 - alpha) * (1.0 - beta), yt, xl),
        (alpha * (1.0 - beta), yt, xr),
        ((1.0 - alpha) * beta, yb, xl),
        (alpha * beta, yb, xr),
    ):
        val = (val.astype(np.float64) + weight * img[yy, xx]).astype(np.float32)
    return val
