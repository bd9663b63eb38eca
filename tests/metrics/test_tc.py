"""Temporal consistency: hand-computed pair, translating scenes with exact flow, flicker, modes, occlusion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vsseg_edge.core.errors import VssegError
from vsseg_edge.metrics import TemporalConsistency, occluded_pixels, warp_labels
from vsseg_edge.metrics.tc import tc_of_counts

H, W = 64, 128
SHIFT = (2, 1)  # scene moves so that frame t+1 shows the scene 2 px right, 1 px down of frame t


def test_hand_computed_pair():
    pred_t1 = np.array([[0, 0, 1, 1], [2, 2, 1, 1]], np.uint8)
    pred_t = np.array([[0, 0, 1, 1], [2, 2, 2, 1]], np.uint8)
    flow = np.zeros((2, 4, 2), np.float32)
    flow[..., 0] = 1.0  # x looks up pred_t1 at x + 1: the last column leaves the frame
    warped, valid = warp_labels(pred_t1, flow)
    np.testing.assert_array_equal(valid, [[1, 1, 1, 0], [1, 1, 1, 0]])
    np.testing.assert_array_equal(warped[:, :3], [[0, 1, 1], [2, 1, 1]])
    tc = TemporalConsistency(4)
    tc.update(pred_t, pred_t1, flow)
    # valid pixels: pred_t [0 0 1 | 2 2 2], warped [0 1 1 | 2 1 1]
    # class 0: I 1, U 2+1-1 = 2; class 1: I 1, U 1+4-1 = 4; class 2: I 1, U 3+1-1 = 3; class 3 absent: NaN
    np.testing.assert_allclose(tc.per_class()[:3], [1 / 2, 1 / 4, 1 / 3])
    assert math.isnan(tc.per_class()[3])
    assert tc.tc() == pytest.approx((1 / 2 + 1 / 4 + 1 / 3) / 3)
    report = tc.to_dict(["a", "b", "c", "d"])
    assert report["nan_classes"] == ["d"] and report["pairs"] == 1 and report["tc_occ"] is None
    assert report["valid_pixel_fraction"] == 0.75


def _scene(rng, frames, num_classes=6):
    """A translating blocky scene: frames of labels HxW and the exact forward/backward flow between them."""
    dx, dy = SHIFT
    big = np.repeat(np.repeat(rng.integers(0, num_classes, (H // 8 + 2, W // 8 + 2)), 8, 0), 8, 1)
    big = big.astype(np.uint8)
    seq = [big[t * dy : t * dy + H, t * dx : t * dx + W].copy() for t in range(frames)]
    fw = np.zeros((H, W, 2), np.float32)
    fw[..., 0], fw[..., 1] = -dx, -dy  # content at x in frame t is at x - shift in frame t+1
    return seq, fw, -fw


def _flicker(seq, rate, rng, num_classes=6):
    """Flip the class of `rate` of the pixels in every other frame."""
    out = []
    for t, lab in enumerate(seq):
        lab = lab.copy()
        if t % 2 == 1 and rate > 0:
            m = rng.random(lab.shape) < rate
            lab[m] = (lab[m] + rng.integers(1, num_classes, m.sum())) % num_classes
        out.append(lab)
    return out


def _tc_of(seq, fw, bw=None, mode="nearest"):
    tc = TemporalConsistency(6, mode=mode)
    for a, b in zip(seq[:-1], seq[1:]):
        tc.update(a, b, fw, bw)
    return tc


def test_consistent_prediction_scores_100_and_border_pixels_are_excluded():
    seq, fw, bw = _scene(np.random.default_rng(0), 5)
    tc = _tc_of(seq, fw, bw)
    assert tc.to_dict()["tc"] == 100.0 and tc.to_dict()["tc_occ"] == 100.0
    assert tc.to_dict()["pairs"] == 4
    # flow (-2, -1): the first two columns and the first row of each frame look outside the frame
    assert tc.to_dict()["valid_pixel_fraction"] == pytest.approx((W - 2) * (H - 1) / (W * H), abs=1e-6)


def test_flicker_lowers_tc_monotonically():
    rng = np.random.default_rng(1)
    seq, fw, _ = _scene(rng, 7)
    rates = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4]
    scores = [_tc_of(_flicker(seq, r, np.random.default_rng(2)), fw).tc() for r in rates]
    assert scores[0] == 1.0
    assert all(a > b for a, b in zip(scores[:-1], scores[1:])), scores
    assert scores[-1] < 0.6


def test_pair_counts_sum_to_the_tc_and_keep_each_pair():
    """Each pair's own counts (for bootstrap bounds over pairs): their sum gives `tc()`, a subset its own TC."""
    rng = np.random.default_rng(4)
    seq, fw, _ = _scene(rng, 6)
    noisy = _flicker(seq, 0.1, np.random.default_rng(5))
    tc = _tc_of(noisy, fw)
    counts = tc.pair_counts()
    assert counts.shape == (5, 3, 6)
    assert tc_of_counts(counts.sum(axis=0)) == pytest.approx(tc.tc())
    first_two = _tc_of(noisy[:3], fw)
    assert tc_of_counts(counts[:2].sum(axis=0)) == pytest.approx(first_two.tc())
    stacked = tc_of_counts(np.stack([counts[:2].sum(0), counts.sum(0)]))  # vectorised over leading axes
    np.testing.assert_allclose(stacked, [first_two.tc(), tc.tc()])
    assert TemporalConsistency(3).pair_counts().shape == (0, 3, 3)


