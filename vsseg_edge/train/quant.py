"""Quantisation-aware training (QAT): fake INT8 where TensorRT quantises, exported as a Q/DQ ONNX.

Placement — TensorRT's explicit-quantisation rules, which NVIDIA ModelOpt's INT8 default configuration
follows: every `Conv2d` / `ConvTranspose2d` that TensorRT runs in int8 reads

- its input through a per-tensor, symmetric int8 fake quantiser (scale = amax / 127, zero point 0; `amax`
  calibrated once on training batches before fine-tuning, then fixed), and
- its weight through a per-output-channel, symmetric int8 fake quantiser (axis 0 for Conv, axis 1 for
  ConvTranspose, whose weight is laid out Cin × Cout; amax = the channel's largest |w|, recomputed at every
  step so the scale follows the weights).

Which convolutions (`quant.placement`): `trt` (the default) leaves in float the small-channel convolutions
that ModelOpt's ONNX PTQ leaves in float because TensorRT has no int8 kernel for them — a `Conv2d` with fewer
than 16 input or output channels, unless it is ungrouped with a square kernel, 8 | Cin or 8 | Cout, and either
16 ≤ Cin or Cout or it reads the network's input; or grouped with 8 | Cout and kernels ≥ 3
(`modelopt.onnx.quantization.graph_utils.find_nodes_from_convs_to_exclude`, int8). So QAT trains the network
the PTQ path and TensorRT build. On the published ESPNet Cityscapes model these are 18 of 85 convolutions
(the 12-channel dilated branches of level 2 and of the decoder); quantising them as well (`all`, the first
placement) left it agreeing with FP32 on 66.4 % of the TC gate's pixels after calibration, against 85.3 % with
`trt` (benchmarks/reports/int8_tc.md, round 4). A `trt` checkpoint lists its quantised modules, so it reloads exactly.
Everything else (BatchNorm, PReLU, Add, Concat, pooling) stays in float. A BatchNorm after a convolution needs
no fake quantiser of its own: per-channel symmetric quantisation commutes with a per-output-channel scale, so
quantising W then scaling by γ/σ (what this module trains) equals quantising the folded weight (what TensorRT
runs after fusing the BN).

Arithmetic: `torch.fake_quantize_per_tensor_affine` / `torch.fake_quantize_per_channel_affine` (round half to
even, clamp to [−128, 127], straight-through gradient inside the range) — the arithmetic of ONNX
QuantizeLinear → DequantizeLinear, and torch's dynamo exporter writes them as exactly those nodes with int8
zero points, so the exported graph computes what was trained.

Why not ModelOpt's `modelopt.torch.quantization` or torch.ao: torch 2.13 no longer ships torch.ao's PT2E QAT
(it moved to the separate torchao package), and ModelOpt's torch quantisation imports its Hugging Face plugins
and exports through the legacy TorchScript exporter; the placement and arithmetic above are ModelOpt's INT8
defaults written with torch's own fake-quant ops, so the project's one exporter (dynamo) and its Q/DQ
structure checks apply unchanged.

A quantised model keeps its state-dict keys (the convolutions change class, not name) plus one buffer per
convolution, `input_amax`; a checkpoint records the placement under "quantization" and `model_from_checkpoint`
re-applies it before loading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import VssegError
from ..onnx_graph import trt_int8_conv_shape
from .config import PLACEMENTS, QuantConfig

QMAX = 127
QMIN = -128
_HIST_BINS = 2048


def _fake_quant_tensor(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    scale = (amax.clamp_min(1e-12) / QMAX).reshape(()).to(x.dtype)
    return torch.fake_quantize_per_tensor_affine(x, scale, torch.zeros((), dtype=torch.int32), QMIN, QMAX)


def weight_scale(w: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-channel symmetric int8 scales of a weight: max |w| over every axis but `axis`, / 127."""
    dims = [d for d in range(w.dim()) if d != axis]
    return (w.detach().abs().amax(dim=dims).clamp_min(1e-12) / QMAX).to(w.dtype)


