"""Paired training augmentation: one random draw applied identically to a frame, its label, its neighbour
frame (and label) and the flow field between them, as ETC's temporal loss needs.

The geometric part (scale 0.5–2.0, rotation ±10°, horizontal flip, crop) is ONE affine matrix M mapping
input pixel coordinates to output pixel coordinates (pixel centres at integer positions), applied with one
`cv2.warpAffine` per array. Areas outside the source become the mean colour (images), 255 (labels) or NaN
(flow). A flow vector f at x moves with the frame: the point x + f goes to M(x + f) = Mx + A f, so the
transformed flow at Mx is A f, with A the 2x2 linear part of M (scale multiplies, flip negates u, rotation
rotates), and its positions are resampled like the image's. Gaussian blur (same sigma for every image of
the draw) touches images only. Class-probability maps (distillation targets) are warped like images, with NaN
outside the source.

    aug = PairedAugment(crop=(512, 512))
    p = aug.sample(rng, frame.shape[:2])
    frame, neighbour = aug.apply_image(p, frame), aug.apply_image(p, neighbour)
    label, flow = aug.apply_label(p, label), aug.apply_flow(p, flow)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.labels import IGNORE_INDEX

IMAGENET_MEAN_BGR = (103.53, 116.28, 123.675)


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the random parameters; `matrix` is the 2x3 affine map input → output pixel coordinates."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    scale: float
    angle: float  # degrees, counter-clockwise as seen on screen
    flip: bool
    offset: tuple[int, int]  # (x0, y0) of the crop window in the scaled, rotated, flipped canvas
    blur_sigma: float  # 0 = no blur
    matrix: np.ndarray


@dataclass(frozen=True)
class PairedAugment:
    """Random scale, rotation, flip, crop and blur; `crop=None` keeps the scaled size (no crop)."""

    crop: tuple[int, int] | None = (512, 512)  # (height, width)
    scale_range: tuple[float, float] = (0.5, 2.0)
    max_rotation: float = 10.0  # degrees
    flip_prob: float = 0.5
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    mean_bgr: tuple[float, float, float] = IMAGENET_MEAN_BGR
    ignore_index: int = IGNORE_INDEX

    def sample(self, rng: np.random.Generator, hw: tuple[int, int]) -> AugmentParams:
        """Draw every random parameter once, for frames of size `hw` = (height, width)."""
        scale = float(rng.uniform(*self.scale_range))
        angle = float(rng.uniform(-self.max_rotation, self.max_rotation))
        flip = bool(rng.random() < self.flip_prob)
        blur = float(rng.uniform(*self.blur_sigma)) if rng.random() < self.blur_prob else 0.0
        canvas = (max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale)))
        out = tuple(self.crop) if self.crop is not None else canvas
        # a canvas smaller than the crop is placed at a random position inside it (the rest is padding)
        offset = tuple(int(rng.integers(min(0, c - o), max(0, c - o) + 1)) for c, o in zip(canvas[::-1], out[::-1]))
        return make_params(hw, out, scale, angle, flip, offset, blur)

    def __call__(
        self, rng: np.random.Generator, image: np.ndarray, label=None, neighbour=None, neighbour_label=None, flow=None
    ) -> dict[str, np.ndarray]:
        """Draw once and transform every array given (keys: image, label, neighbour, neighbour_label, flow,
        params); `flow` is between `image` and `neighbour`, in either direction."""
        p = self.sample(rng, image.shape[:2])
        out = {"image": self.apply_image(p, image), "params": p}
        for key, arr, fn in (
            ("label", label, self.apply_label),
            ("neighbour", neighbour, self.apply_image),
            ("neighbour_label", neighbour_label, self.apply_label),
            ("flow", flow, self.apply_flow),
        ):
            if arr is not None:
                out[key] = fn(p, arr)
        return out

    def apply_image(self, p: AugmentParams, image: np.ndarray) -> np.ndarray:
        """Warp (linear, mean-padded) then blur an image; dtype is kept."""
        import cv2

        border = self.mean_bgr if image.ndim == 3 else float(np.mean(self.mean_bgr))
        out = _warp(p, image, cv2.INTER_LINEAR, border)
        if p.blur_sigma > 0:
            out = cv2.GaussianBlur(out, (0, 0), p.blur_sigma)
        return out

    def apply_label(self, p: AugmentParams, label: np.ndarray) -> np.ndarray:
        import cv2

        return _warp(p, label, cv2.INTER_NEAREST, self.ignore_index)

    def apply_probs(self, p: AugmentParams, probs: np.ndarray) -> np.ndarray:
        """Warp an HxWxC map of class probabilities (linear, float32); NaN where the output has no source pixel,
        so a loss can leave padding out. No blur: a target describes the scene, not the camera."""
        import cv2

        out = _warp(p, probs.astype(np.float32, copy=False), cv2.INTER_LINEAR, (0.0,) * 4)
        # coverage of each output pixel by source pixels (a NaN border would also poison the frame's last row
        # and column, which bilinear sampling reads with weight 0)
        covered = _warp(p, np.ones(probs.shape[:2], np.float32), cv2.INTER_LINEAR, 0.0)
        out[covered < 1 - 1e-3] = np.nan
        return out

    def apply_flow(self, p: AugmentParams, flow: np.ndarray) -> np.ndarray:
        """Resample the positions like an image (linear, NaN outside) and map each vector by A."""
        import cv2

        a = p.matrix[:, :2].astype(np.float32)
        moved = _warp(p, flow.astype(np.float32, copy=False), cv2.INTER_LINEAR, (np.nan, np.nan))
        return (moved @ a.T).astype(np.float32)


def make_params(
    in_hw, out_hw, scale: float, angle: float, flip: bool, offset=(0, 0), blur_sigma: float = 0.0
) -> AugmentParams:
    """Build the parameters (and the affine matrix) from explicit values, e.g. for tests or evaluation."""
    import cv2

    h, w = in_hw
    canvas_w, canvas_h = max(1, round(w * scale)), max(1, round(h * scale))
    sx, sy = canvas_w / w, canvas_h / h  # the exact ratios of the rounded canvas
    # scale with pixel centres kept aligned: x' = s (x + 0.5) - 0.5
    m_scale = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
    cx, cy = (canvas_w - 1) / 2.0, (canvas_h - 1) / 2.0
    rot = np.vstack([cv2.getRotationMatrix2D((cx, cy), angle, 1.0), [0, 0, 1]])
    m_flip = np.array([[-1, 0, canvas_w - 1], [0, 1, 0], [0, 0, 1]]) if flip else np.eye(3)
    m_crop = np.array([[1, 0, -offset[0]], [0, 1, -offset[1]], [0, 0, 1]])
    matrix = (m_crop @ m_flip @ rot @ m_scale)[:2]
    return AugmentParams(tuple(in_hw), tuple(out_hw), scale, angle, flip, tuple(offset), blur_sigma, matrix)


def _warp(p: AugmentParams, array: np.ndarray, interpolation: int, border) -> np.ndarray:
    import cv2

    if array.shape[:2] != p.in_hw:
        raise ValueError(f"augment parameters drawn for {p.in_hw}, got an array of {array.shape[:2]}")
    h, w = p.out_hw
    border = tuple(border) if isinstance(border, (tuple, list)) else (border,) * 4
    out = cv2.warpAffine(
        array, p.matrix, (w, h), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=border
    )
    if out.ndim < array.ndim:
        out = out[..., None]
    return out
