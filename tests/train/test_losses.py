"""Maths of the single loss terms: CE, flow warping, temporal loss, pixel KD (tier 1, tiny, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vsseg_edge.train.losses import (
    PixelKDLoss,
    TemporalLoss,
    class_balance_weights,
    cross_entropy,
    flow_validity,
    flow_warp,
    kl_map,
    photometric_weight,
    resize_flow,
)

torch.set_num_threads(1)


def const_flow(n, h, w, u, v):
    flow = torch.zeros(n, 2, h, w, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = u, v
    return flow


# ----------------------------------------------------------------------------- cross-entropy


def test_ce_matches_hand_computation_with_ignore_and_weights():
    logits = torch.tensor([[[[2.0, 0.0], [1.0, -1.0]], [[0.0, 1.0], [1.0, 3.0]], [[-1.0, 0.5], [0.0, 0.0]]]])
    labels = torch.tensor([[[0, 2], [255, 1]]])
    nll = []
    for (y, x), lab in zip([(0, 0), (0, 1), (1, 1)], [0, 2, 1]):
        z = logits[0, :, y, x].tolist()
        nll.append(-(z[lab] - math.log(sum(math.exp(v) for v in z))))
    assert cross_entropy(logits, labels).item() == pytest.approx(sum(nll) / 3, rel=1e-6)
    cw = torch.tensor([0.5, 2.0, 3.0])
    weighted = (0.5 * nll[0] + 3.0 * nll[1] + 2.0 * nll[2]) / (0.5 + 3.0 + 2.0)
    assert cross_entropy(logits, labels, cw).item() == pytest.approx(weighted, rel=1e-6)


def test_ce_resizes_logits_to_the_labels():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (2, 16, 16))
    labels[0, :3] = 255
    small = torch.randn(2, 4, 5, 5)
    up = F.interpolate(small, size=(16, 16), mode="bilinear", align_corners=False)
    assert cross_entropy(small, labels).item() == pytest.approx(
        F.cross_entropy(up, labels, ignore_index=255).item(), rel=1e-6
    )


def test_ce_all_ignored_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = cross_entropy(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


# ----------------------------------------------------------------------------- warping


def test_flow_warp_integer_translation_equals_shift():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    warped = flow_warp(x, const_flow(2, 8, 10, 2, 1))
    # pixel (y, x) of t samples the neighbour at (y + 1, x + 2): inner region only
    torch.testing.assert_close(warped[:, :, :7, :8], x[:, :, 1:, 2:], atol=1e-10, rtol=0)
    # border padding: out-of-frame samples repeat the border
    torch.testing.assert_close(warped[:, :, 7, :8], x[:, :, 7, 2:], atol=1e-10, rtol=0)


def test_flow_warp_zero_flow_is_identity_and_fractional_is_bilinear():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(flow_warp(x, const_flow(1, 5, 6, 0, 0)), x, atol=1e-12, rtol=0)
    half = flow_warp(x, const_flow(1, 5, 6, 0.5, 0))
    torch.testing.assert_close(half[..., :5], 0.5 * (x[..., :5] + x[..., 1:]), atol=1e-12, rtol=0)


def test_flow_validity_marks_out_of_frame_and_nan():
    flow = const_flow(1, 4, 5, 2, 0)
    flow[0, :, 0, 0] = float("nan")
    valid = flow_validity(flow)[0, 0]
    assert valid[0, 0] == 0 and valid[1, 2] == 1 and valid[1, 3] == 0 and valid[1, 4] == 0
    assert valid.sum() == 4 * 3 - 1
    assert flow_validity(flow, exclude_out_of_frame=False).sum() == 4 * 5 - 1
    assert torch.isfinite(flow_warp(torch.randn(1, 1, 4, 5, dtype=torch.float64), flow)).all()


def test_resize_flow_scales_vectors_to_the_new_grid():
    # the models' geometry (align_corners=False): 64 px → 8 px is a factor 1/8
    flow = const_flow(1, 64, 64, 8.0, -16.0)
    small = resize_flow(flow, (8, 8))
    torch.testing.assert_close(small[0, 0], torch.full((8, 8), 1.0, dtype=torch.float64))
    torch.testing.assert_close(small[0, 1], torch.full((8, 8), -2.0, dtype=torch.float64))
    # ETC's 8k+1 geometry (align_corners=True): 33 px → 5 px is a factor (5−1)/(33−1) = 1/8
    ac = resize_flow(const_flow(1, 33, 33, 8.0, 0.0), (5, 5), align_corners=True)
    torch.testing.assert_close(ac[0, 0], torch.full((5, 5), 1.0, dtype=torch.float64))


@pytest.mark.parametrize("size,small,ac", [(64, 8, False), (33, 5, True)])
def test_warping_commutes_with_downsampling_on_a_ramp(size, small, ac):
    ramp = torch.arange(size, dtype=torch.float64).expand(1, 1, size, size).contiguous()
    down = lambda x: F.interpolate(x, size=(small, small), mode="bilinear", align_corners=ac)  # noqa: E731
    shift = const_flow(1, size, size, 8.0, 0.0)
    warped_then_down = down(flow_warp(ramp, shift))
    down_then_warped = flow_warp(down(ramp), resize_flow(shift, (small, small), align_corners=ac))
    torch.testing.assert_close(
        down_then_warped[..., : small - 2], warped_then_down[..., : small - 2], atol=1e-9, rtol=0
    )


# ----------------------------------------------------------------------------- temporal loss


def consistent_pair(c=4, h=6, w=8, u=2):
    """Neighbour output/image and a frame-t pair that is exactly the neighbour shifted by the flow."""
    torch.manual_seed(2)
    out_n = torch.randn(1, c, h, w, dtype=torch.float64)
    img_n = torch.randn(1, 3, h, w, dtype=torch.float64)
    out_t = torch.randn(1, c, h, w, dtype=torch.float64)  # last u columns flow out of frame: excluded
    img_t = torch.randn(1, 3, h, w, dtype=torch.float64)
    out_t[..., : w - u], img_t[..., : w - u] = out_n[..., u:], img_n[..., u:]
    return out_t, out_n, img_t, img_n, const_flow(1, h, w, u, 0)


@pytest.mark.parametrize("on", ["logits", "probs"])
def test_temporal_loss_zero_for_consistent_pair_and_positive_otherwise(on):
    out_t, out_n, img_t, img_n, flow = consistent_pair()
    loss = TemporalLoss(weight=0.1, on=on)
    assert loss(out_t, out_n, img_t, img_n, flow).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(out_t + 0.3 * torch.randn_like(out_t), out_n, img_t, img_n, flow).item() > 1e-4
    # border-clamped samples are kept when asked (ETC's behaviour) and then cost something
    keep = TemporalLoss(weight=0.1, on=on, exclude_out_of_frame=False)
    assert keep(out_t, out_n, img_t, img_n, flow).item() > 0


def test_photometric_weight_is_one_on_equal_images_and_exp_of_signed_channel_sum():
    img = torch.randn(1, 3, 4, 4)
    assert torch.equal(photometric_weight(img, img), torch.ones(1, 1, 4, 4))
    other = img.clone()
    other[:, 0] += 0.5
    other[:, 1] -= 0.2  # signed: the channel sum differs by 0.3
    torch.testing.assert_close(photometric_weight(img, other), torch.full((1, 1, 4, 4), math.exp(-0.3)))


@pytest.mark.parametrize("square", [True, False])
def test_temporal_loss_hand_value_with_mask(square):
    z_t = torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]]], dtype=torch.float64)  # 1×2×1×2
    z_n = torch.tensor([[[[0.0, 2.0]], [[1.0, 3.0]]]], dtype=torch.float64)
    i_t = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    i_n = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    i_n[0, 0, 0, 1] = 1.0  # pixel 1: warped image off by 1 → M = e^-1
    flow = const_flow(1, 1, 2, 0, 0)
    m1 = math.exp(-1) ** (2 if square else 1)
    expected = 0.1 * (1 + 1 + 0 * m1 + 4 * m1) / 4  # mean over C·H·W
    got = TemporalLoss(0.1, square_mask=square)(z_t, z_n, i_t, i_n, flow).item()
    assert got == pytest.approx(expected, rel=1e-9)


def test_temporal_gradient_reaches_both_frames_unless_detached():
    out_t, out_n, img_t, img_n, flow = consistent_pair()
    out_t = (out_t + 0.1).requires_grad_(True)
    out_n = out_n.clone().requires_grad_(True)
    TemporalLoss()(out_t, out_n, img_t, img_n, flow).backward()
    assert out_t.grad.abs().sum() > 0 and out_n.grad.abs().sum() > 0
    out_n.grad = None
    TemporalLoss(detach_neighbour=True)(out_t, out_n, img_t, img_n, flow).backward()
    assert out_n.grad is None


def test_temporal_loss_resizes_image_resolution_flow_to_the_logits():
    torch.manual_seed(3)
    # images and flow at 16×16 (shift 4 px) while the logits are 8×8 (shift 2 px)
    out_n = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    out_t = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    out_t[..., :6] = out_n[..., 2:]
    img_n = torch.arange(16, dtype=torch.float64).expand(1, 3, 16, 16) / 16
    img_t = flow_warp(img_n, const_flow(1, 16, 16, 4, 0))
    flow = const_flow(1, 16, 16, 4, 0)
    assert TemporalLoss()(out_t, out_n, img_t, img_n, flow).item() == pytest.approx(0.0, abs=1e-12)
    # a naively resized flow (vectors not rescaled: a 4-cell shift at 8×8) finds the pair inconsistent
    naive = F.interpolate(flow, size=(8, 8), mode="bilinear", align_corners=False)
    assert TemporalLoss()(out_t, out_n, img_t, img_n, naive).item() > 1e-3


# ----------------------------------------------------------------------------- pixel KD


def test_kl_zero_when_student_equals_teacher_and_matches_hand_value():
    z = torch.randn(2, 5, 3, 4)
    assert PixelKDLoss()(z, z, [z], [z]).abs().item() < 1e-6
    s = torch.tensor([[[[1.0]], [[0.0]]]])
    t = torch.tensor([[[[0.0]], [[2.0]]]])
    ps = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]
    pt = [1 / (1 + math.exp(2)), math.exp(2) / (1 + math.exp(2))]
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    assert kl_map(s, t).item() == pytest.approx(kl, rel=1e-5)
    s2 = torch.tensor([[[[0.0]], [[0.0]]]])
    kl2 = sum(p * math.log(p / 0.5) for p in pt)
    clip = PixelKDLoss(neighbour_weight=0.4)(s, t, [s2, s], [t, t]).item()
    assert clip == pytest.approx(kl + 0.4 * (kl2 + kl), rel=1e-5)
    assert PixelKDLoss(reduction="element")(s, t).item() == pytest.approx(kl / 2, rel=1e-5)


def test_kl_temperature_valid_mask_and_teacher_detached():
    torch.manual_seed(4)
    s = torch.randn(1, 3, 2, 2, requires_grad=True)
    t = torch.randn(1, 3, 2, 2, requires_grad=True)
    assert PixelKDLoss(temperature=2.0).frame(s, t).item() == pytest.approx(kl_map(s / 2, t / 2).mean().item())
    valid = torch.tensor([[[True, False], [False, False]]])
    assert PixelKDLoss().frame(s, t, valid).item() == pytest.approx(kl_map(s, t)[0, 0, 0].item(), rel=1e-6)
    PixelKDLoss().frame(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_class_balanced_kd_weighs_every_teacher_class_alike():
    # a 1×10 frame: the teacher says class 0 on 9 pixels, class 1 on one; the student is wrong only on the rare one
    teacher = torch.zeros(1, 2, 1, 10)
    teacher[0, 0, 0, :9], teacher[0, 1, 0, 9] = 4.0, 4.0
    student = teacher.clone()
    student[0, :, 0, 9] = torch.tensor([4.0, 0.0])
    w = class_balance_weights(teacher, 1.0)
    assert w.mean().item() == pytest.approx(1.0) and w[0, 0, :9].sum().item() == pytest.approx(w[0, 0, 9].item())
    assert w[0, 0, 9].item() == pytest.approx(5.0)  # half the total weight on the one pixel of class 1
    plain, balanced = PixelKDLoss().frame(student, teacher), PixelKDLoss(class_balance=1.0).frame(student, teacher)
    assert balanced.item() == pytest.approx(5.0 * plain.item(), rel=1e-5)  # the rare class's error counts 5× more
    half = class_balance_weights(teacher, 0.5)  # β between: the rare pixel weighs 3× a common one (√9)
    assert half[0, 0, 9].item() == pytest.approx(3.0 * half[0, 0, 0].item())
    valid = torch.ones(1, 1, 10, dtype=torch.bool)
    valid[0, 0, 9] = False  # the rare pixel unlabelled: one class left, every valid pixel weighs 1
    assert class_balance_weights(teacher, 1.0, valid)[0, 0].tolist() == [1.0] * 9 + [0.0]
    assert PixelKDLoss(class_balance=1.0).frame(student, teacher, valid).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="class_balance"):
        PixelKDLoss(class_balance=-1.0)


def test_flow_warp_of_half_precision_input_addresses_wide_frames_exactly():
    # bf16 cannot represent pixel coordinates near 600 (its step there is 4 px): the grid must be fp32
    torch.manual_seed(5)
    x = torch.randn(1, 2, 3, 600).to(torch.bfloat16)
    flow = torch.zeros(1, 2, 3, 600, dtype=torch.bfloat16)
    flow[:, 0] = 3
    warped = flow_warp(x, flow)
    assert warped.dtype == torch.float32
    torch.testing.assert_close(warped[..., :597], x[..., 3:].float(), atol=2e-2, rtol=0)


def test_valid_from_labels_downsamples_the_ignore_mask_by_nearest():
    from vsseg_edge.train.losses import ETC_CITYSCAPES_CLASS_WEIGHTS, valid_from_labels

    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[:, :8] = 255
    valid = valid_from_labels(labels, (2, 2))
    assert valid.tolist() == [[[False, False], [True, True]]]
    assert len(ETC_CITYSCAPES_CLASS_WEIGHTS) == 19
