"""Per-frame nuisances of real video: exposure flicker, white-balance drift, motion blur, sensor noise and
JPEG-like compression artefacts — drawn afresh for every frame, so that a per-frame model sees each
frame slightly differently (and flickers), as it does on real footage. Labels and flow are untouched."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Sensor:
    """A sequence's sensor: how strongly each nuisance shows (drawn once per sequence)."""

    flicker: float  # std of the log exposure gain per frame
    blur_prob: float  # probability that a frame is motion-blurred
    read_noise: float  # std of the additive noise, 0..1 scale
    shot_noise: float  # std factor of the signal-dependent noise
    jpeg: tuple[int, int]  # quality range
    vignette: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Sensor:
        lo = int(rng.integers(30, 70))
        return cls(
            flicker=rng.uniform(0.02, 0.08),
            blur_prob=rng.uniform(0.2, 0.8),
            read_noise=rng.uniform(0.003, 0.012),
            shot_noise=rng.uniform(0.01, 0.03),
            jpeg=(lo, lo + 25),
            vignette=rng.uniform(0.0, 0.3),
        )


def clean_bgr(rgb: np.ndarray) -> np.ndarray:
    """float RGB 0..1 → uint8 BGR, with no nuisance."""
    return np.rint(np.clip(rgb[..., ::-1], 0, 1) * 255).astype(np.uint8)


def noise_bank(rng: np.random.Generator, size: int) -> np.ndarray:
    """2·size standard normal samples; each frame takes a window at a random offset (cheaper than drawing
    size fresh samples per frame, and the windows of two frames are as good as independent)."""
    return rng.standard_normal(2 * size, dtype=np.float32)


def degrade(rgb: np.ndarray, sensor: Sensor, rng: np.random.Generator, bank: np.ndarray | None = None) -> np.ndarray:
    """float RGB 0..1 (HxWx3) → uint8 BGR as a real, imperfect camera of this `sensor` would record it.
    Sensor noise comes from `bank` (see noise_bank) when given, else is drawn from `rng`."""
    h, w = rgb.shape[:2]
    gain = np.exp(rng.normal(0, sensor.flicker)) * (1 + rng.normal(0, 0.015, 3))
    img = rgb[..., ::-1] * gain[::-1].astype(np.float32)
    if sensor.vignette:
        yy, xx = np.ogrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
        img *= (1 - sensor.vignette * 0.5 * (xx**2 + yy**2)).astype(np.float32)[..., None]
    if rng.random() < sensor.blur_prob:
        length, angle = rng.uniform(1.5, 5.0) * w / 512, rng.normal(0, 25)  # 1.5..5 px at 512 px wide
        if length > 1.2:
            img = cv2.filter2D(img, -1, _line_kernel(length, angle), borderType=cv2.BORDER_REFLECT)
    sigma = np.sqrt(sensor.read_noise**2 + sensor.shot_noise**2 * np.maximum(img, 0) / 4)
    if bank is not None and bank.size >= 2 * img.size:
        start = int(rng.integers(img.size))
        noise = bank[start : start + img.size].reshape(img.shape)
    else:
        noise = rng.standard_normal(img.shape, dtype=np.float32)
    img = img + sigma * noise
    out = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
    quality = int(rng.integers(sensor.jpeg[0], sensor.jpeg[1] + 1))
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else out


def _line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised linear motion-blur kernel of `length` pixels at `angle_deg` from horizontal."""
    size = int(np.ceil(length)) | 1
    k = np.zeros((size, size), np.float32)
    c, a = size // 2, np.deg2rad(angle_deg)
    dx, dy = np.cos(a) * length / 2, np.sin(a) * length / 2
    cv2.line(
        k,
        (round((c - dx) * 16), round((c - dy) * 16)),
        (round((c + dx) * 16), round((c + dy) * 16)),
        1.0,
        1,
        cv2.LINE_AA,
        shift=4,
    )
    return k / k.sum()