def _fake_quant_weight(w: torch.Tensor, axis: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    scale = weight_scale(w, axis) if scale is None else scale
    zero = torch.zeros(scale.shape, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, axis, QMIN, QMAX)


class _InputObserver:
    """Collects |x| of one convolution's input over calibration batches: the max, then a histogram."""

    def __init__(self):
        self.max = 0.0
        self.hist: torch.Tensor | None = None

    def observe(self, x: torch.Tensor, second_pass: bool) -> None:
        a = x.detach().abs().float()
        if not second_pass:
            self.max = max(self.max, float(a.max()))
            return
        top = max(self.max, 1e-12)
        h = torch.histc(a.clamp(max=top), bins=_HIST_BINS, min=0.0, max=top)
        self.hist = h if self.hist is None else self.hist + h

    def amax(self, method: str, percentile: float) -> float:
        if method == "max" or self.hist is None or self.max <= 0:
            return self.max
        cdf = torch.cumsum(self.hist, 0) / self.hist.sum()
        idx = int(torch.searchsorted(cdf, torch.tensor(percentile / 100.0)).clamp(max=_HIST_BINS - 1))
        return (idx + 1) * self.max / _HIST_BINS


class _QuantMixin:
    """Shared forward logic of the fake-quantised convolutions (see the module doc)."""

    weight_axis = 0
    observer: _InputObserver | None

    def _init_quant(self) -> None:
        self.register_buffer("input_amax", torch.zeros(()))
        self.observer = None
        self._second_pass = False

    def _quant_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:  # calibrating: observe, pass the input through unchanged
            self.observer.observe(x, self._second_pass)
            return x
        return _fake_quant_tensor(x, self.input_amax)

    def quant_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input as this layer's INT8 convolution reads it (fake-quantised; unchanged while calibrating)."""
        return self._quant_input(x)

    def _quant_weight(self) -> torch.Tensor:
        # while torch.export traces (ONNX export) the scales come from a buffer filled by `freeze_weight_scales`,
        # so the graph holds them as initializers, not as Abs/ReduceMax on the weight (not always constant-folded)
        frozen = getattr(self, "frozen_weight_scale", None)
        scale = frozen if frozen is not None and torch.compiler.is_exporting() else None
        return _fake_quant_weight(self.weight, self.weight_axis, scale)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """`nn.Conv2d` whose input and weight go through int8 fake quantisers (same parameters and names)."""

    weight_axis = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._quant_input(x), self._quant_weight(), self.bias)


