"""PSPNet students and teachers: a dilated (output stride 8) backbone, pyramid pooling, a 3×3 head.

As in the ETC reference (model/pspnet_18.py): PPM bins 1/2/3/6, head 3×3 conv → BN → ReLU → Dropout2d(0.1)
→ 1×1 classifier, auxiliary head on the stride-8 layer3 features (3×3 conv → 256 → BN → ReLU →
Dropout2d(0.1) → 1×1), used by the trainer with weight 0.4. Registered:

    pspnet18         ResNet-18, PPM 4×128, head 256  (the ETC student)
    pspnet50/101     ResNet-50/101, PPM 4×512, head 512 (teachers, as semseg's PSPNet; torchvision stem)
    mobilenetv2_psp  MobileNetV2 (dilated), PPM 4×128 on its 1280-ch features, head 256

Supported inputs: H and W positive multiples of 8 (`input_multiple = 8`); e.g. 512×1024, 256×512, 64×128.
`backbone_weights=PATH` loads a torchvision-format ImageNet state dict into the backbone (strict, fc /
classifier ignored); `weights=PATH` loads a whole-model state dict (or a vsseg-edge checkpoint's), or an
ETC / semseg PSPNet checkpoint (keys layer0.0 …, ppm.features.i.1 …, optionally under "state_dict" with
"module." / "student." prefixes), mapped by `map_etc_key`. ETC's ResNet-18 uses the torchvision stem and the
same dilation scheme, so its weights fit exactly; its final upsample uses align_corners=True where ours uses
False (the output contract), which moves logits by sub-pixel amounts only.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ._base import SegModel
from ._pool import PyramidPooling
from ._registry import register_model
from ._weights import load_checked, load_weights_file, read_state_dict
from .mobilenetv2 import MobileNetV2
from .resnet import ResNet


def _head(cin: int, mid: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, mid, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(mid, num_classes, 1),
    )


class PSPNet(SegModel):
    """backbone → (aux features, final features) → PPM → head; logits at stride 8, upsampled to the input."""

    input_multiple = 8
    backbone_names = ("backbone",)

    def __init__(
        self,
        name: str,
        backbone: nn.Module,
        num_classes: int,
        ppm_dim: int,
        head_dim: int,
        bins=(1, 2, 3, 6),
        dropout: float = 0.1,
        aux: bool = True,
    ):
        super().__init__(name, num_classes, {"bins": list(bins), "dropout": dropout, "aux": aux})
        self.backbone = backbone
        aux_dim, feat_dim = backbone.channels
        self.ppm = PyramidPooling(feat_dim, ppm_dim, bins)
        self.cls = _head(self.ppm.out_channels, head_dim, num_classes, dropout)
        self.aux = _head(aux_dim, 256, num_classes, dropout) if aux else None

    def forward_parts(self, x: torch.Tensor, with_aux: bool) -> dict:
        low, high = self.backbone(x)
        ppm = self.ppm(high)
        feat = self.cls[:3](ppm)  # conv-BN-ReLU, before dropout
        aux = self.aux(low) if with_aux and self.aux is not None else None
        return {"out_s8": self.cls[3:](feat), "feat": feat, "ppm": ppm, "aux_lr": aux}


def map_etc_key(key: str) -> str | None:
    """An ETC / semseg PSPNet key → ours; None for keys that are not the segmentation network's (flow, teacher…)."""
    for prefix in ("module.", "student."):
        key = key[len(prefix) :] if key.startswith(prefix) else key
    if any(part in key for part in ("flow", "teacher", "criterion", "discriminator")):
        return None
    key = re.sub(r"^layer0\.0\.", "backbone.conv1.", key)
    key = re.sub(r"^layer0\.1\.", "backbone.bn1.", key)
    key = re.sub(r"^(layer[1-4]\.)", r"backbone.\1", key)
    # semseg's PPM branch is Sequential(pool, conv, bn, relu); ours pools outside it: (conv, bn, relu)
    return re.sub(r"^ppm\.features\.(\d+)\.(\d+)\.", lambda m: f"ppm.features.{m[1]}.{int(m[2]) - 1}.", key)


def load_pspnet_weights(model: PSPNet, path) -> PSPNet:
    """Load a whole-model state dict in our naming or in ETC / semseg naming (detected by `layer0.0.weight`)."""
    state = read_state_dict(path)
    if any(k.endswith("layer0.0.weight") for k in state):
        mapped = {map_etc_key(k): v for k, v in state.items()}
        state = {k: v for k, v in mapped.items() if k is not None}
        if model.aux is None:
            state = {k: v for k, v in state.items() if not k.startswith("aux.")}
    load_checked(model, state, str(path), f"{model.model_name} model")
    return model


def _finish(model: PSPNet, backbone_weights, weights, what: str, ignore: tuple[str, ...]) -> PSPNet:
    if backbone_weights is not None:
        load_weights_file(model.backbone, backbone_weights, f"torchvision {what}", ignore_prefixes=ignore)
    if weights is not None:
        load_pspnet_weights(model, weights)
    return model


def _resnet_psp(
    name: str, arch: str, num_classes: int, head_dim: int, backbone_weights=None, weights=None, **kw
) -> PSPNet:
    backbone = ResNet(arch, output_stride=8)
    model = PSPNet(name, backbone, num_classes, ppm_dim=backbone.channels[1] // 4, head_dim=head_dim, **kw)
    return _finish(model, backbone_weights, weights, arch, ("fc.",))


@register_model("pspnet18")
def pspnet18(num_classes: int, **kw) -> PSPNet:
    """The ETC student: PSPNet with a ResNet-18 backbone at output stride 8."""
    return _resnet_psp("pspnet18", "resnet18", num_classes, head_dim=256, **kw)


@register_model("pspnet50")
def pspnet50(num_classes: int, **kw) -> PSPNet:
    """Teacher: PSPNet with a ResNet-50 backbone (torchvision stem) at output stride 8."""
    return _resnet_psp("pspnet50", "resnet50", num_classes, head_dim=512, **kw)


@register_model("pspnet101")
def pspnet101(num_classes: int, **kw) -> PSPNet:
    """Teacher: PSPNet with a ResNet-101 backbone (torchvision stem) at output stride 8."""
    return _resnet_psp("pspnet101", "resnet101", num_classes, head_dim=512, **kw)


@register_model("mobilenetv2_psp")
def mobilenetv2_psp(num_classes: int, backbone_weights=None, weights=None, **kw) -> PSPNet:
    """Student: PSPNet head on a dilated MobileNetV2 (output stride 8)."""
    model = PSPNet("mobilenetv2_psp", MobileNetV2(output_stride=8), num_classes, ppm_dim=128, head_dim=256, **kw)
    return _finish(model, backbone_weights, weights, "mobilenet_v2", ("classifier.",))
