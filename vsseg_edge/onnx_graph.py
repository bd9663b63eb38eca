"""Torch-free ONNX graph utilities for Q/DQ models: constants, structure checks, the zero-point shift, and
nodes kept in float. The calibrator, the sensitivity search, the onnxruntime backend and the engine builder
all read and rewrite Q/DQ graphs through this one module (onnx and numpy only).

Intermediate tensors: `with_outputs` exposes them as extra graph outputs for one run.

Constants: `constant_names` (membership, nothing converted) and `graph_constants` (values by name, optionally
of one type only, so large float weights are not converted to find int8 zero points).

Structure (`check_qdq_structure`): what TensorRT's explicit-quantisation parser needs (flavour ``trt``):
- INT8 everywhere: every QuantizeLinear/DequantizeLinear zero point is int8 and 0 (symmetric);
- weights per channel: the DequantizeLinear of a Conv weight has a 1-D scale over the output channels, axis 0;
- no int32 bias DequantizeLinear (a known TensorRT parser failure; biases stay float);
- no INT64 tensors at the graph boundary.
Flavour ``ort`` (onnxruntime CPU) allows uint8 activations with any zero point; weights stay symmetric per
channel, int8 with zero point 0 or uint8 with zero point 128 (`unsigned_weights`); the same boundary rule.

The S8 → U8 shift (`shift_activations_to_uint8`): the TensorRT flavour quantises activations to int8 with
zero point 0, while onnxruntime's CPU provider fuses Q/DQ into integer kernels mainly for uint8 activations
(it converts int8 Q/DQ to uint8 only where a QuantizeLinear has a single consumer, so residual branches fall
back to float). The shift is numerically exact: with scale s and int8 zero point z,
    q_s8 = clamp(round(x / s) + z, −128, 127),   q_u8 = clamp(round(x / s) + z + 128, 0, 255) = q_s8 + 128,
and DequantizeLinear gives (q_u8 − (z + 128))·s = (q_s8 − z)·s. So every ACTIVATION QuantizeLinear and the
DequantizeLinear nodes it feeds get a uint8 zero point z + 128 (same scale). Weights (DequantizeLinear of
int8 constants, or QuantizeLinear of float constants) stay int8: u8 activations × s8 weights is the kernel.
A QuantizeLinear whose output goes anywhere but into DequantizeLinear nodes with constant int8 zero points
(a graph output, a QOperator op) is left alone, with its DequantizeLinear nodes, so the model stays valid.
On x86 without VNNI, onnxruntime's u8×s8 AVX2 kernel sums pairs of products in int16 and can saturate with
full 8-bit weights, so the optimised shifted model is not always bit-exact there, while the unoptimised
graph is.

Nodes kept in float (`keep_in_float`): every node that reads an activation through a QuantizeLinear →
DequantizeLinear pair is a candidate (`qdq_candidates`): convolutions, but also the BatchNormalization,
pooling, Add and Concat inputs that ModelOpt quantises for TensorRT. "In float" means all of the node's
inputs: activations from the float tensor before their QuantizeLinear, weights from the float weight behind
their Q/DQ, or, when only an int8 weight is stored (onnxruntime's flavour), its dequantised value as a float
initializer; Q/DQ left unused are removed. `strip_qdq` keeps every node in float: the FP32-equivalent of a
Q/DQ model (same graph and FLOPs as its FP32 parent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .core.errors import VssegError

FLAVOURS = ("trt", "ort")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


# --- who writes and who reads each tensor ----------------------------------------------------------------


def tensor_producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Tensor name → the node that writes it (graph inputs and initializers have none)."""
    return {o: n for n in graph.node for o in n.output}


def tensor_readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name → the nodes that read it, in graph order (a node reading it twice is listed twice)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


