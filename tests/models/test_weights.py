"""Backbones use torchvision's parameter names and load torchvision-format files strictly."""

from __future__ import annotations

import pytest
import torch

from vsseg_edge.core.errors import VssegError
from vsseg_edge.models import create_model
from vsseg_edge.models.mobilenetv2 import MobileNetV2
from vsseg_edge.models.resnet import ResNet

# torchvision's classification parameter counts minus the fc / classifier layer (1000 classes)
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512 - 513_000,
    "resnet50": 25_557_032 - 2_049_000,
    "resnet101": 44_549_160 - 2_049_000,
}


@pytest.mark.parametrize("arch", sorted(TORCHVISION_PARAMS))
def test_resnet_parameter_count_matches_torchvision(arch):
    assert sum(p.numel() for p in ResNet(arch).parameters()) == TORCHVISION_PARAMS[arch]


def test_mobilenetv2_parameter_count_matches_torchvision():
    assert sum(p.numel() for p in MobileNetV2().parameters()) == 3_504_872 - 1_281_000


def test_exact_torchvision_key_names_and_shapes():
    r18 = ResNet("resnet18").state_dict()
    assert r18["layer4.1.bn2.running_var"].shape == (512,)
    assert r18["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert r18["conv1.weight"].shape == (64, 3, 7, 7) and "bn1.num_batches_tracked" in r18
    assert len(r18) == 122 - 2  # torchvision resnet18 has 122 entries, 2 of them fc
    r50 = ResNet("resnet50").state_dict()
    assert r50["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
    assert r50["layer3.5.conv2.weight"].shape == (256, 256, 3, 3)
    mb = MobileNetV2().state_dict()
    assert mb["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert mb["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert mb["features.1.conv.1.weight"].shape == (16, 32, 1, 1)  # expansion 1: no expand conv
    assert mb["features.17.conv.2.weight"].shape == (320, 960, 1, 1)
    assert mb["features.14.conv.1.0.weight"].shape == (576, 1, 3, 3)


def test_output_stride_8_dilations():
    r = ResNet("resnet18")
    assert r.layer3[0].conv1.stride == (1, 1) and r.layer3[1].conv2.dilation == (2, 2)
    assert r.layer4[0].conv2.dilation == (4, 4) and r.layer4[0].downsample[0].stride == (1, 1)
    m = MobileNetV2()
    assert m.features[7].conv[1][0].stride == (1, 1) and m.features[7].conv[1][0].dilation == (2, 2)
    assert m.features[14].conv[1][0].dilation == (4, 4)
    low, high = r(torch.randn(1, 3, 64, 128))
    assert low.shape[2:] == high.shape[2:] == (8, 16)


def _torchvision_style_file(tmp_path, backbone, extra):
    torch.manual_seed(1)
    for p in backbone.parameters():
        torch.nn.init.normal_(p)
    state = {**backbone.state_dict(), **extra}
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize(
    "name,arch,extra",
    [
        ("pspnet18", "resnet18", {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}),
        (
            "mobilenetv2_psp",
            None,
            {"classifier.1.weight": torch.zeros(1000, 1280), "classifier.1.bias": torch.zeros(1000)},
        ),
    ],
)
def test_backbone_weights_load_strictly(tmp_path, name, arch, extra):
    backbone = ResNet(arch) if arch else MobileNetV2()
    path, state = _torchvision_style_file(tmp_path, backbone, extra)
    model = create_model(name, 19, backbone_weights=path)
    loaded = model.backbone.state_dict()
    for key, value in backbone.state_dict().items():
        assert torch.equal(loaded[key], value), key
    # a file without BatchNorm step counters (old torchvision files) still loads
    old = tmp_path / "old.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, old)
    create_model(name, 19, backbone_weights=old)


def test_mismatched_backbone_file_is_one_line_error(tmp_path):
    path, state = _torchvision_style_file(tmp_path, ResNet("resnet18"), {})
    state.pop("layer4.1.bn2.running_var")
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(VssegError) as err:
        create_model("pspnet18", 19, backbone_weights=bad)
    msg = str(err.value)
    assert "\n" not in msg and "bad.pth" in msg
    assert "layer4.1.bn2.running_var" in msg and "layer1.0.conv1.weight" in msg
    with pytest.raises(VssegError, match="resnet50"):  # a resnet18 file is not a resnet50
        create_model("pspnet50", 19, backbone_weights=path)
    with pytest.raises(VssegError, match="not found"):
        create_model("pspnet18", 19, backbone_weights=tmp_path / "absent.pth")


def test_whole_model_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("bisenetv2", 19).eval()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "m.pth")
    again = create_model("bisenetv2", 19, weights=tmp_path / "m.pth").eval()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    with pytest.raises(VssegError, match="bisenetv2 model"):
        create_model("bisenetv2", 11, weights=tmp_path / "m.pth")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": ResNet("resnet18").state_dict(), "obj": object()}, path)
    with pytest.raises(VssegError, match="refused to unpickle"):
        create_model("pspnet18", 19, backbone_weights=path)


def _to_etc_key(key: str) -> str:
    """Our PSPNet key → the ETC repository's (model/pspnet_18.py) naming, wrapped as its trainer saves it."""
    import re

    key = key.replace("backbone.conv1.", "layer0.0.").replace("backbone.bn1.", "layer0.1.")
    key = key.replace("backbone.", "")
    key = re.sub(r"^ppm\.features\.(\d+)\.(\d+)\.", lambda m: f"ppm.features.{m[1]}.{int(m[2]) + 1}.", key)
    return "module.student." + key


def test_etc_style_pspnet18_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    model = create_model("pspnet18", 19)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    model.eval()
    etc = {_to_etc_key(k): v for k, v in model.state_dict().items()}
    assert "module.student.layer0.0.weight" in etc and "module.student.ppm.features.3.1.weight" in etc
    etc["module.flowmodel.conv.weight"] = torch.zeros(1)  # ETC checkpoints also hold FlowNet / teacher keys
    etc["module.teacher.layer0.0.weight"] = torch.zeros(1)
    torch.save({"epoch": 1, "state_dict": etc}, tmp_path / "etc.pth")
    again = create_model("pspnet18", 19, weights=tmp_path / "etc.pth").eval()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    no_aux = create_model("pspnet18", 19, aux=False, weights=tmp_path / "etc.pth")
    assert no_aux.aux is None
