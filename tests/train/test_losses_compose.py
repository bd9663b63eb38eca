"""The composed ETC objective: weights, skipped terms, config loading, a real student/teacher step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vsseg_edge.core.config import from_dict
from vsseg_edge.core.errors import VssegError
from vsseg_edge.train.losses import EtcLoss, FrameOutputs, LossConfig, LossWeights, build_losses, cross_entropy
from vsseg_edge.train.losses import compose as compose_mod
from vsseg_edge.train.losses import kd_pixel as kd_pixel_mod

torch.set_num_threads(1)
C = 5


def fake_outputs(seed, n=2, h=32, w=64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    out = {
        "out": torch.randn(n, C, h, w, generator=g),
        "out_s8": torch.randn(n, C, h // 8, w // 8, generator=g),
        "aux": torch.randn(n, C, h, w, generator=g),
        "feat": torch.randn(n, 8, h // 8, w // 8, generator=g),
        "ppm": torch.randn(n, 6, h // 8, w // 8, generator=g),
    }
    return {k: v.requires_grad_(requires_grad) for k, v in out.items()}


def clip(with_teacher=True, requires_grad=True):
    flow = torch.zeros(2, 2, 32, 64)
    flow[:, 0] = 1.0
    frames = []
    for seed, off in ((0, 0), (1, -2), (2, 2)):
        frames.append(
            FrameOutputs(
                student=fake_outputs(seed, requires_grad=requires_grad),
                teacher=fake_outputs(seed + 10) if with_teacher else None,
                image=torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(seed + 20)),
                flow=None if off == 0 else flow,
                offset=off,
            )
        )
    labels = torch.randint(0, C, (2, 32, 64), generator=torch.Generator().manual_seed(3))
    labels[:, :4] = 255
    frames[0].target = torch.softmax(torch.randn(2, C, 32, 64, generator=torch.Generator().manual_seed(4)), dim=1)
    return frames[0], frames[1:], labels


ALL_ON = LossWeights(
    seg=1.0,
    aux=0.4,
    temporal=0.1,
    kd_pixel=1.0,
    kd_pairwise_frames=1.0,
    kd_multiframe=1.0,
    skd_pixel=10.0,
    skd_pairwise=0.5,
    skd_holistic=0.1,
    fused_kd=1.0,
)


def small_cfg(weights=ALL_ON, **kw):
    return LossConfig(weights=weights, skd_disc_channels=8, skd_disc_layers=2, **kw)


def test_supervised_only_needs_no_teacher_and_equals_hand_sum():
    frame_t, neighbours, labels = clip(with_teacher=False)
    loss = EtcLoss(LossWeights())
    total, log = loss(frame_t, labels, neighbours)
    s = frame_t.student
    expected = cross_entropy(s["out"], labels) + 0.4 * cross_entropy(s["aux"], labels)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(log) == {"seg", "aux", "total"} and log["total"] == pytest.approx(total.item())
    assert all(
        getattr(loss, name) is None
        for name in (
            "temporal",
            "kd_pixel",
            "kd_pairwise_frames",
            "kd_multiframe",
            "skd_pixel",
            "skd_pairwise",
            "discriminator",
        )
    )
    assert list(loss.parameters()) == [] and loss.make_discriminator_optimizer() is None


def test_weight_zero_terms_are_not_computed(monkeypatch):
    calls = {"ce": 0, "kl": 0}
    real_ce, real_kl = compose_mod.cross_entropy, kd_pixel_mod.kl_map

    def counting_ce(*a, **k):
        calls["ce"] += 1
        return real_ce(*a, **k)

    def counting_kl(*a, **k):
        calls["kl"] += 1
        return real_kl(*a, **k)

    monkeypatch.setattr(compose_mod, "cross_entropy", counting_ce)
    monkeypatch.setattr(kd_pixel_mod, "kl_map", counting_kl)
    frame_t, neighbours, labels = clip()
    EtcLoss(LossWeights(seg=1.0, aux=0.0))(frame_t, labels, neighbours)
    assert calls == {"ce": 1, "kl": 0}
    EtcLoss(LossWeights(seg=1.0, aux=0.0, kd_pixel=1.0))(frame_t, labels, neighbours)
    assert calls == {"ce": 2, "kl": 3}  # frame t and both neighbours
    # a temporal weight of 0 accepts frames without flow or images at all
    bare = [FrameOutputs(student=n.student, teacher=n.teacher) for n in neighbours]
    total, log = EtcLoss(LossWeights(temporal=0.0))(FrameOutputs(student=frame_t.student), labels, bare)
    assert "temporal" not in log and torch.isfinite(total)


def test_missing_inputs_for_an_active_term_are_one_line_errors():
    frame_t, neighbours, labels = clip(with_teacher=False)
    with pytest.raises(VssegError, match="no teacher outputs"):
        EtcLoss(LossWeights(kd_pixel=1.0))(frame_t, labels, neighbours)
    with pytest.raises(VssegError, match="temporal > 0 needs"):
        EtcLoss(LossWeights(temporal=0.1))(frame_t, labels, [])
    with pytest.raises(VssegError, match="no labels"):
        EtcLoss(LossWeights())(frame_t, None, neighbours)
    with pytest.raises(VssegError, match="every loss weight is 0"):
        EtcLoss(LossWeights(seg=0.0, aux=0.0))(frame_t, labels, neighbours)
    no_ppm = FrameOutputs(student={k: v for k, v in frame_t.student.items() if k != "ppm"})
    with pytest.raises(VssegError, match="'ppm'"):
        EtcLoss(LossWeights(seg=0, aux=0, skd_pairwise=0.5))(
            FrameOutputs(student=no_ppm.student, teacher=fake_outputs(9)), labels
        )
    with pytest.raises(ValueError, match="num_classes"):
        EtcLoss(LossWeights(skd_holistic=0.1))


def test_all_terms_sum_to_the_total_and_backpropagate():
    frame_t, neighbours, labels = clip()
    assert list(build_losses(small_cfg(), num_classes=C).student_side_parameters()) == []  # frozen cell by default
    loss = build_losses(small_cfg(multiframe_trainable=True), num_classes=C)  # ETC's trainable ConvLSTM
    total, log = loss(frame_t, labels, neighbours)
    names = {f.name for f in dataclasses.fields(LossWeights)}
    assert set(log) == names | {"total"}
    assert sum(v for k, v in log.items() if k != "total") == pytest.approx(log["total"], rel=1e-5)
    assert all(v == v and abs(v) < 1e6 for v in log.values())
    total.backward()
    for f in (frame_t, *neighbours):
        assert f.student["out"].grad is not None and f.student["ppm"].grad is not None
    assert f.teacher["out_s8"].grad is None
    convlstm = list(loss.student_side_parameters())
    assert len(convlstm) == 2 and all(p.grad is not None for p in convlstm)
    # the critic step: its own optimizer, gradients only into the discriminator
    opt = loss.make_discriminator_optimizer()
    assert opt.param_groups[0]["lr"] == pytest.approx(4e-4)
    opt.zero_grad()
    grads_before = frame_t.student["out_s8"].grad.clone()
    d_loss = loss.discriminator_loss(frame_t)
    d_loss.backward()
    opt.step()
    assert torch.isfinite(d_loss)
    assert all(p.grad is not None for p in loss.discriminator.parameters() if p.requires_grad)
    assert torch.equal(frame_t.student["out_s8"].grad, grads_before)


def test_temporal_term_uses_the_configured_resolution():
    frame_t, neighbours, labels = clip()
    w = LossWeights(seg=0.0, aux=0.0, temporal=0.1)
    full = EtcLoss(LossConfig(weights=w))(frame_t, labels, neighbours)[1]["temporal"]
    s8 = EtcLoss(LossConfig(weights=w, temporal_resolution="s8"))(frame_t, labels, neighbours)[1]["temporal"]
    # both are finite and computed from different tensors (out vs out_s8)
    assert full > 0 and s8 > 0 and full != pytest.approx(s8)
    # identical outputs everywhere and zero flow: nothing to penalise
    same = FrameOutputs(student=frame_t.student, image=frame_t.image, flow=torch.zeros(2, 2, 32, 64), offset=1)
    assert EtcLoss(LossConfig(weights=w))(frame_t, labels, [same])[1]["temporal"] == pytest.approx(0.0, abs=1e-12)


def test_pixel_kd_on_the_final_logits_with_kd_resolution_full():
    frame_t, neighbours, labels = clip()
    w = LossWeights(seg=0.0, aux=0.0, kd_pixel=1.0)
    full = EtcLoss(LossConfig(weights=w, kd_resolution="full"))(frame_t, labels, neighbours)[1]["kd_pixel"]
    s8 = EtcLoss(LossConfig(weights=w))(frame_t, labels, neighbours)[1]["kd_pixel"]

    def on_final_logits(kd):  # the term by hand, on frame t's and the neighbours' final logits
        return kd(
            frame_t.student["out"],
            frame_t.teacher["out"],
            [n.student["out"] for n in neighbours],
            [n.teacher["out"] for n in neighbours],
        )

    assert full == pytest.approx(float(on_final_logits(kd_pixel_mod.PixelKDLoss()))) and full != pytest.approx(s8)
    with pytest.raises(ValueError, match="kd_resolution"):
        LossConfig(kd_resolution="half")
    # the config's class balance reaches the term (kd_pixel.py has its maths)
    cfg = LossConfig(weights=w, kd_resolution="full", kd_class_balance=1.0)
    balanced = EtcLoss(cfg)(frame_t, labels, neighbours)[1]["kd_pixel"]
    expect = on_final_logits(kd_pixel_mod.PixelKDLoss(class_balance=1.0))
    assert balanced == pytest.approx(float(expect)) and balanced != pytest.approx(full)
    with pytest.raises(ValueError, match="kd_class_balance"):
        LossConfig(kd_class_balance=-0.5)


def test_loss_config_loads_from_yaml_dict_and_rejects_mistakes():
    cfg = from_dict(
        LossConfig,
        {"weights": {"temporal": 0.1, "skd_pixel": 10}, "temporal_on": "probs", "class_weights": [1, 2, 3]},
        "train.yaml:loss",
    )
    assert cfg.weights.temporal == 0.1 and cfg.weights.skd_pixel == 10.0 and cfg.class_weights == (1.0, 2.0, 3.0)
    assert cfg.weights.active() == {"seg": 1.0, "aux": 0.4, "temporal": 0.1, "skd_pixel": 10.0}
    with pytest.raises(VssegError, match="unknown key"):
        from_dict(LossConfig, {"weights": {"tempral": 0.1}}, "train.yaml:loss")
    with pytest.raises(VssegError, match="temporal_on"):
        from_dict(LossConfig, {"temporal_on": "softmax"}, "train.yaml:loss")
    with pytest.raises(VssegError, match=">= 0"):
        from_dict(LossConfig, {"weights": {"kd_pixel": -1}}, "train.yaml:loss")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.weights.seg = 2.0  # type: ignore[misc]


def test_with_the_real_pspnet18_student_and_teacher():
    from vsseg_edge.models import create_model

    torch.manual_seed(0)
    student, teacher = create_model("pspnet18", C).train(), create_model("pspnet18", C).eval()
    images = [torch.randn(2, 3, 64, 64) for _ in range(3)]
    flow = torch.zeros(2, 2, 64, 64)
    frames = []
    for img, off in zip(images, (0, -1, 1)):
        with torch.no_grad():
            t_out = teacher(img, return_features=True)
        frames.append(
            FrameOutputs(
                student=student(img, return_features=True),
                teacher=t_out,
                image=img,
                flow=None if off == 0 else flow,
                offset=off,
            )
        )
    frames[0].target = torch.full((2, C, 64, 64), 1.0 / C)  # fused_kd is on in ALL_ON
    labels = torch.randint(0, C, (2, 64, 64))
    loss = build_losses(small_cfg(), num_classes=C)
    total, log = loss(frames[0], labels, frames[1:])
    total.backward()
    assert torch.isfinite(total) and log["aux"] > 0
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
