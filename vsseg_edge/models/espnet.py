"""ESPNet (Mehta et al., ECCV 2018), able to load the published sacmehta/ESPNet checkpoints.

An independent implementation of the architecture in sacmehta/ESPNet `test/Model.py` / `train/Model.py`
(ESPNet-C encoder + the light-weight RUM decoder). The two files differ in one place: the last fusion conv
takes the stride-2 level-1 features (16 ch, test/Model.py: the published Cityscapes file) or those
features concatenated with the down-sampled image after BN+PReLU (19 ch, train/Model.py: the CamVid file);
`fuse_input="level1"` or `"level1_cat"` selects it. Module names differ from the published ones;
`load_espnet_weights` maps the keys (see `map_published_key`).

The published files predict `width` channels (20 for Cityscapes: 19 trainIds + background; 12 for CamVid:
11 classes + void); the extra channel is the last one. Building the model with num_classes = width − 1 makes
the final transposed conv output only the real classes (its weights are sliced when loading), so the model
predicts exactly 19 / 11 classes. The decoder keeps `width` channels inside.

Supported inputs: H and W positive multiples of 8 (`input_multiple = 8`); published sizes 1024×512 (Cityscapes)
and 480×360 (CamVid). ESPNet has no auxiliary head (`aux` is None). With return_features, `out_s8` is the
encoder's stride-8 class map (after BN) that the decoder refines, and `feat` (= `ppm`) the encoder's 256-ch
stride-8 features; `out` comes from the decoder, not from upsampling `out_s8`.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import torch
from torch import nn

from ..core.errors import VssegError
from ..core.preprocess import PreprocessSpec
from ._base import SegModel
from ._registry import register_model
from ._weights import load_checked, read_state_dict

BN_EPS = 1e-3  # the published model uses eps 1e-3 in every BatchNorm
DILATIONS = (1, 2, 4, 8, 16)

# Preprocessing the published checkpoints were trained with (BGR, (x − mean)/std, then /255; data README).
PUBLISHED_PREPROCESS = {
    "cityscapes": dict(
        height=512,
        width=1024,
        channel_order="bgr",
        scale=1 / 255,
        mean=(72.3923111, 82.90893555, 73.15840149),
        std=(45.3192215, 46.15289307, 44.91483307),
    ),
    "camvid": dict(
        height=360,
        width=480,
        channel_order="bgr",
        scale=1 / 255,
        mean=(110.3310546875, 108.40888977050781, 105.03321838378906),
        std=(72.12568664550781, 72.69076538085938, 69.90434265136719),
    ),
}


def published_preprocess(dataset: str) -> PreprocessSpec:
    """The PreprocessSpec matching a published ESPNet checkpoint ("cityscapes" or "camvid")."""
    if dataset not in PUBLISHED_PREPROCESS:
        raise VssegError(f"ESPNet preprocessing: unknown dataset {dataset!r}; valid: {sorted(PUBLISHED_PREPROCESS)}")
    return PreprocessSpec(**PUBLISHED_PREPROCESS[dataset])


class BNAct(nn.Sequential):
    """BatchNorm + PReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.act = nn.PReLU(channels)


