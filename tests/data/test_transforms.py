"""Paired augmentation: one draw, applied identically; flow vectors follow the geometry so warping still works."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vsseg_edge.data.transforms import PairedAugment, make_params
from vsseg_edge.data.warp import warp_backward

H, W = 64, 128


def _texture(seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).uniform(0, 255, (H, W, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 4 - 384, 0, 255).astype(np.uint8)


def _affine_pair(seed: int = 0):
    """Frame a, frame b = a moved by a small affine motion B, and the exact flow a→b (NaN where it leaves b)."""
    a = _texture(seed)
    b_mat = cv2.getRotationMatrix2D((W / 2, H / 2), 3.0, 1.04)
    b_mat[:, 2] += (3.0, 2.0)
    b = cv2.warpAffine(a, b_mat, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    xs, ys = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    bx = b_mat[0, 0] * xs + b_mat[0, 1] * ys + b_mat[0, 2]
    by = b_mat[1, 0] * xs + b_mat[1, 1] * ys + b_mat[1, 2]
    flow = np.dstack([bx - xs, by - ys]).astype(np.float32)
    flow[(bx < 0) | (bx > W - 1) | (by < 0) | (by > H - 1)] = np.nan
    return a, b, flow


def _warp_error(a, b, flow) -> tuple[float, float]:
    """Mean |warp(b, flow) − a| over valid pixels (eroded by 2 px against padding seams), and the valid share."""
    warped, valid = warp_backward(b, flow, "linear")
    valid = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    err = np.abs(warped.astype(np.float32) - a.astype(np.float32)).mean(axis=2)
    return float(err[valid].mean()), float(valid.mean())


def test_vectors_follow_scale_flip_and_rotation():
    flow = np.dstack([np.full((H, W), 3, np.float32), np.full((H, W), 2, np.float32)])
    aug = PairedAugment(crop=None)
    out = aug.apply_flow(make_params((H, W), (2 * H, 2 * W), 2.0, 0.0, True), flow)
    np.testing.assert_allclose(out[10:-10, 10:-10], np.broadcast_to([-6, 4], (2 * H - 20, 2 * W - 20, 2)), atol=1e-4)
    out = aug.apply_flow(make_params((H, W), (H, W), 1.0, 10.0, False), flow)
    r = np.radians(10.0)  # cv2 angles are counter-clockwise on screen (y points down)
    expected = [3 * np.cos(r) + 2 * np.sin(r), -3 * np.sin(r) + 2 * np.cos(r)]
    np.testing.assert_allclose(out[H // 2, W // 2], expected, atol=1e-4)
    assert np.isnan(out[0, 0]).all()  # the rotated-in corner has no flow


def test_warping_still_works_after_augmentation():
    a, b, flow = _affine_pair()
    base_err, _ = _warp_error(a, b, flow)
    assert base_err < 3.0
    aug = PairedAugment(crop=(48, 96), blur_prob=0.0)
    rng = np.random.default_rng(7)
    for _ in range(6):
        p = aug.sample(rng, (H, W))
        a2, b2, f2 = aug.apply_image(p, a), aug.apply_image(p, b), aug.apply_flow(p, flow)
        err, share = _warp_error(a2, b2, f2)
        assert share > 0.1 and err < 4.0, (p, err, share)
        # the same positions with untransformed vectors (a flow only resampled, like an image) does not warp
        if abs(p.scale - 1) > 0.2 or p.flip:
            wrong = _resample_only(aug, p, flow)
            assert _warp_error(a2, b2, wrong)[0] > 2 * err + 3.0


def _resample_only(aug, p, array):
    """Positions resampled like an image, vectors (or pixels) left as they are; no blur."""
    return cv2.warpAffine(
        array,
        p.matrix,
        p.out_hw[::-1],
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(np.nan,) * 4 if array.dtype == np.float32 else aug.mean_bgr,
    )


def test_labels_images_and_padding():
    aug = PairedAugment(crop=(100, 200), scale_range=(0.5, 0.5), blur_prob=0.0)
    p = aug.sample(np.random.default_rng(0), (H, W))
    label = np.random.default_rng(1).integers(0, 19, (H, W)).astype(np.uint8)
    out = aug.apply_label(p, label)
    assert out.shape == (100, 200) and out.dtype == np.uint8
    assert set(np.unique(out)) <= set(range(19)) | {255}  # nearest: no invented classes
    assert (out == 255).mean() > 0.8  # a 32x64 canvas inside a 100x200 crop: mostly padding
    img = aug.apply_image(p, np.zeros((H, W, 3), np.uint8))
    assert img.shape == (100, 200, 3) and tuple(img[99, 199]) == (104, 116, 124)  # mean padding (BGR)


def test_one_draw_is_deterministic_and_shared():
    aug = PairedAugment(crop=(32, 32))
    p1 = aug.sample(np.random.default_rng(3), (H, W))
    np.random.seed(123)  # global state must not matter
    p2 = aug.sample(np.random.default_rng(3), (H, W))
    np.testing.assert_array_equal(p1.matrix, p2.matrix)
    assert (p1.blur_sigma, p1.flip, p1.offset) == (p2.blur_sigma, p2.flip, p2.offset)
    draws = [aug.sample(np.random.default_rng(s), (H, W)) for s in range(40)]
    assert 0.5 <= min(d.scale for d in draws) < 0.7 and 1.8 < max(d.scale for d in draws) <= 2.0
    assert max(abs(d.angle) for d in draws) <= 10.0 and 5 < sum(d.flip for d in draws) < 35
    blurred = next(d for d in draws if d.blur_sigma > 0.5)
    a = _texture()
    # blur uses the same sigma for both frames: identical inputs give identical outputs
    np.testing.assert_array_equal(aug.apply_image(blurred, a), aug.apply_image(blurred, a.copy()))
    assert not np.array_equal(aug.apply_image(blurred, a), _resample_only(aug, blurred, a))


def test_wrong_size_rejected():
    aug = PairedAugment(crop=(32, 32))
    p = aug.sample(np.random.default_rng(0), (H, W))
    with pytest.raises(ValueError, match="drawn for"):
        aug.apply_label(p, np.zeros((H + 1, W), np.uint8))


def test_call_transforms_every_array_with_one_draw():
    a, b, flow = _affine_pair(2)
    label = np.random.default_rng(0).integers(0, 19, (H, W)).astype(np.uint8)
    aug = PairedAugment(crop=(48, 96), blur_prob=0.0)
    out = aug(np.random.default_rng(5), a, label=label, neighbour=b, flow=flow)
    assert set(out) == {"image", "label", "neighbour", "flow", "params"}
    p = aug.sample(np.random.default_rng(5), (H, W))
    np.testing.assert_array_equal(out["params"].matrix, p.matrix)
    np.testing.assert_array_equal(out["label"], aug.apply_label(p, label))
    assert _warp_error(out["image"], out["neighbour"], out["flow"])[0] < 4.0
