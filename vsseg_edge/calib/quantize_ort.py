"""Q/DQ quantisation with onnxruntime's `quantize_static` (no torch).

Two settings, one per deployment target:

- ``ort`` (onnxruntime on a CPU): U8 asymmetric activations, per-channel S8 symmetric weights, QDQ. The
  u8×s8 integer kernels are the fast path of onnxruntime's CPU provider; S8 activations fall back to FP32
  around residual branches. The final logits Resize is left unquantised.
- ``trt`` (TensorRT-style, used when ModelOpt is absent or for the sensitivity search): S8 symmetric
  activations and weights, per-channel weights on axis 0, zero points 0, biases left in float
  (`QuantizeBias: False`: an int32-bias DequantizeLinear is a known TensorRT parser failure).

Calibration runs once per `calibrate` call (`calibrate_ranges`): the frames go through onnxruntime's
calibrator in chunks (the histogram calibrators never hold more than one chunk of activations in memory),
the ranges are saved as onnxruntime's JSON range cache, and every quantisation (the first, the sensitivity
search, re-quantisation with layers kept in float) reads them through `calibration_cache_path`, so a
500-frame calibration is paid once.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from ..core.preprocess import PreprocessSpec, preprocess_batch
from ..core.signals import temporary_directory
from ..onnx_graph import tensor_readers
from .frames import SampledFrame

METHODS = {
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "minmax": CalibrationMethod.MinMax,
}
TARGETS = ("trt", "ort")
DEFAULT_PERCENTILE = 99.999
CHUNK = 4  # frames per calibration chunk: bounds the activation memory (~0.6 GB a frame for PSPNet-18 at 512×1024)


class FrameReader(CalibrationDataReader):
    """Feeds frames, one per batch, through THE preprocessing (`core.preprocess`) to the model input."""

    def __init__(self, frames: Sequence[SampledFrame], spec: PreprocessSpec, input_name: str):
        self.frames, self.spec, self.input_name = list(frames), spec, input_name
        self._start, self._end = 0, len(self.frames)
        self._pos = 0

    def __len__(self) -> int:
        return len(self.frames)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Limit the next pass to frames[start:end] (called by onnxruntime for each chunk)."""
        self._start, self._end = start_index, min(end_index, len(self.frames))
        self._pos = self._start

    def rewind(self) -> None:
        self.set_range(0, len(self.frames))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        frame = self.frames[self._pos]
        self._pos += 1
        return {self.input_name: preprocess_batch([frame.read()], self.spec)}


def model_input_name(model: onnx.ModelProto) -> str:
    """The first graph input that is not an initializer (the image)."""
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if len(names) != 1:
        raise ValueError(f"expected one model input, found {names}")
    return names[0]


def final_resize_nodes(model: onnx.ModelProto) -> list[str]:
    """Resize nodes whose output is a graph output or feeds only ArgMax/Cast on the way to one."""
    outputs = {o.name for o in model.graph.output}
    consumers = tensor_readers(model.graph)

    def reaches_output(tensor: str, depth: int = 0) -> bool:
        if tensor in outputs:
            return True
        users = consumers.get(tensor, [])
        return (
            depth < 3
            and bool(users)
            and all(
                u.op_type in ("ArgMax", "Cast", "Identity") and reaches_output(u.output[0], depth + 1) for u in users
            )
        )

    return [n.name for n in model.graph.node if n.op_type == "Resize" and reaches_output(n.output[0])]


def chunk_size(n: int, limit: int = CHUNK) -> int:
    """The largest chunk ≤ `limit` that divides `n` (onnxruntime's strided calibration needs a divisor)."""
    return max(d for d in range(1, min(limit, n) + 1) if n % d == 0)


