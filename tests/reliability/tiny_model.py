"""A tiny segmentation net registered as "rel-tiny", so the CLI can rebuild it from a checkpoint.

The reliability tests run the CLI in this process and, for the signal cases, in a child process: the child
loads this file by path before calling `vsseg_edge.cli.main` (see `_corpus.CHILD`), so both register the
same factory.
"""

from __future__ import annotations

from torch import nn

from vsseg_edge.models import SegModel, list_models, register_model

NAME = "rel-tiny"


class RelTiny(SegModel):
    """A 3x3 conv 'backbone' and a 1x1 classifier at full resolution: logits N x C x H x W, any size."""

    input_multiple = 1

    def __init__(self, num_classes: int, width: int = 16):  # 16: TensorRT's int8 kernels (calibrate quantises it)
        super().__init__(NAME, num_classes, {"width": width})
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward_parts(self, x, with_aux: bool) -> dict:
        feat = self.backbone(x)
        out = self.head(feat)
        return {"out": out, "out_s8": out, "feat": feat, "aux_lr": None}


if NAME not in list_models():
    register_model(NAME)(lambda num_classes, **kw: RelTiny(num_classes, **kw))
