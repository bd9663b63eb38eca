"""Every registered model keeps the output contract (shapes, keys, aux only in training) at 64×128."""

from __future__ import annotations

import pytest
import torch

from vsseg_edge.core.errors import VssegError
from vsseg_edge.models import create_model, list_models, register_model

N, H, W, C = 2, 64, 128, 19
STUDENTS = ["bisenetv2", "espnet", "mobilenetv2_psp", "pspnet18"]
TEACHERS = ["pspnet50", "pspnet101"]


def test_registry_lists_students_and_teachers():
    names = list_models()
    assert names == sorted(names)
    for name in STUDENTS + ["pspnet50", "pspnet101"]:
        assert name in names


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(VssegError) as err:
        create_model("pspnet19", C)
    msg = str(err.value)
    assert "pspnet19" in msg and "pspnet18" in msg and "\n" not in msg


def test_bad_num_classes_is_a_user_error():
    with pytest.raises(VssegError, match="num_classes"):
        create_model("pspnet18", 0)


def test_register_twice_is_refused():
    with pytest.raises(ValueError):
        register_model("pspnet18")(lambda num_classes: None)


@pytest.mark.parametrize("name", STUDENTS + TEACHERS)  # built-ins only: other tests register tiny models
def test_output_contract(name):
    torch.manual_seed(0)
    model = create_model(name, C)
    H, W = (32, 64) if name in ("pspnet50", "pspnet101") else (64, 128)  # teachers: keep CPU time down
    x = torch.randn(N, 3, H, W)
    model.eval()
    with torch.no_grad():
        out = model(x)
        feats = model(x, return_features=True)
    assert out.shape == (N, C, H, W) and out.dtype == torch.float32
    assert set(feats) == {"out", "out_s8", "aux", "feat", "ppm"}
    assert torch.allclose(feats["out"], out, atol=1e-5)
    assert feats["aux"] is None  # eval mode: no aux head
    assert feats["out_s8"].shape[:2] == (N, C) and feats["out_s8"].shape[2:] == (H // 8, W // 8)
    assert feats["feat"].shape[0] == N and feats["feat"].shape[2:] == (H // 8, W // 8)
    assert feats["ppm"].shape[2:] == (H // 8, W // 8)
    model.train()
    train_feats = model(x, return_features=True)
    assert train_feats["out"].shape == (N, C, H, W)
    aux = train_feats["aux"]
    assert aux is None or aux.shape == (N, C, H, W)
    assert torch.isfinite(train_feats["out"]).all()


@pytest.mark.parametrize("name", STUDENTS)
def test_students_have_aux_or_say_why_not(name):
    model = create_model(name, C).train()
    aux = model(torch.randn(2, 3, H, W), return_features=True)["aux"]  # batch 2: BN after the 1×1 PPM bin
    if name == "espnet":  # ESPNet has no auxiliary head in its paper or code
        assert aux is None
    else:
        assert aux is not None and aux.shape == (2, C, H, W)


@pytest.mark.parametrize("name", STUDENTS + ["pspnet50"])
def test_unsupported_input_size_is_refused(name):
    model = create_model(name, C).eval()
    m = model.input_multiple
    assert m in (8, 16, 32)
    with pytest.raises(VssegError, match=f"multiples of {m}"):
        model(torch.randn(1, 3, 64 + m // 2, 128))
    with pytest.raises(VssegError, match="N×3×H×W"):
        model(torch.randn(1, 1, 64, 128))


@pytest.mark.parametrize("name", STUDENTS)
def test_param_groups_split_backbone_and_heads(name):
    model = create_model(name, C)
    groups = model.param_groups(0.01)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.1)]
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[0] and ids[1] and not (ids[0] & ids[1])
    assert ids[0] | ids[1] == {id(p) for p in model.parameters()}


def _count(model, skip_aux=False):
    return sum(p.numel() for n, p in model.named_parameters() if not (skip_aux and n.startswith("aux")))


def test_pspnet18_parameter_count():
    # ResNet-18 without fc 11.18 M + PPM 0.26 M + 3×3 head 2.36 M (+ aux 0.59 M): 13.80 M / 14.40 M
    model = create_model("pspnet18", C)
    assert _count(model, skip_aux=True) == pytest.approx(13.80e6, rel=0.01)
    assert _count(model) == pytest.approx(14.40e6, rel=0.01)
    assert _count(model.backbone) == 11_176_512  # torchvision resnet18 minus fc (512·1000 + 1000)


@pytest.mark.parametrize(
    "name,kwargs",
    [("pspnet18", {"bins": (1, 3), "aux": False}), ("espnet", {"width": 20}), ("bisenetv2", {"head_dim": 64})],
)
def test_checkpoint_round_trip_rebuilds_the_architecture(tmp_path, name, kwargs):
    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.models.checkpoint import model_from_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = create_model(name, C, **kwargs).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(
        path,
        model,
        model_name=name,
        classes=[f"c{i}" for i in range(C)],
        preprocess=PreprocessSpec(height=64, width=128),
        model_kwargs=model.arch_kwargs,
    )
    again, ckpt = model_from_checkpoint(path)
    assert again.arch_kwargs == model.arch_kwargs
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


@pytest.mark.parametrize("name", ["pspnet18", "mobilenetv2_psp", "bisenetv2"])
def test_feat_is_before_dropout_and_dropout_acts_in_training(name):
    model = create_model(name, C).train()
    x = torch.randn(2, 3, H, W)
    a, b = model(x, return_features=True), model(x, return_features=True)
    assert torch.equal(a["feat"], b["feat"])  # same batch, same BN batch statistics, no dropout yet
    assert not torch.allclose(a["out_s8"], b["out_s8"])  # Dropout2d(0.1) between feat and the classifier
