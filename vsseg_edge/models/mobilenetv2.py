"""MobileNetV2 backbone with torchvision's parameter names and an output-stride-8 option.

Names follow torchvision's `mobilenet_v2().features` (features.0.0 conv, features.0.1 bn,
features.2.conv.0.0 …, features.18.0), so an ImageNet state dict loads strictly once `classifier.*` is
dropped (the file's `features.*` keys map onto this module's names unchanged).

Output stride 8: the stride-2 blocks 7 and 14 keep stride 1; blocks 7–13 use dilation 2 and 14–18
dilation 4 on their depthwise 3×3 convs.
"""

from __future__ import annotations

import torch
from torch import nn

# (expansion t, channels c, repeats n, first stride s), as in the MobileNetV2 paper / torchvision
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn_relu6(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Sequential:
    pad = (k - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, dilation: int = 1):
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers = [] if expand == 1 else [_conv_bn_relu6(cin, hidden, k=1)]
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden, dilation=dilation),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """`features` only (no classifier); `forward` returns (block-13 output, 96 ch; features.18 output, 1280 ch)."""

    AUX_INDEX = 13

    def __init__(self, output_stride: int = 8):
        super().__init__()
        if output_stride not in (8, 32):
            raise ValueError(f"output_stride must be 8 or 32, got {output_stride}")
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
        cin, stride_now, dilation = 32, 2, 1
        for t, c, n, s in SETTINGS:
            for i in range(n):
                stride = s if i == 0 else 1
                if output_stride == 8 and stride == 2 and stride_now >= 8:
                    stride, dilation = 1, dilation * 2
                stride_now *= stride
                layers.append(InvertedResidual(cin, c, stride, t, dilation))
                cin = c
        layers.append(_conv_bn_relu6(cin, 1280, k=1))
        self.features = nn.Sequential(*layers)
        self.channels = (96, 1280)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aux = self.features[: self.AUX_INDEX + 1](x)
        return aux, self.features[self.AUX_INDEX + 1 :](aux)
