"""Export-time wrappers around a segmentation model (the model itself is never changed).

- `Uint8NHWCInput`: takes raw uint8 N×H×W×3 pixels (already in the model's channel order, as
  `core.preprocess` lays them out for `dtype="uint8"`) and normalises inside the graph:
  Cast → Transpose → Sub(mean) → Mul(scale/std), the same arithmetic as `core.preprocess.normalize`.
- `ArgmaxLabels`: ArgMax over the classes followed at once by a Cast to uint8 / int32, because ONNX
  ArgMax yields INT64, which TensorRT handles badly at the graph boundary.
- `static_adaptive_pools`: a copy of the model whose `nn.AdaptiveAvgPool2d` modules are replaced, at the
  export size, by AvgPool or two constant pooling matrices (exact; the legacy exporter refuses bins that
  do not divide the input and the dynamo exporter expands them into dozens of Gather/Add nodes).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..core.preprocess import PreprocessSpec

LABEL_DTYPES = {"uint8": torch.uint8, "int32": torch.int32}


class Uint8NHWCInput(nn.Module):
    """uint8 NHWC pixels → the float NCHW input the model was trained on, then the model."""

    def __init__(self, model: nn.Module, spec: PreprocessSpec):
        super().__init__()
        self.model = model
        inv = [spec.scale / s for s in spec.std]
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", torch.tensor(inv, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32).permute(0, 3, 1, 2)
        return self.model((x - self.mean) * self.inv_std)


class ArgmaxLabels(nn.Module):
    """Logits N×C×H×W → label map N×H×W of a TensorRT-friendly integer type."""

    def __init__(self, model: nn.Module, dtype: str):
        super().__init__()
        self.model = model
        self.dtype = LABEL_DTYPES[dtype]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.argmax(self.model(x), dim=1).to(self.dtype)


def _pooling_matrix(size: int, bins: int) -> torch.Tensor:
    """bins×size: row i averages adaptive pooling's window (the models' own formula)."""
    from ..models._pool import pooling_matrix

    return torch.tensor(pooling_matrix(size, bins), dtype=torch.float32)


class StaticAdaptiveAvgPool(nn.Module):
    """`nn.AdaptiveAvgPool2d` for one fixed input size, written with AvgPool or MatMul only."""

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        super().__init__()
        (h, w), (oh, ow) = in_hw, out_hw
        self.pool = None
        if h % oh == 0 and w % ow == 0:
            self.pool = nn.AvgPool2d((h // oh, w // ow))
        else:
            self.register_buffer("p_h", _pooling_matrix(h, oh), persistent=False)
            self.register_buffer("p_w_t", _pooling_matrix(w, ow).t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            return self.pool(x)
        return torch.matmul(torch.matmul(self.p_h, x), self.p_w_t)


def static_adaptive_pools(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """A deep copy of `model` with every nn.AdaptiveAvgPool2d made static for `example`'s size.

    Returns (model, number of modules replaced); the original model is left untouched.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d) and n]
    if not names:
        return model, 0
    model = copy.deepcopy(model)
    seen: dict[str, tuple[int, int]] = {}

    def record(name):
        def hook(module, args):  # a pre-hook that returns None leaves the input unchanged
            seen.setdefault(name, (int(args[0].shape[-2]), int(args[0].shape[-1])))
        return hook

    hooks = [model.get_submodule(n).register_forward_pre_hook(record(n)) for n in names]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    for name, in_hw in seen.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        out = getattr(parent, attr).output_size
        out = (out, out) if isinstance(out, int) else tuple(i if o is None else o for o, i in zip(out, in_hw))
        setattr(parent, attr, StaticAdaptiveAvgPool(in_hw, out))
    return model, len(seen)


def wrap_for_export(model: nn.Module, spec: PreprocessSpec, *, uint8_input: bool, argmax: str) -> nn.Module:
    """The module that gets exported: optional uint8 NHWC input, the model, optional ArgMax + Cast."""
    if uint8_input:
        model = Uint8NHWCInput(model, spec)
    if argmax != "none":
        model = ArgmaxLabels(model, argmax)
    return model.eval()
