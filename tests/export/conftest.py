"""A tiny PSP-like segmentation model for the export tests, registered as "export-tiny-psp", and its checkpoint.

conv + BN + ReLU (stride 8) → a pyramid-pooling branch (nn.AdaptiveAvgPool2d bins 1, 2, 3, 6: 3 and 6 do not
divide the 8×16 feature map) → 1×1 classifier → bilinear upsample to the input size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vsseg_edge.core.preprocess import PreprocessSpec
from vsseg_edge.models import register_model

TINY = "export-tiny-psp"
CLASSES = [f"class{i}" for i in range(5)]
SPEC = PreprocessSpec(height=64, width=128)


class TinyPSP(nn.Module):
    input_multiple = 8

    def __init__(self, num_classes: int, width: int = 8, bins=(1, 2, 3, 6)):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (width, 2 * width, 2 * width):
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.stem = nn.Sequential(*layers)
        self.ppm = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b), nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
            for b in bins
        )
        self.classifier = nn.Conv2d(c_in + len(bins) * width, num_classes, 1)

    def forward(self, x):
        f = self.stem(x)
        size = f.shape[-2:]
        f = torch.cat([f] + [F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) for p in self.ppm], 1)
        return F.interpolate(self.classifier(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model(TINY)
def tiny_psp(num_classes: int, **kw) -> TinyPSP:
    return TinyPSP(num_classes, **kw)


def make_tiny(seed: int = 0) -> TinyPSP:
    """A TinyPSP with non-trivial BN statistics (so folding BN into convs is actually exercised)."""
    torch.manual_seed(seed)
    model = TinyPSP(len(CLASSES))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from vsseg_edge.models.checkpoint import save_checkpoint

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, make_tiny(), model_name=TINY, classes=CLASSES, preprocess=SPEC)
    return path


@pytest.fixture(scope="session")
def tiny_factory():
    """`make_tiny(seed)`: a fresh TinyPSP with the test's BN statistics (tests cannot import conftest)."""
    return make_tiny
