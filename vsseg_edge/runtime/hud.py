"""Colour overlay of a label map on its frame, and the FPS / latency text drawn on the live window."""

from __future__ import annotations

import numpy as np

from ..core.labels import LabelSet


def bgr_lut(label_set: LabelSet) -> np.ndarray:
    """256×3 BGR lookup table: class id → colour; ignore and unknown ids are black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: label_set.num_classes] = np.asarray(label_set.palette, np.uint8)[:, ::-1]
    return lut


def overlay(frame_bgr: np.ndarray, labels: np.ndarray, lut: np.ndarray, alpha: float) -> np.ndarray:
    """Blend the colourised labels over the frame: alpha = 0 shows the frame, 1 only the colours."""
    import cv2

    colours = lut[labels]
    return cv2.addWeighted(colours, float(alpha), frame_bgr, 1.0 - float(alpha), 0.0)


def draw_hud(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """Draw text lines top-left with a dark outline so they read on any background (in place)."""
    import cv2

    y = 22
    for line in lines:
        cv2.putText(image, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        y += 22
    return image
