"""Structure checks of a Q/DQ ONNX model, shared by the calibrator, the tests and the engine builder.

What TensorRT's explicit-quantisation parser needs (flavour ``trt``):
- INT8 everywhere: every QuantizeLinear/DequantizeLinear zero point is int8 and 0 (symmetric);
- weights per channel: the DequantizeLinear of a Conv weight has a 1-D scale over the output channels, axis 0;
- no int32 bias DequantizeLinear (a known TensorRT parser failure; biases stay float);
- no INT64 tensors at the graph boundary.
Flavour ``ort`` (onnxruntime CPU) allows uint8 activations with any zero point but keeps weights symmetric
int8 per channel, and the same boundary rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..core.errors import VssegError

FLAVOURS = ("trt", "ort")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class QdqReport:
    """The result of `check_qdq_structure`: counts and the list of problems (empty = passes)."""

    flavour: str
    quantize_nodes: int = 0
    dequantize_nodes: int = 0
    quantized_convs: int = 0
    float_convs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"flavour": self.flavour, "ok": self.ok, "quantize_nodes": self.quantize_nodes,
                "dequantize_nodes": self.dequantize_nodes, "quantized_convs": self.quantized_convs,
                "float_convs": self.float_convs, "problems": self.problems}


def check_qdq_structure(model: onnx.ModelProto | str | Path, flavour: str = "trt") -> QdqReport:
    """Check a Q/DQ model against the rules of `flavour`; never raises for a rule, lists the problems."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    consts = graph_constants(graph)
    producers = {out: node for node in graph.node for out in node.output}
    rep = QdqReport(flavour)
    rep.quantize_nodes = sum(n.op_type == "QuantizeLinear" for n in graph.node)
    rep.dequantize_nodes = sum(n.op_type == "DequantizeLinear" for n in graph.node)
    if not rep.quantize_nodes and not rep.dequantize_nodes:
        rep.problems.append("no QuantizeLinear/DequantizeLinear nodes: not a Q/DQ model")
    _check_boundary(graph, rep)
    for node in graph.node:
        if node.op_type in _QDQ:
            _check_zero_point(node, consts, producers, flavour, rep)
        if node.op_type == "DequantizeLinear" and _is_int32_input(node, consts):
            if flavour == "trt":
                rep.problems.append(f"{node.name or node.output[0]}: int32 DequantizeLinear (quantised bias) "
                                    "fails in TensorRT's parser; quantise with QuantizeBias=False")
        if node.op_type == "Conv":
            _check_conv_weight(node, consts, producers, rep)
    return rep


def require_qdq_structure(path: str | Path, flavour: str | None = "trt") -> QdqReport:
    """`check_qdq_structure` for a file, raising a one-line VssegError that names the first problems.

    `flavour=None` takes it from the model's qdq_onnx manifest (`target`), as the engine builder would.
    """
    if flavour is None:
        from ..core.manifest import read_manifest

        flavour = read_manifest(path, kind="qdq_onnx").get("target", "trt")
    rep = check_qdq_structure(path, flavour)
    if not rep.ok:
        more = f" (+{len(rep.problems) - 3} more)" if len(rep.problems) > 3 else ""
        raise VssegError(f"{path}: not a valid {flavour} Q/DQ model: {'; '.join(rep.problems[:3])}{more}")
    return rep


def constant_names(graph: onnx.GraphProto) -> set[str]:
    """Names of a graph's initializers and Constant-node outputs (no tensor is converted)."""
    return {i.name for i in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}


def graph_constants(graph: onnx.GraphProto, data_type: int | None = None) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs of a graph, by name (zero points, scales, weights); with
    `data_type` (a TensorProto type) only those of that type, so large float weights are not converted."""
    def wanted(t: onnx.TensorProto) -> bool:
        return data_type is None or t.data_type == data_type

    out = {i.name: numpy_helper.to_array(i) for i in graph.initializer if wanted(i)}
    for node in graph.node:
        if (node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"
                and wanted(node.attribute[0].t)):
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _check_boundary(graph: onnx.GraphProto, rep: QdqReport) -> None:
    inits = {i.name for i in graph.initializer}
    for where, values in (("input", [v for v in graph.input if v.name not in inits]), ("output", graph.output)):
        for v in values:
            if v.type.tensor_type.elem_type == TensorProto.INT64:
                rep.problems.append(f"graph {where} {v.name!r} is INT64 (TensorRT wants int32/uint8 at the boundary)")


def _check_zero_point(node, consts, producers, flavour: str, rep: QdqReport) -> None:
    name = node.name or node.output[0]
    if len(node.input) < 3 or not node.input[2]:
        if flavour == "trt":  # a missing zero point means uint8 0 in ONNX
            rep.problems.append(f"{name}: no zero point (defaults to uint8); TensorRT needs int8 zero points")
        return
    zp = consts.get(node.input[2])
    if zp is None:
        rep.problems.append(f"{name}: zero point {node.input[2]!r} is not a constant")
        return
    if zp.dtype == np.int32 and _is_int32_input(node, consts):  # a quantised bias (flagged for trt elsewhere)
        if np.any(zp != 0):
            rep.problems.append(f"{name}: int32 bias zero point is not 0")
        return
    weight = _is_weight_qdq(node, consts, producers)
    if flavour == "trt" or weight:
        if zp.dtype != np.int8:
            what = "weight" if weight else "activation"
            rep.problems.append(f"{name}: {what} zero point is {zp.dtype}, expected int8")
        elif np.any(zp != 0):
            rep.problems.append(f"{name}: zero point {zp.ravel()[:4].tolist()} is not 0 (asymmetric)")
    elif zp.dtype not in (np.int8, np.uint8):
        rep.problems.append(f"{name}: activation zero point is {zp.dtype}, expected uint8 or int8")
    scale = consts.get(node.input[1])
    if scale is not None and (not np.all(np.isfinite(scale)) or np.any(scale <= 0)):
        rep.problems.append(f"{name}: scale has non-positive or non-finite values")


def _is_weight_qdq(node, consts, producers) -> bool:
    """True for the Q/DQ of a constant tensor (a weight), directly or through its QuantizeLinear."""
    src = node.input[0]
    if src in consts:
        return True
    prod = producers.get(src)
    return prod is not None and prod.op_type == "QuantizeLinear" and prod.input[0] in consts


def _is_int32_input(node, consts) -> bool:
    arr = consts.get(node.input[0])
    return arr is not None and arr.dtype == np.int32


def _check_conv_weight(conv, consts, producers, rep: QdqReport) -> None:
    name = conv.name or conv.output[0]
    dq = producers.get(conv.input[1])
    if dq is None or dq.op_type != "DequantizeLinear":
        rep.float_convs.append(name)
        return
    rep.quantized_convs += 1
    scale = consts.get(dq.input[1])
    weight = _weight_value(dq, consts, producers)
    cout = weight.shape[0] if weight is not None else None
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    if scale is None:
        rep.problems.append(f"{name}: weight scale is not a constant")
    elif scale.ndim == 0 or scale.size == 1:
        if cout != 1:
            rep.problems.append(f"{name}: weight is quantised per tensor; expected per-channel scales on axis 0")
    elif scale.ndim != 1 or (cout is not None and scale.shape[0] != cout) or axis != 0:
        rep.problems.append(f"{name}: weight scales of shape {list(scale.shape)} on axis {axis}; "
                            f"expected {cout} per-channel scales on axis 0")


def _weight_value(dq, consts, producers) -> np.ndarray | None:
    src = dq.input[0]
    if src in consts:
        return consts[src]
    q = producers.get(src)
    return consts.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
