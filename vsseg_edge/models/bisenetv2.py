"""BiSeNetV2 (Yu et al., IJCV 2021): the modern real-time student, built to export cleanly.

A detail branch (wide, shallow, stride 8) and a semantic branch (narrow, deep, stride 32: stem, gather-and-
expand layers, context embedding) meet in the bilateral guided aggregation (BGA) layer at stride 8; a 3×3
segmentation head gives stride-8 logits, upsampled bilinearly to the input. One auxiliary head on the
stride-16 semantic features (the paper uses four booster heads; the output contract has one `aux`).

Every op is standard ONNX/TensorRT: Conv, BatchNormalization (folded), Relu, MaxPool, AveragePool,
Sigmoid, Mul, Add, Concat, Resize with static sizes. No adaptive pooling.

Supported inputs: H and W positive multiples of 32 (`input_multiple = 32`); e.g. 512×1024, 256×512, 64×128.
Trained from scratch (no ImageNet backbone file); `param_groups` still splits branches (lr) from BGA and
heads (10×lr) for the trainer's common recipe. `weights=PATH` loads a whole-model state dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import SegModel
from ._pool import adaptive_avg_pool2d
from ._registry import register_model
from ._weights import load_weights_file


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class DetailBranch(nn.Sequential):
    """Three stages of 3×3 conv-BN-ReLU, each opening with stride 2: 64, 64, 128 channels at stride 8."""

    def __init__(self):
        super().__init__(
            conv_bn(3, 64, stride=2),
            conv_bn(64, 64),
            conv_bn(64, 64, stride=2),
            conv_bn(64, 64),
            conv_bn(64, 64),
            conv_bn(64, 128, stride=2),
            conv_bn(128, 128),
            conv_bn(128, 128),
        )


class Stem(nn.Module):
    """Stride 4: a strided conv, then a conv path and a max-pool path, concatenated and fused."""

    def __init__(self, cout: int = 16):
        super().__init__()
        self.conv = conv_bn(3, cout, stride=2)
        self.down = nn.Sequential(conv_bn(cout, cout // 2, k=1), conv_bn(cout // 2, cout, stride=2))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = conv_bn(2 * cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.down(x), self.pool(x)], 1))


class GatherExpand(nn.Module):
    """Gather-and-expand layer: 3×3 conv, depthwise expansion (×6), 1×1 projection, residual."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 6):
        super().__init__()
        mid = cin * expand
        self.conv = conv_bn(cin, cin)
        dw = [conv_bn(cin, mid, stride=stride, groups=cin, relu=False)]
        if stride == 2:
            dw.append(conv_bn(mid, mid, groups=mid, relu=False))
        self.dw = nn.Sequential(*dw)
        self.project = conv_bn(mid, cout, k=1, relu=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                conv_bn(cin, cin, stride=stride, groups=cin, relu=False), conv_bn(cin, cout, k=1, relu=False)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.conv(x)))
        return self.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ContextEmbedding(nn.Module):
    """Global average → BN → 1×1 conv, broadcast-added to the features, then a 3×3 conv.

    The global average is a full-size AveragePool (static shape): ReduceMean's axes moved from an attribute
    to an input in opset 18, which the dynamo exporter's down-conversion to opset 17 cannot undo.
    """

    def __init__(self, channels: int = 128):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.gap_conv = conv_bn(channels, channels, k=1)
        self.out = conv_bn(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gap_conv(self.bn(adaptive_avg_pool2d(x, 1)))
        return self.out(x + g)


class SemanticBranch(nn.Module):
    """Stem (s4) → GE stages s8 (32), s16 (64), s32 (128) → context embedding; returns (s16, s32 features)."""

    def __init__(self):
        super().__init__()
        self.stem = Stem(16)
        self.s3 = nn.Sequential(GatherExpand(16, 32, 2), GatherExpand(32, 32))
        self.s4 = nn.Sequential(GatherExpand(32, 64, 2), GatherExpand(64, 64))
        self.s5 = nn.Sequential(GatherExpand(64, 128, 2), *[GatherExpand(128, 128) for _ in range(3)])
        self.ce = ContextEmbedding(128)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s16 = self.s4(self.s3(self.stem(x)))
        return s16, self.ce(self.s5(s16))


class BilateralGuidedAggregation(nn.Module):
    """Each branch gates the other at its own resolution; the stride-32 result is upsampled and summed."""

    def __init__(self, c: int = 128):
        super().__init__()
        self.detail_keep = nn.Sequential(conv_bn(c, c, groups=c, relu=False), nn.Conv2d(c, c, 1, bias=False))
        self.detail_down = nn.Sequential(conv_bn(c, c, stride=2, relu=False), nn.AvgPool2d(3, 2, 1))
        self.semantic_up = conv_bn(c, c, relu=False)
        self.semantic_keep = nn.Sequential(conv_bn(c, c, groups=c, relu=False), nn.Conv2d(c, c, 1, bias=False))
        self.fuse = conv_bn(c, c)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        size = (int(detail.shape[2]), int(detail.shape[3]))
        up = F.interpolate(self.semantic_up(semantic), size=size, mode="bilinear", align_corners=False)
        high = self.detail_keep(detail) * torch.sigmoid(up)
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        low = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
        return self.fuse(high + low)


def seg_head(cin: int, mid: int, num_classes: int, dropout: float = 0.1) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, mid), nn.Dropout2d(dropout), nn.Conv2d(mid, num_classes, 1))


class BiSeNetV2(SegModel):
    input_multiple = 32
    backbone_names = ("detail", "semantic")

    def __init__(self, num_classes: int, head_dim: int = 1024, aux: bool = True):
        super().__init__("bisenetv2", num_classes, {"head_dim": head_dim, "aux": aux})
        self.detail = DetailBranch()
        self.semantic = SemanticBranch()
        self.bga = BilateralGuidedAggregation(128)
        self.head = seg_head(128, head_dim, num_classes)
        self.aux = seg_head(64, 128, num_classes) if aux else None

    def forward_parts(self, x: torch.Tensor, with_aux: bool) -> dict:
        s16, s32 = self.semantic(x)
        fused = self.bga(self.detail(x), s32)
        feat = self.head[0](fused)  # conv-BN-ReLU, before dropout
        aux = self.aux(s16) if with_aux and self.aux is not None else None
        return {"out_s8": self.head[1:](feat), "feat": feat, "ppm": feat, "aux_lr": aux}


@register_model("bisenetv2")
def bisenetv2(num_classes: int, head_dim: int = 1024, aux: bool = True, weights=None) -> BiSeNetV2:
    """BiSeNetV2 student (about 3.4 M parameters at 19 classes without the aux head)."""
    model = BiSeNetV2(num_classes, head_dim=head_dim, aux=aux)
    if weights is not None:
        load_weights_file(model, weights, "bisenetv2 model")
    return model