def test_out_of_frame_and_nan_flow_are_excluded():
    seq, fw, _ = _scene(np.random.default_rng(3), 2)
    a, b = seq
    a = a.copy()
    a[:, :2] = (a[:, :2] + 1) % 6  # garbage exactly where the flow leaves the frame
    fw = fw.copy()
    fw[10:20, 30:40] = np.nan
    a[10:20, 30:40] = (a[10:20, 30:40] + 1) % 6  # and where the flow is unknown
    assert _tc_of([a, b], fw).tc() == 1.0
    _, valid = warp_labels(b, fw)
    assert not valid[10:20, 30:40].any() and not valid[:, :2].any() and valid[5:, 50:].all()


def test_etc_mode_invents_classes_at_boundaries():
    pred = np.zeros((8, 16), np.uint8)
    pred[:, 8:] = 13  # road | car
    flow = np.zeros((8, 16, 2), np.float32)
    flow[..., 0] = 0.5
    near, _ = warp_labels(pred, flow, "nearest")
    etc, valid = warp_labels(pred, flow, "etc")
    assert set(np.unique(near[valid])) <= {0, 13}
    assert 6 in set(np.unique(etc[valid]))  # (0 + 13) / 2 = 6.5 truncated to 6: a class nobody predicted
    tc_near, tc_etc = TemporalConsistency(19), TemporalConsistency(19, mode="etc")
    tc_near.update(pred, pred, flow)
    tc_etc.update(pred, pred, flow)
    assert tc_etc.tc() < tc_near.tc()
    with pytest.raises(VssegError, match="--tc-mode"):
        TemporalConsistency(19, mode="bilinear")


def test_etc_mode_is_exact_on_integer_flow():
    seq, fw, _ = _scene(np.random.default_rng(4), 3)
    assert _tc_of(seq, fw, mode="etc").tc() == 1.0


def test_occlusion_check_is_a_separate_figure():
    seq, fw, bw = _scene(np.random.default_rng(5), 2)
    a, b = seq
    a = a.copy()
    bw = bw.copy()
    bw[20:40, 40:80] = 5.0  # backward flow disagrees here (as in an occlusion) ...
    a[21:39, 43:81] = (a[21:39, 43:81] + 1) % 6  # ... and the prediction flickers exactly there
    occ = occluded_pixels(fw, bw)
    assert occ[21:39, 43:81].all() and not occ[5:15, 5:].any()  # (out-of-frame pixels fail it too)
    tc = _tc_of([a, b], fw, bw)
    assert tc.tc() < 0.95  # the plain figure sees the flicker
    assert tc.tc_occ() == 1.0  # the occlusion-checked figure excludes it
    assert _tc_of([a, b], fw).to_dict()["tc_occ"] is None


def test_bad_inputs_raise():
    tc = TemporalConsistency(3)
    with pytest.raises(VssegError, match=r"class id\(s\) \[9\]"):
        tc.update(np.full((4, 4), 9, np.uint8), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 2), np.float32))
    with pytest.raises(VssegError, match="differ in size"):
        tc.update(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), np.zeros((4, 4, 2), np.float32))
    with pytest.raises(VssegError, match="HxWx2"):
        tc.update(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32))


def _resample2d_loop(img, flow):
    """Pixel by pixel, the arithmetic of FlowNet2's Resample2d CUDA kernel (kernel_size 1): float32 positions
    and fractions, double weights, a float32 accumulator, indices clamped to the border."""
    h, w = img.shape
    out = np.zeros((h, w), np.float32)
    for y in range(h):
        for x in range(w):
            xf, yf = np.float32(x) + flow[y, x, 0], np.float32(y) + flow[y, x, 1]
            alpha, beta = float(xf - np.floor(xf)), float(yf - np.floor(yf))
            xl, xr = min(max(int(np.floor(xf)), 0), w - 1), min(max(int(np.floor(xf)) + 1, 0), w - 1)
            yt, yb = min(max(int(np.floor(yf)), 0), h - 1), min(max(int(np.floor(yf)) + 1, 0), h - 1)
            val = np.float32(0.0)
            for wgt, yy, xx in (
                ((1 - alpha) * (1 - beta), yt, xl),
                (alpha * (1 - beta), yt, xr),
                ((1 - alpha) * beta, yb, xl),
                (alpha * beta, yb, xr),
            ):
                val = np.float32(float(val) + wgt * float(img[yy, xx]))
            out[y, x] = val
    return out


def test_etc_mode_reproduces_the_scripts_resample2d_and_truncation():
    rng = np.random.default_rng(6)
    labels = np.repeat(np.repeat(rng.integers(0, 19, (4, 8)), 4, 0), 4, 1).astype(np.uint8)  # 16x32
    flow = (rng.random((16, 32, 2)) * 6 - 3).astype(np.float32)
    warped, valid = warp_labels(labels, flow, "etc")
    reference = _resample2d_loop(labels.astype(np.float32), flow).astype(np.uint8)
    assert valid.sum() > 300
    np.testing.assert_array_equal(warped[valid], reference[valid])
    assert (warped[valid] != labels[valid]).any()