# --- constants ---------------------------------------------------------------------------------------------


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph also outputs the float tensors `names`, so that one run reads intermediate
    activations (channel ranges, per-layer parity); a name that already is a graph output is not added again."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for name in dict.fromkeys(names):
        if name not in have:
            out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return out


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
        if (
            node.op_type == "Constant"
            and node.attribute
            and node.attribute[0].name == "value"
            and wanted(node.attribute[0].t)
        ):
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


# --- structure checks --------------------------------------------------------------------------------------


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
        return {
            "flavour": self.flavour,
            "ok": self.ok,
            "quantize_nodes": self.quantize_nodes,
            "dequantize_nodes": self.dequantize_nodes,
            "quantized_convs": self.quantized_convs,
            "float_convs": self.float_convs,
            "problems": self.problems,
        }


def check_qdq_structure(model: onnx.ModelProto | str | Path, flavour: str = "trt") -> QdqReport:
    """Check a Q/DQ model against the rules of `flavour`; never raises for a rule, lists the problems."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = model.graph
    consts = graph_constants(graph)
    producers = tensor_producers(graph)
    rep = QdqReport(flavour)
    rep.quantize_nodes = sum(n.op_type == "QuantizeLinear" for n in graph.node)
    rep.dequantize_nodes = sum(n.op_type == "DequantizeLinear" for n in graph.node)
    if not rep.quantize_nodes and not rep.dequantize_nodes:
        rep.problems.append("no QuantizeLinear/DequantizeLinear nodes: not a Q/DQ model")
    _check_boundary(graph, rep)
    for node in graph.node:
        if node.op_type in QDQ_OPS:
            _check_zero_point(node, consts, producers, flavour, rep)
        if node.op_type == "DequantizeLinear" and _is_int32_input(node, consts):
            if flavour == "trt":
                rep.problems.append(
                    f"{node.name or node.output[0]}: int32 DequantizeLinear (quantised bias) "
                    "fails in TensorRT's parser; quantise with QuantizeBias=False"
                )
        if node.op_type == "Conv":
            _check_conv_weight(node, consts, producers, rep)
    return rep


def require_qdq_structure(path: str | Path, flavour: str | None = "trt") -> QdqReport:
    """`check_qdq_structure` for a file, raising a one-line VssegError that names the first problems.

    `flavour=None` takes it from the model's qdq_onnx manifest (`target`), as the engine builder would.
    """
    if flavour is None:
        from .core.manifest import read_manifest

        flavour = read_manifest(path, kind="qdq_onnx").get("target", "trt")
    rep = check_qdq_structure(path, flavour)
    if not rep.ok:
        more = f" (+{len(rep.problems) - 3} more)" if len(rep.problems) > 3 else ""
        raise VssegError(f"{path}: not a valid {flavour} Q/DQ model: {'; '.join(rep.problems[:3])}{more}")
    return rep


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
    if flavour == "ort" and weight and zp.dtype == np.uint8:  # `unsigned_weights`: symmetric around 128
        if np.any(zp != 128):
            rep.problems.append(f"{name}: uint8 weight zero point {zp.ravel()[:4].tolist()} is not 128 (asymmetric)")
    elif flavour == "trt" or weight:
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
    axis = node_attr(dq, "axis", 1)
    if scale is None:
        rep.problems.append(f"{name}: weight scale is not a constant")
    elif scale.ndim == 0 or scale.size == 1:
        if cout != 1:
            rep.problems.append(f"{name}: weight is quantised per tensor; expected per-channel scales on axis 0")
    elif scale.ndim != 1 or (cout is not None and scale.shape[0] != cout) or axis != 0:
        rep.problems.append(
            f"{name}: weight scales of shape {list(scale.shape)} on axis {axis}; "
            f"expected {cout} per-channel scales on axis 0"
        )


def _weight_value(dq, consts, producers) -> np.ndarray | None:
    src = dq.input[0]
    if src in consts:
        return consts[src]
    q = producers.get(src)
    return consts.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None


# --- the S8 → U8 activation shift -------------------------------------------------------------------------


def int8_activation_quantizers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The activation QuantizeLinear nodes with an int8 zero point that can be shifted (see module doc)."""
    graph = model.graph
    consts = constant_names(graph)
    zps = _int8_constants(graph)
    outputs = {o.name for o in graph.output}
    consumers = tensor_readers(graph)
    found = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in zps:
            continue
        if node.input[0] in consts or node.output[0] in outputs:
            continue  # a weight, or a quantised graph output
        users = consumers.get(node.output[0], [])
        if users and all(
            u.op_type == "DequantizeLinear" and u.input[0] == node.output[0] and len(u.input) > 2 and u.input[2] in zps
            for u in users
        ):
            found.append(node)
    return found