class ConvBNAct(nn.Sequential):
    """k×k conv (no bias) + BatchNorm + PReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.PReLU(cout)


class ESPBlock(nn.Module):
    """Efficient spatial pyramid: reduce → 5 parallel dilated 3×3 convs → hierarchical sums → concat.

    stride 2 (the down-sampling variant): the reduction is a 3×3 stride-2 conv and there is no residual.
    The first branch (dilation 1) takes the channels left over when `cout` is not divisible by 5.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, residual: bool = True):
        super().__init__()
        n = cout // 5
        k = 3 if stride == 2 else 1
        self.reduce = nn.Conv2d(cin, n, k, stride, (k - 1) // 2, bias=False)
        widths = [cout - 4 * n] + [n] * 4
        self.branches = nn.ModuleList(
            nn.Conv2d(n, w, 3, 1, d, dilation=d, bias=False) for w, d in zip(widths, DILATIONS)
        )
        self.residual = residual and stride == 1 and cin == cout
        self.norm = BNAct(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        outs = [b(r) for b in self.branches]
        # hierarchical feature fusion (against gridding): d2, d2+d4, d2+d4+d8, d2+d4+d8+d16
        y = torch.cat([outs[0], *itertools.accumulate(outs[1:])], 1)
        return self.norm(x + y if self.residual else y)


class ESPNetEncoder(nn.Module):
    """ESPNet-C: returns (level-1 16 ch s2, level-1 cat 19 ch s2, level-2 cat 131 ch s4, level-3 cat 256 ch s8)."""

    def __init__(self, width: int, p: int, q: int):
        super().__init__()
        self.level1 = ConvBNAct(3, 16, 3, 2)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)  # the image pyramid fed into each level
        self.b1 = BNAct(16 + 3)
        self.level2_0 = ESPBlock(16 + 3, 64, stride=2)
        self.level2 = nn.ModuleList(ESPBlock(64, 64) for _ in range(p))
        self.b2 = BNAct(128 + 3)
        self.level3_0 = ESPBlock(128 + 3, 128, stride=2)
        self.level3 = nn.ModuleList(ESPBlock(128, 128) for _ in range(q))
        self.b3 = BNAct(256)
        self.classifier = nn.Conv2d(256, width, 1, bias=False)

    def forward(self, x: torch.Tensor):
        img2 = self.pool(x)
        img4 = self.pool(img2)
        l1 = self.level1(x)
        l1_cat = self.b1(torch.cat([l1, img2], 1))
        down2 = self.level2_0(l1_cat)
        y = down2
        for block in self.level2:
            y = block(y)
        l2_cat = self.b2(torch.cat([y, down2, img4], 1))
        down3 = self.level3_0(l2_cat)
        y = down3
        for block in self.level3:
            y = block(y)
        l3_cat = self.b3(torch.cat([down3, y], 1))
        return l1, l1_cat, l2_cat, l3_cat


def _up2(channels: int, out: int | None = None) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(channels, out or channels, 2, stride=2, bias=False)


class ESPNet(SegModel):
    """ESPNet with the RUM decoder; logits come out at full resolution from a 2× transposed conv."""

    input_multiple = 8
    backbone_names = ("encoder",)

    def __init__(self, num_classes: int, p: int = 2, q: int = 8, width: int | None = None, fuse_input: str = "level1"):
        width = width or num_classes
        super().__init__("espnet", num_classes, {"p": p, "q": q, "width": width, "fuse_input": fuse_input})
        if fuse_input not in ("level1", "level1_cat"):
            raise VssegError(f"espnet: fuse_input must be 'level1' or 'level1_cat', got {fuse_input!r}")
        if num_classes > width:
            raise VssegError(f"espnet: num_classes {num_classes} is more than the decoder width {width}")
        self.width, self.p, self.q, self.fuse_input = width, p, q, fuse_input
        self.encoder = ESPNetEncoder(width, p, q)
        self.bn_l3 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.up_l3 = _up2(width)
        self.proj_l2 = nn.Conv2d(128 + 3, width, 1, bias=False)
        self.combine_l2_l3 = nn.Sequential(BNAct(2 * width), ESPBlock(2 * width, width, residual=False))
        self.up_l2 = nn.Sequential(_up2(width), BNAct(width))
        self.fuse = ConvBNAct((16 if fuse_input == "level1" else 19) + width, width, 3)
        self.classifier = _up2(width, num_classes)

    def forward_parts(self, x: torch.Tensor, with_aux: bool) -> dict:
        l1, l1_cat, l2_cat, l3_cat = self.encoder(x)
        s8 = self.bn_l3(self.encoder.classifier(l3_cat))
        l2 = self.combine_l2_l3(torch.cat([self.proj_l2(l2_cat), self.up_l3(s8)], 1))
        fused = self.fuse(torch.cat([self.up_l2(l2), l1 if self.fuse_input == "level1" else l1_cat], 1))
        return {"out": self.classifier(fused), "out_s8": s8[:, : self.num_classes], "feat": l3_cat, "aux_lr": None}


_KEY_RULES = [  # (published-name pattern, our name) applied in order; the first match wins
    (r"^(.*)\.c1\.conv\.weight$", r"\1.reduce.weight"),
    (r"^(.*)\.d(1|2|4|8|16)\.conv\.weight$", None),  # → branches.<index of the dilation>
    (r"^(encoder\.level[23]_0)\.(bn|act)\.(.*)$", r"\1.norm.\2.\3"),
    (r"^(encoder\.level[23]\.\d+|combine_l2_l3\.1)\.bn\.(bn|act)\.(.*)$", r"\1.norm.\2.\3"),
    (r"^encoder\.classifier\.conv\.weight$", "encoder.classifier.weight"),
    (r"^level3_C\.conv\.weight$", "proj_l2.weight"),
    (r"^br\.(.*)$", r"bn_l3.\1"),
    (r"^conv\.(.*)$", r"fuse.\1"),
    (r"^up_l3\.0\.weight$", "up_l3.weight"),
]


def map_published_key(key: str) -> str:
    """A sacmehta/ESPNet state-dict key → this module's key (unchanged when the names agree)."""
    for pattern, repl in _KEY_RULES:
        m = re.match(pattern, key)
        if m and repl is None:
            return f"{m.group(1)}.branches.{DILATIONS.index(int(m.group(2)))}.weight"
        if m:
            return m.expand(repl)
    return key


def _count_blocks(state: dict, level: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(rf"^encoder\.{level}\.(\d+)\.", k))})