class QuantConvTranspose2d(_QuantMixin, nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` with int8 fake quantisers; its weight is Cin × Cout/groups × kH × kW, so the
    per-output-channel axis is 1 (as ModelOpt and TensorRT quantise deconvolution weights)."""

    weight_axis = 1

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None or self.groups != 1:
            raise VssegError("QAT: ConvTranspose2d with output_size or groups is not supported")
        return F.conv_transpose2d(
            self._quant_input(x),
            self._quant_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )


_SWAP = {nn.Conv2d: QuantConv2d, nn.ConvTranspose2d: QuantConvTranspose2d}


def trt_int8_conv(conv: nn.Module, reads_input: bool) -> bool:
    """Whether TensorRT runs this convolution in int8: ModelOpt's int8 rule for small-channel Conv nodes
    (`onnx_graph.trt_int8_conv_shape`, which calibration applies to the ONNX graph); a ConvTranspose2d always."""
    if not isinstance(conv, nn.Conv2d):
        return True
    cin = conv.in_channels // conv.groups  # the ONNX weight's dims 0 and 1
    return trt_int8_conv_shape(conv.out_channels, cin, conv.groups, conv.kernel_size, reads_input)


@torch.no_grad()
def input_readers(model: nn.Module) -> set[str]:
    """Names of the convolutions that read the network's input, found by one forward pass of a small zero
    image (the model's `input_multiple`, at least 64 × 64) with hooks on every convolution."""
    side = max(64, int(getattr(model, "input_multiple", 1) or 1))
    first = next(iter(model.parameters()), None)
    x = torch.zeros(1, 3, side, side, device=first.device if first is not None else None)
    found, hooks = set(), []
    for name, m in model.named_modules():
        if type(m) in _SWAP:
            hooks.append(
                m.register_forward_pre_hook(lambda mod, inp, name=name: found.add(name) if inp[0] is x else None)
            )
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return found


def quantize_modules(model: nn.Module, record: dict | QuantConfig) -> list[str]:
    """Turn the Conv2d / ConvTranspose2d of `model` that the placement names (not excluded) into their
    fake-quantised twins, in place; a record with "modules" (a `trt` checkpoint's) names them exactly.

    Returns the names of the quantised modules. The modules keep their parameters (and state-dict keys);
    each gains an `input_amax` buffer (0 until `calibrate_inputs` or a checkpoint sets it).
    """
    rec = record.record() if isinstance(record, QuantConfig) else dict(record)
    placement = rec.get("placement")
    if placement not in PLACEMENTS.values() or rec.get("bits") != 8:
        known = ", ".join(sorted(PLACEMENTS.values()))
        raise VssegError(f"quantization {rec}: unknown placement; this vsseg-edge knows {known} (8 bits)")
    modules = dict(model.named_modules())
    exclude = set(rec.get("exclude", []))
    listed = rec.get("modules")
    unknown = sorted((exclude | set(listed or [])) - set(modules))
    if unknown:
        raise VssegError(f"quantization: no module named {unknown[0]!r} in the model")
    if listed is not None:
        chosen = set(listed)
    elif placement == PLACEMENTS["trt"]:
        readers = input_readers(model)
        chosen = {n for n, m in modules.items() if type(m) in _SWAP and trt_int8_conv(m, n in readers)}
    else:
        chosen = {n for n, m in modules.items() if type(m) in _SWAP}
    done = []
    for name, module in modules.items():
        target = _SWAP.get(type(module))
        if target is None or name not in chosen or name in exclude or any(name.startswith(e + ".") for e in exclude):
            continue
        module.__class__ = target
        module._init_quant()
        done.append(name)
    if not done:
        raise VssegError("QAT: the model has no Conv2d / ConvTranspose2d to quantise")
    return done


def quant_record(model: nn.Module, cfg: QuantConfig) -> dict:
    """What a checkpoint of a QAT model stores: the placement, and for `trt` the quantised modules by name."""
    rec = cfg.record()
    if rec["placement"] == PLACEMENTS["trt"]:
        rec["modules"] = [n for n, _ in quantized_modules(model)]
    return rec


def quantized_modules(model: nn.Module) -> list[tuple[str, _QuantMixin]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QuantMixin)]


@torch.no_grad()
def calibrate_inputs(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    cfg: QuantConfig,
    forward: Callable[[torch.Tensor], object] | None = None,
) -> dict[str, float]:
    """Set every fake quantiser's input amax from the model's activations on `batches` (float, eval mode).

    Two passes for `percentile` (the maximum, then a 2048-bin histogram of |x| up to it), one for `max`.
    Returns {module name: amax}. `batches` must be re-iterable (a list) for two passes.
    """
    mods = quantized_modules(model)
    if not mods:
        raise VssegError("QAT: no fake-quantised module to calibrate (call quantize_modules first)")
    batches = list(batches)
    if not batches:
        raise VssegError("QAT: no calibration batches")
    forward = forward or model
    was_training = model.training
    model.eval()
    for _, m in mods:
        m.observer, m._second_pass = _InputObserver(), False
    try:
        passes = (False, True) if cfg.calib_method == "percentile" else (False,)
        for second in passes:
            for _, m in mods:
                m._second_pass = second
            for x in batches:
                forward(x)
        out = {}
        for name, m in mods:
            amax = m.observer.amax(cfg.calib_method, cfg.percentile)
            m.input_amax.fill_(amax)
            out[name] = amax
    finally:
        for _, m in mods:
            m.observer = None
        model.train(was_training)
    dead = [n for n, a in out.items() if a <= 0]
    if dead:
        raise VssegError(f"QAT: input of {dead[0]} was all zeros on the calibration batches; exclude it")
    return out


@torch.no_grad()
def freeze_weight_scales(model: nn.Module) -> int:
    """Store each fake-quantised weight's current per-channel scales in a non-persistent buffer, which the
    forward uses while torch.export traces it (call right before exporting); returns the module count."""
    mods = quantized_modules(model)
    for _, m in mods:
        m.register_buffer("frozen_weight_scale", weight_scale(m.weight, m.weight_axis), persistent=False)
    return len(mods)