def shift_activations_to_uint8(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every int8 activation Q/DQ pair turned into uint8 with zero point z + 128.

    Exact (see module doc); `model` is not modified. A model with nothing to shift comes back as an
    unchanged copy.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    quantizers = int8_activation_quantizers(out)
    if not quantizers:
        return out
    u8_twin = _Uint8Twins(graph)  # weights keep their int8 zero points
    shifted_tensors = set()
    for q in quantizers:
        q.input[2] = u8_twin(q.input[2])
        _set_output_dtype(q)
        shifted_tensors.add(q.output[0])
    for node in graph.node:  # each DequantizeLinear behind a shifted Q, also one with its own int8 zero point
        if node.op_type == "DequantizeLinear" and node.input[0] in shifted_tensors:
            node.input[2] = u8_twin(node.input[2])
    _set_value_types(graph, shifted_tensors)
    u8_twin.drop_unused()
    return out


def unsigned_weights(model: onnx.ModelProto, convs: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose Conv nodes `convs` read their symmetric int8 weights as uint8 with zero point
    128: w_u8 = w_s8 + 128, the same dequantised values (exact, as the activation shift). onnxruntime then runs
    them as u8×u8 integer kernels, which sum the products in int32 on x86 CPUs without VNNI where its u8×s8
    kernel sums pairs in int16 and saturates — 8-bit weights without the saturation, where `narrow_weights`
    gives up a bit instead. For `integer_kernel_convs` (the others run in float either way). Both weight layouts:
    float weight → QuantizeLinear → DequantizeLinear (ModelOpt) and int8 initializer → DequantizeLinear
    (onnxruntime's quantiser). A Conv whose weight is neither is left as it is."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    u8_twin = _Uint8Twins(graph)
    producers = tensor_producers(graph)
    nodes = {node_key(n): n for n in graph.node}
    shifted = set()
    for key in convs:
        dq = producers.get(nodes[key].input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or dq.input[2] not in u8_twin.values:
            continue
        q = producers.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and len(q.input) > 2 and q.input[2] in u8_twin.values:
            q.input[2] = u8_twin(q.input[2])
            _set_output_dtype(q)
            shifted.add(q.output[0])
        elif dq.input[0] in u8_twin.values:
            dq.input[0] = u8_twin(dq.input[0])
        else:
            continue
        dq.input[2] = u8_twin(dq.input[2])
    _set_value_types(graph, shifted)
    u8_twin.drop_unused()
    return out


def unsigned_integer_kernels(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`unsigned_weights` on exactly the convolutions onnxruntime runs as integer kernels
    (`integer_kernel_convs`): the model to hand onnxruntime's CPU provider, and those convolutions."""
    convs = integer_kernel_convs(model)
    return (unsigned_weights(model, convs) if convs else model), convs


class _Uint8Twins:
    """The uint8 twins (value + 128) of a graph's int8 constants, each written once as a new initializer."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph, self.values = graph, _int8_constants(graph)
        self.names: dict[str, str] = {}
        self.taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}

    def __call__(self, name: str) -> str:
        if name not in self.names:
            self.names[name] = _fresh(f"{name}_u8", self.taken)
            value = (self.values[name].astype(np.int16) + 128).astype(np.uint8)
            self.graph.initializer.append(numpy_helper.from_array(value, self.names[name]))
        return self.names[name]

    def drop_unused(self) -> None:
        """Remove the int8 originals no node reads any more (onnxruntime warns about each one left)."""
        _drop_unused_initializers(self.graph, set(self.names))


def _set_value_types(graph: onnx.GraphProto, tensors: set) -> None:
    """Declared types of tensors that became uint8."""
    for vi in graph.value_info:
        if vi.name in tensors and vi.type.HasField("tensor_type"):
            vi.type.tensor_type.elem_type = TensorProto.UINT8


def quantized_convs(model: onnx.ModelProto) -> list[str]:
    """The Conv and ConvTranspose nodes whose weight is read through DequantizeLinear, in graph order."""
    producers = tensor_producers(model.graph)
    return [
        node_key(n)
        for n in model.graph.node
        if n.op_type in ("Conv", "ConvTranspose")
        and getattr(producers.get(n.input[1]), "op_type", None) == "DequantizeLinear"
    ]


def narrow_weights(model: onnx.ModelProto, convs: Sequence[str], bits: int = 7) -> onnx.ModelProto:
    """A copy of `model` whose Conv nodes `convs` read `bits`-bit symmetric per-channel weights: each output
    channel's scale becomes max|w| / (2^(bits−1) − 1), from the float weight behind the weight's Q/DQ (a float
    initializer quantised in the graph, or the dequantised int8 initializer). An int32 bias read through
    DequantizeLinear (onnxruntime's quantiser) is requantised to the new input × weight scale. New initializers
    are written, so nothing another node reads changes. For onnxruntime's u8×s8 kernels on x86 CPUs without
    VNNI, whose int16 pair sums can saturate with 8-bit weights (`integer_kernel_convs`)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    values = graph_constants(graph)
    producers = tensor_producers(graph)
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    qmax = 2 ** (bits - 1) - 1
    nodes = {node_key(n): n for n in graph.node}

    def add(name: str, value: np.ndarray) -> str:
        fresh = _fresh(f"{name}_{bits}bit", taken)
        graph.initializer.append(numpy_helper.from_array(value, fresh))
        values[fresh] = value
        return fresh

    for key in convs:
        conv = nodes[key]
        dq = producers[conv.input[1]]
        axis = node_attr(dq, "axis", 1)
        scale = values[dq.input[1]].astype(np.float32)
        q = producers.get(dq.input[0])
        from_float = q is not None and q.op_type == "QuantizeLinear"  # float weight → Q → DQ (TensorRT flavour)
        weight = values[q.input[0] if from_float else dq.input[0]].astype(np.float32)
        shape = [1] * weight.ndim
        shape[axis] = -1
        if not from_float:  # int8 initializer → DQ (onnxruntime's quantiser): its float value
            zero = values[dq.input[2]].astype(np.float32) if len(dq.input) > 2 and dq.input[2] else 0.0
            weight = (weight - np.reshape(zero, shape)) * scale.reshape(shape)
        peak = np.abs(weight).max(axis=tuple(i for i in range(weight.ndim) if i != axis))
        new_scale = np.where(peak > 0, peak / qmax, scale).astype(np.float32)
        scale_name = add(dq.input[1], new_scale)
        if from_float:
            q.input[1] = scale_name
        else:
            levels = np.clip(np.round(weight / new_scale.reshape(shape)), -qmax, qmax).astype(np.int8)
            dq.input[0] = add(dq.input[0], levels)
        dq.input[1] = scale_name
        _requantize_bias(conv, producers, values, new_scale, add)
    return out


def _requantize_bias(conv, producers, values: dict, weight_scale: np.ndarray, add) -> None:
    """An int32 bias behind DequantizeLinear keeps scale = input scale × weight scale (what QLinearConv needs)."""
    if len(conv.input) < 3 or not conv.input[2]:
        return
    dq = producers.get(conv.input[2])
    x_dq = producers.get(conv.input[0])
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in values or x_dq is None:
        return
    bias = values[dq.input[0]].astype(np.float64) * values[dq.input[1]].astype(np.float64)
    scale = (float(values[x_dq.input[1]]) * weight_scale.astype(np.float64)).astype(np.float32)
    dq.input[0] = add(dq.input[0], np.round(bias / scale).astype(np.int32))
    dq.input[1] = add(dq.input[1], scale)


def _drop_unused_initializers(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove the int8 zero points that only shifted nodes read (onnxruntime warns about each one left)."""
    used = {i for n in graph.node for i in n.input} | {i.name for i in graph.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name in names and i.name not in used]:
        graph.initializer.remove(init)


def _set_output_dtype(q: onnx.NodeProto) -> None:
    """Opset ≥ 21 may name the output type explicitly; keep it consistent with the new zero point."""
    for attr in q.attribute:
        if attr.name == "output_dtype" and attr.i:
            attr.CopyFrom(helper.make_attribute("output_dtype", TensorProto.UINT8))


def _int8_constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """int8 initializers and Constant outputs (the candidate zero points), by name."""
    return graph_constants(graph, TensorProto.INT8)


def _fresh(name: str, taken: set) -> str:
    base, i = name, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


# --- where TensorRT runs int8 -------------------------------------------------------------------------------


def trt_int8_conv_shape(cout: int, cin: int, groups: int, kernel: Sequence[int], reads_input: bool) -> bool:
    """Whether TensorRT has an int8 kernel for a Conv of this shape (`cin` per group, the ONNX weight's dim 1):
    NVIDIA ModelOpt's int8 rule (`modelopt.onnx.quantization.graph_utils.find_nodes_from_convs_to_exclude`).
    At least 16 input and output channels; below that, an ungrouped square-kernel Conv with 8 | Cin or 8 | Cout
    and either 16 ≤ Cin or Cout or reading the network's input, or a grouped one with 8 | Cout and kernels ≥ 3."""
    if cout >= 16 and cin >= 16:
        return True
    if groups == 1:
        return (cout % 8 == 0 or cin % 8 == 0) and (reads_input or cout >= 16 or cin >= 16) and len(set(kernel)) == 1
    return cout % 8 == 0 and all(k >= 3 for k in kernel)


def small_channel_convs(model: onnx.ModelProto) -> list[str]:
    """The Conv nodes TensorRT has no int8 kernel for (`trt_int8_conv_shape`), which ModelOpt leaves in float;
    also those whose weight is not a constant. In graph order."""
    graph = model.graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    shapes.update({n.output[0]: tuple(node_attr(n, "value").dims) for n in graph.node if n.op_type == "Constant"})
    inputs = {i.name for i in graph.input} - set(shapes)
    out = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight = shapes.get(node.input[1])
        if weight is None:
            out.append(node_key(node))
            continue
        kernel = node_attr(node, "kernel_shape", list(weight[2:]))
        groups = node_attr(node, "group", 1)
        if not trt_int8_conv_shape(weight[0], weight[1], groups, kernel, any(i in inputs for i in node.input)):
            out.append(node_key(node))
    return out


def integer_kernel_convs(model: onnx.ModelProto) -> list[str]:
    """The Conv nodes onnxruntime's CPU provider runs as integer kernels (QLinearConv): input and weight read
    through DequantizeLinear, output read by QuantizeLinear nodes only — directly, or through a Relu or Clip
    that is its only reader and that onnxruntime folds into the QuantizeLinear because the quantised range lies
    inside it (a Relu before a zero point at the type's minimum; a Clip whose bounds contain the range). The
    other convolutions of a Q/DQ model run in float on the dequantised values. In graph order."""
    graph = model.graph
    values = graph_constants(graph)
    producers = tensor_producers(graph)
    readers = tensor_readers(graph)
    outputs = {o.name for o in graph.output}

    def dequantised(name: str) -> bool:
        return getattr(producers.get(name), "op_type", None) == "DequantizeLinear"

    def quantised_only(name: str) -> bool:
        seen = readers.get(name, [])
        if name in outputs or not seen:
            return False
        if len(seen) == 1 and seen[0].op_type in ("Relu", "Clip"):
            after = readers.get(seen[0].output[0], [])
            return (
                seen[0].output[0] not in outputs
                and len(after) == 1
                and after[0].op_type == "QuantizeLinear"
                and _folds_into(seen[0], after[0], values)
            )
        return all(r.op_type == "QuantizeLinear" for r in seen)

    return [
        node_key(n)
        for n in graph.node
        if n.op_type == "Conv" and dequantised(n.input[0]) and dequantised(n.input[1]) and quantised_only(n.output[0])
    ]


def quantize_conv_outputs(model: onnx.ModelProto, scales: dict[str, float]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` in which every Conv whose input and weight are read through DequantizeLinear and whose output
    is read in float gets a quantised output: QuantizeLinear → DequantizeLinear → its float readers. The quantiser is
    the one a reader already applies to that output, else a new uint8 one (zero point 128, scale `scales[output]`:
    the calibration's symmetric scale, as the shifted activations'). onnxruntime's CPU provider then runs these
    convolutions as integer kernels (QLinearConv) — the fast path on CPUs with VNNI — at the cost of one more
    rounding, on the convolution's output: NOT exact. Convolutions without a scale, or writing a graph output, are
    left as they are. Returns the copy and the convolutions changed, in graph order."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    producers, readers = tensor_producers(graph), tensor_readers(graph)
    outputs = {o.name for o in graph.output}
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    zero = _fresh("conv_output_zero_point_u8", taken)
    integer = set(integer_kernel_convs(out))  # already (a Relu folded into its reader's quantiser, say)
    after: dict[str, list[onnx.NodeProto]] = {}  # new nodes, placed after the node writing the key's tensor
    changed = []
    for node in graph.node:
        y = node.output[0] if node.output else ""
        reads = readers.get(y, [])
        in_float = [r for r in reads if r.op_type != "QuantizeLinear"]
        dequantised = all(getattr(producers.get(t), "op_type", None) == "DequantizeLinear" for t in node.input[:2])
        if node.op_type != "Conv" or not dequantised or not in_float or y in outputs or node_key(node) in integer:
            continue
        quantisers = [r for r in reads if r.op_type == "QuantizeLinear"]
        if quantisers:  # a reader's quantiser: its DequantizeLinear goes right after it
            q = quantisers[0]
        elif y in scales:
            scale = _fresh(f"{y}_scale", taken)
            graph.initializer.append(numpy_helper.from_array(np.array(scales[y], np.float32), scale))
            q = helper.make_node(
                "QuantizeLinear", [y, scale, zero], [_fresh(f"{y}_q", taken)], name=_fresh(f"{y}_Q", taken)
            )
            after.setdefault(y, []).append(q)
        else:
            continue
        dq_out = _fresh(f"{y}_dq", taken)
        dq = helper.make_node("DequantizeLinear", [q.output[0], *q.input[1:3]], [dq_out], name=_fresh(f"{y}_DQ", taken))
        after.setdefault(q.output[0], []).append(dq)
        for r in in_float:
            r.input[:] = [dq_out if t == y else t for t in r.input]
        changed.append(node_key(node))
    if any(q.input[2] == zero for nodes in after.values() for q in nodes):  # a new quantiser reads it
        graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), zero))
    if changed:
        ordered = []

        def place(n: onnx.NodeProto) -> None:
            ordered.append(n)
            for m in after.get(n.output[0] if n.output else "", []):
                place(m)

        for n in list(graph.node):
            place(n)
        del graph.node[:]
        graph.node.extend(ordered)
    return out, changed


def _folds_into(act: onnx.NodeProto, q: onnx.NodeProto, values: dict) -> bool:
    """Whether onnxruntime removes the Relu / Clip `act` before QuantizeLinear `q` (ReluQuantFusion,
    ClipQuantFusion): the quantised range [(qmin − z)·s, (qmax − z)·s] must lie inside the activation's."""
    if len(q.input) < 3 or q.input[1] not in values or q.input[2] not in values:
        return False
    scale, zero = float(values[q.input[1]]), values[q.input[2]]
    info = np.iinfo(zero.dtype)
    if act.op_type == "Relu":
        return int(zero) == info.min
    low, high = (scale * (info.min - int(zero)), scale * (info.max - int(zero)))
    if len(act.input) > 1:  # opset ≥ 11: min and max are optional inputs
        lo, hi = (values.get(name) for name in [*act.input[1:3], ""][:2])
    else:
        lo, hi = node_attr(act, "min"), node_attr(act, "max")
    return (lo is None or float(lo) <= low) and (hi is None or high <= float(hi))


# --- nodes kept in float ----------------------------------------------------------------------------------


def node_attr(node: onnx.NodeProto, name: str, default=None):
    """A node attribute's value, or `default` when the node does not set it."""
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def node_key(node: onnx.NodeProto) -> str:
    """A node's name, or its first output when unnamed (node names are optional in ONNX)."""
    return node.name or node.output[0]


def qdq_candidates(model: onnx.ModelProto) -> list[str]:
    """Nodes with at least one activation input read through Q → DQ, in graph order."""
    graph = model.graph
    consts = constant_names(graph)
    producers = tensor_producers(graph)
    out = []
    for node in graph.node:
        if node.op_type in QDQ_OPS:
            continue
        for name in node.input:
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in consts:
                out.append(node_key(node))
                break
    return out


def strip_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The FP32-equivalent of a Q/DQ model: every node reads its inputs in float, no Q/DQ left behind them."""
    return keep_in_float(model, [node_key(n) for n in model.graph.node if n.op_type not in QDQ_OPS])


def keep_in_float(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` where the nodes `names` read every input in float; Q/DQ left unused are removed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    wanted = set(names)
    consts, values = constant_names(graph), {}  # values: converted only if an int8-only weight needs it
    producers = tensor_producers(graph)
    found = set()
    for node in graph.node:
        if node_key(node) not in wanted:
            continue
        found.add(node_key(node))
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                node.input[i] = _float_source(graph, dq, producers, consts, values)
    missing = wanted - found
    if missing:
        raise ValueError(f"no node(s) {sorted(missing)[:3]} in the Q/DQ model")
    _prune(graph)
    return out


def _float_source(graph, dq, producers, consts: set[str], values: dict) -> str:
    """The float tensor behind `dq`: its QuantizeLinear's input, or its dequantised constant (`values` caches
    the graph's constants, read on first need)."""
    q = producers.get(dq.input[0])
    if q is not None and q.op_type == "QuantizeLinear":
        return q.input[0]
    if dq.input[0] not in consts:
        return dq.output[0]  # nothing float behind it (an int8 graph input): leave it
    name = f"{dq.output[0]}_float"
    if name not in consts:
        if not values:
            values.update(graph_constants(graph))
        q_val = values[dq.input[0]].astype(np.float64)
        scale = values[dq.input[1]].astype(np.float64)
        zero = values[dq.input[2]].astype(np.float64) if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale)
        axis = node_attr(dq, "axis", 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * q_val.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        value = ((q_val - zero) * scale).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(value, name))
        consts.add(name)
    return name


def _prune(graph: onnx.GraphProto) -> None:
    """Remove Q/DQ nodes (and initializers) nothing reads any more."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in QDQ_OPS and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