def describe_espnet_state(state: dict[str, torch.Tensor]) -> dict:
    """Read (width, p, q, fuse_input) off an ESPNet state dict, in the published or in our naming."""
    fuse = state["conv.conv.weight"] if "conv.conv.weight" in state else state["fuse.conv.weight"]
    width = int(fuse.shape[0])
    fuse_in = int(fuse.shape[1]) - width
    return {
        "width": width,
        "p": _count_blocks(state, "level2"),
        "q": _count_blocks(state, "level3"),
        "fuse_input": {16: "level1", 19: "level1_cat"}.get(fuse_in, f"unknown ({fuse_in} channels)"),
    }


def _read_espnet_state(path: str | Path) -> dict[str, torch.Tensor]:
    state = read_state_dict(path)
    if "conv.conv.weight" not in state and "fuse.conv.weight" not in state:
        raise VssegError(f"{path}: not an ESPNet state dict (no 'conv.conv.weight' or 'fuse.conv.weight' key)")
    return state


def load_espnet_weights(model: ESPNet, path: str | Path) -> ESPNet:
    """Load a published sacmehta/ESPNet file (or our own ESPNet state dict) into `model`, strictly.

    When `model.num_classes` is below the file's width, the final transposed conv keeps the first
    num_classes output channels (dropping Cityscapes' background / CamVid's void).
    """
    state = _read_espnet_state(path)
    info = describe_espnet_state(state)
    mine = {"width": model.width, "p": model.p, "q": model.q, "fuse_input": model.fuse_input}
    if info != mine:
        raise VssegError(f"{path}: ESPNet file is {info}, the model is {mine}")
    if "conv.conv.weight" in state:  # published naming
        state = {map_published_key(k): v for k, v in state.items()}
    cls = state["classifier.weight"]
    if cls.shape[1] > model.num_classes:
        state["classifier.weight"] = cls[:, : model.num_classes].contiguous()
    load_checked(model, state, str(path), f"ESPNet (width {model.width}, {model.num_classes} classes)")
    return model


@register_model("espnet")
def espnet(
    num_classes: int,
    p: int = 2,
    q: int = 8,
    width: int | None = None,
    fuse_input: str | None = None,
    weights: str | Path | None = None,
) -> ESPNet:
    """ESPNet; with `weights`, width / p / q / fuse_input are read from the file (published or ours).

    create_model("espnet", 19, weights="espnet_p_2_q_8_cityscapes.pth") predicts the 19 trainIds;
    create_model("espnet", 11, weights="espnet_p_2_q_8_camvid.pth") the 11 CamVid classes.
    """
    if weights is not None:
        info = describe_espnet_state(_read_espnet_state(weights))
        p, q, width = info["p"], info["q"], width or info["width"]
        fuse_input = fuse_input or info["fuse_input"]
    model = ESPNet(num_classes, p=p, q=q, width=width, fuse_input=fuse_input or "level1")
    return load_espnet_weights(model, weights) if weights is not None else model
