"""ResNet backbones (18/34/50/101) with torchvision's parameter names and an output-stride-8 option.

Names follow torchvision (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0 …) so an ImageNet state dict
saved from torchvision loads with strict key checking (its `fc.*` keys are ignored). There is no `fc`.

Output stride 8 follows the ETC / semseg reference: layer3 and layer4 keep stride 1 and every block's
second 3×3-or-strided conv (`conv2`) gets dilation 2 (layer3) or 4 (layer4), padding = dilation.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        cout = planes * self.expansion
        self.downsample = _downsample(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits on the 3×3 conv2."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


ARCHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ImageNet ResNet without `fc`; `forward` returns (layer3 output, layer4 output).

    output_stride 8: layer3/layer4 dilated (2, 4); 32: the classification network.
    `channels` = (layer3 channels, layer4 channels).
    """

    def __init__(self, arch: str = "resnet18", output_stride: int = 8):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown ResNet {arch!r}; valid: {sorted(ARCHS)}")
        if output_stride not in (8, 32):
            raise ValueError(f"output_stride must be 8 or 32, got {output_stride}")
        block, depths = ARCHS[arch]
        self.arch = arch
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        dilated = output_stride == 8
        cin = 64
        specs = [
            (64, 1, 1),
            (128, 2, 1),
            (256, 1 if dilated else 2, 2 if dilated else 1),
            (512, 1 if dilated else 2, 4 if dilated else 1),
        ]
        for i, ((planes, stride, dilation), depth) in enumerate(zip(specs, depths), start=1):
            blocks = []
            for j in range(depth):
                blocks.append(block(cin, planes, stride if j == 0 else 1, dilation))
                cin = planes * block.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.channels = (256 * block.expansion, 512 * block.expansion)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer3(self.layer2(self.layer1(x)))
        return c3, self.layer4(c3)