def ort_settings(
    target: str,
    method: str,
    percentile: float = DEFAULT_PERCENTILE,
    op_types: Sequence[str] = (),
) -> dict:
    """`quantize_static` keyword arguments for a target flavour (recorded in the manifest as given).

    For ``trt``, outputs of the graph's `op_types` are not quantised: Q/DQ go on the inputs of the
    quantised layers only, as TensorRT (and ModelOpt) place them. Weights are int8 here; the onnxruntime
    flavour's guard against the u8×s8 AVX2 kernel's int16 saturation on x86 CPUs without VNNI — uint8 weights
    (`onnx_graph.unsigned_weights`) or 7-bit ones (`onnx_graph.narrow_weights`) — is written afterwards, where
    onnxruntime runs integer kernels (`calib.pipeline`).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    extra = {"WeightSymmetric": True, "QuantizeBias": target != "trt", "ActivationSymmetric": target == "trt"}
    if target == "trt":
        extra.update(
            {
                "CalibTensorRangeSymmetric": True,
                "QDQOpTypePerChannelSupportToAxis": {"Conv": 0},
                "AddQDQPairToWeight": True,
                "OpTypesToExcludeOutputQuantization": sorted(set(op_types)),
            }
        )
    if method == "percentile":
        extra["CalibPercentile"] = float(percentile)
    act = QuantType.QInt8 if target == "trt" else QuantType.QUInt8
    return {
        "activation_type": act,
        "weight_type": QuantType.QInt8,
        "per_channel": True,
        "quant_format": QuantFormat.QDQ,
        "reduce_range": False,
        "extra_options": extra,
    }


def calibrate_ranges(
    fp32_path: str | Path,
    reader: FrameReader,
    method: str,
    cache_path: str | Path,
    *,
    symmetric: bool,
    percentile: float = DEFAULT_PERCENTILE,
) -> None:
    """Run the frames through onnxruntime's calibrator in chunks; save the tensor ranges to `cache_path`.

    Done here rather than inside `quantize_static` so that every method collects in chunks. Histogram
    settings are onnxruntime's defaults: entropy 128 bins (TensorRT's EntropyCalibration2 setting, 2048 bins,
    makes onnxruntime's Python KL search far slower without a better model), percentile 2048 bins with a
    symmetric range (closer to FP32 than an asymmetric one); figures in benchmarks/reports/int8_ort_cpu.md.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    options = {"symmetric": symmetric}
    if method == "percentile":
        options.update(symmetric=True, num_bins=2048, percentile=float(percentile))
    op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
    with (
        temporary_directory("vsseg-calib-aug-") as tmp,
        quiet_root_logging(),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        calibrator = create_calibrator(
            Path(fp32_path),
            op_types,
            augmented_model_path=str(Path(tmp) / "aug.onnx"),
            calibrate_method=METHODS[method],
            extra_options=options,
        )
        step = chunk_size(len(reader))
        for start in range(0, len(reader), step):
            reader.set_range(start, start + step)
            calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache_path)


def symmetric_scales(cache_path: str | Path) -> dict[str, float]:
    """Each tensor's symmetric int8 scale from onnxruntime's JSON range cache: max(|lowest|, |highest|) / 127."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    scales = {}
    for name, data in load_tensors_data(cache_path).items():
        lo, hi = data.range_value
        amax = float(np.max(np.abs(np.concatenate([np.ravel(lo), np.ravel(hi)]))))
        scales[name] = max(amax, 1e-8) / 127.0
    return scales


def describe_settings(settings: dict) -> dict:
    """JSON-ready view of `ort_settings` for the manifest."""
    return {k: (v.name if hasattr(v, "name") else v) for k, v in settings.items()}


def quantize_ort(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    target: str,
    method: str,
    cache_path: str | Path,
    reader: FrameReader | None = None,
    nodes_to_exclude: Sequence[str] = (),
    nodes_to_quantize: Sequence[str] | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    op_types: Sequence[str] = (),
) -> dict:
    """Write a Q/DQ model; calibrate with `reader` unless `cache_path` already holds the ranges.

    Returns the settings used (for the manifest). `nodes_to_quantize` limits quantisation to those nodes
    (the sensitivity search quantises one layer at a time); `nodes_to_exclude` keeps nodes in float;
    `op_types` limits the op types quantised (empty: every type onnxruntime can quantise).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    model = onnx.load(str(fp32_path))
    settings = ort_settings(target, method, percentile, [n.op_type for n in model.graph.node])
    exclude = list(dict.fromkeys([*nodes_to_exclude, *(final_resize_nodes(model) if target == "ort" else [])]))
    if not Path(cache_path).is_file() and reader is None:
        raise ValueError("no calibration frames and no cached ranges")
    # onnxruntime's calibrator and quantize_static write a shape-inferred copy (MODEL-inferred.onnx) beside the model
    # they read, then delete it: they read a copy in a temporary folder, never the user's folder (which may be
    # read-only, and where two calibrations of one model deleted each other's copy)
    with temporary_directory("vsseg-quant-") as tmp, quiet_root_logging():
        src = Path(tmp) / "model.onnx"
        onnx.save(model, str(src))
        if not Path(cache_path).is_file():
            calibrate_ranges(src, reader, method, cache_path, symmetric=target == "trt", percentile=percentile)
        quantize_static(
            str(src),
            str(out_path),
            calibration_data_reader=None,
            quant_format=settings["quant_format"],
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            activation_type=settings["activation_type"],
            weight_type=settings["weight_type"],
            nodes_to_exclude=exclude,
            nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize else None,
            op_types_to_quantize=list(op_types) or None,
            calibrate_method=METHODS[method],
            extra_options=dict(settings["extra_options"]),
            calibration_cache_path=str(cache_path),
        )
    return {
        "quantizer": f"onnxruntime.quantize_static ({target} settings)",
        "method": method,
        "op_types": list(op_types) or "all",
        "settings": describe_settings(settings),
        "nodes_to_exclude": exclude,
    }


@contextlib.contextmanager
def quiet_root_logging(level: int = logging.ERROR):
    """The quantisers log hints through the root logger on every call; silence them for the call only."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(old, level))
    try:
        yield
    finally:
        root.setLevel(old)
