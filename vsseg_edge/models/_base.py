"""The output contract every vsseg-edge segmentation model follows (losses, trainer and export rely on it).

    model(x)                       x: float32 N×3×H×W  →  logits N×C×H×W at the input resolution
                                   (bilinear upsample inside, align_corners=False; this is what ONNX traces)
    model(x, return_features=True) → {"out":    full-resolution logits,
                                      "out_s8": logits before the final upsample (stride 8 for PSP nets),
                                      "aux":    auxiliary logits at input resolution, or None
                                                (only computed in training mode),
                                      "feat":   the head's feature map before the classifier (stride 8),
                                      "ppm":    the pyramid-pooling output (PSP nets; otherwise feat)}

Each model states the input sizes it supports (`input_multiple`: H and W must be multiples of it) and
raises a one-line VssegError otherwise. `param_groups(lr)` gives the trainer's two groups: backbone at lr,
heads (everything else) at 10×lr. `arch_kwargs` holds the keyword arguments that rebuild the same
architecture with `create_model(model.model_name, model.num_classes, **model.arch_kwargs)` (never weight
paths): the trainer stores it as the checkpoint's `model_kwargs`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import VssegError


class SegModel(nn.Module):
    """Base class: subclasses set `input_multiple`, `backbone_names` and implement `forward_parts`."""

    input_multiple: int = 8
    backbone_names: tuple[str, ...] = ("backbone",)

    def __init__(self, name: str, num_classes: int, arch_kwargs: dict | None = None):
        super().__init__()
        self.model_name = name
        self.num_classes = num_classes
        self.arch_kwargs = dict(arch_kwargs or {})

    def forward_parts(self, x: torch.Tensor, with_aux: bool) -> dict:
        """Return {"out_s8", "feat", "ppm", "aux_lr" (aux logits at low resolution or None)}; may add "out"."""
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse tensors the network cannot take, naming the supported sizes."""
        if x.dim() != 4 or int(x.shape[1]) != 3:
            raise VssegError(f"model {self.model_name}: expected input N×3×H×W, got {tuple(x.shape)}")
        h, w = int(x.shape[2]), int(x.shape[3])
        m = self.input_multiple
        if h % m or w % m or h < m or w < m:
            raise VssegError(
                f"model {self.model_name}: input {h}x{w} (HxW) is not supported; "
                f"H and W must be positive multiples of {m} (e.g. 512x1024)"
            )

    def forward(self, x: torch.Tensor, return_features: bool = False):
        self.check_input(x)
        size = (int(x.shape[2]), int(x.shape[3]))
        with_aux = return_features and self.training
        parts = self.forward_parts(x, with_aux)
        out = parts.get("out")
        if out is None:
            out = F.interpolate(parts["out_s8"], size=size, mode="bilinear", align_corners=False)
        if not return_features:
            return out
        aux = parts.get("aux_lr")
        if aux is not None:
            aux = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return {
            "out": out,
            "out_s8": parts["out_s8"],
            "aux": aux,
            "feat": parts["feat"],
            "ppm": parts.get("ppm", parts["feat"]),
        }

    def backbone_modules(self) -> list[nn.Module]:
        """The pretrained (ImageNet) part: trained at the base learning rate."""
        return [getattr(self, n) for n in self.backbone_names]

    def head_modules(self) -> list[nn.Module]:
        """Everything else (PPM, heads, decoders): trained at 10× the base learning rate."""
        return [m for n, m in self.named_children() if n not in self.backbone_names]

    def param_groups(self, lr: float) -> list[dict]:
        """Two optimizer groups: backbone at `lr`, heads at 10·lr (each group records its own lr)."""
        backbone = [p for m in self.backbone_modules() for p in m.parameters()]
        heads = [p for m in self.head_modules() for p in m.parameters()]
        return [{"params": backbone, "lr": lr, "name": "backbone"}, {"params": heads, "lr": 10 * lr, "name": "heads"}]
