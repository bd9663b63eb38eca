"""Export-time wrappers around a segmentation model (the model itself is never changed).

- `Uint8NHWCInput`: takes raw uint8 N×H×W×3 pixels (already in the model's channel order, as
  `core.preprocess` lays them out for `dtype="uint8"`) and normalises inside the graph:
  Cast → Transpose → Sub(mean) → Mul(scale/std), the same arithmetic as `core.preprocess.normalize`.
- `FrameInput`: takes the camera's BGR uint8 N×H×W×3 frames of one size as they are and does all of
  `core.preprocess` inside the graph: resize to the model's size as OpenCV does (bilinear with half-pixel
  centres; for integer shrink factors also OpenCV's area box and nearest), rounded to uint8 values as OpenCV
  rounds them (half up for its fixed-point bilinear and 2×2 box, half to even otherwise), channel order, then
  the normalisation of `Uint8NHWCInput`. The same rules as the device implementation (runtime/device.py).
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


def frame_resize_refusal(frame_hw: tuple[int, int], spec: PreprocessSpec) -> str | None:
    """Why the graph cannot resize `frame_hw` frames to the spec's size the way core.preprocess does, or None."""
    (h, w), (oh, ow) = frame_hw, spec.size
    if spec.resize == "none" and (h, w) != (oh, ow):
        return f"the checkpoint's preprocessing does not resize and the model takes {oh}x{ow}"
    if spec.interpolation == "linear" or (h, w) == (oh, ow):
        return None
    if h % oh or w % ow:
        return (
            f"{spec.interpolation} interpolation is resized in the graph only by an integer shrink factor "
            f"({h}x{w} → {oh}x{ow} is not); use a frame size that is a multiple of {oh}x{ow}"
        )
    return None


class FrameInput(nn.Module):
    """BGR uint8 camera frames N×H×W×3 of `frame_hw` → the float NCHW input the model was trained on, then the model."""

    def __init__(self, model: nn.Module, spec: PreprocessSpec, frame_hw: tuple[int, int]):
        super().__init__()
        from ..core.errors import VssegError

        refusal = frame_resize_refusal(frame_hw, spec)
        if refusal:
            raise VssegError(f"--frame-size {frame_hw[0]}x{frame_hw[1]}: {refusal}")
        self.model, self.size, self.mode = model, spec.size, spec.interpolation
        self.resize = tuple(frame_hw) != spec.size
        self.factor = (frame_hw[0] // spec.height, frame_hw[1] // spec.width)
        self.half_up = self.mode == "linear" or self.factor == (2, 2)
        order = [2, 1, 0] if spec.channel_order == "rgb" else [0, 1, 2]
        self.register_buffer("order", torch.tensor(order), persistent=False)
        inv = [spec.scale / s for s in spec.std]
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", torch.tensor(inv, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        x = x.to(torch.float32).permute(0, 3, 1, 2)
        if self.resize:
            if self.mode == "linear":
                x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=False)
            elif self.mode == "area":
                x = F.avg_pool2d(x, self.factor, self.factor)
            else:
                x = x[:, :, :: self.factor[0], :: self.factor[1]]
            if self.mode != "nearest":
                x = torch.floor(x + 0.5) if self.half_up else torch.round(x)
        x = x.index_select(1, self.order)
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


def wrap_for_export(
    model: nn.Module, spec: PreprocessSpec, *, uint8_input: bool, argmax: str, frame_size: tuple[int, int] | None = None
) -> nn.Module:
    """The module that gets exported: optional uint8 NHWC input (or camera frames), the model, optional ArgMax."""
    if frame_size is not None:
        model = FrameInput(model, spec, frame_size)
    elif uint8_input:
        model = Uint8NHWCInput(model, spec)
    if argmax != "none":
        model = ArgmaxLabels(model, argmax)
    return model.eval()
