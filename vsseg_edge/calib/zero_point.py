"""Exact S8 → U8 shift of a Q/DQ model's activations, for onnxruntime's CPU provider.

The TensorRT flavour of the Q/DQ model quantises activations to int8 with zero point 0. onnxruntime's CPU
provider fuses Q/DQ into integer kernels mainly for uint8 activations; it converts int8 Q/DQ to uint8 only
where a QuantizeLinear has a single consumer, so residual branches fall back to float (issue 4: 0.7–1.5× on
the students, against 2.9–3.2× for the shifted model on a VNNI CPU).

The shift is numerically exact: with scale s and int8 zero point z,
    q_s8 = clamp(round(x / s) + z, −128, 127),   q_u8 = clamp(round(x / s) + z + 128, 0, 255) = q_s8 + 128,
and DequantizeLinear gives (q_u8 − (z + 128))·s = (q_s8 − z)·s. So every ACTIVATION QuantizeLinear and the
DequantizeLinear nodes it feeds get a uint8 zero point z + 128 (same scale). Weights (DequantizeLinear of
int8 constants, or QuantizeLinear of float constants) stay int8: u8 activations × s8 weights is the kernel.
A QuantizeLinear whose output goes anywhere but into DequantizeLinear nodes with constant int8 zero points
(a graph output, a QOperator op) is left alone, with its DequantizeLinear nodes, so the model stays valid.

Caveat (measured in benchmarks/reports/int8_ort_cpu_notes.md): on x86 without VNNI, onnxruntime's u8×s8
AVX2 kernel sums pairs of products in int16 and can saturate with full 8-bit weights, so the optimised
shifted model is not always bit-exact there, while the unoptimised graph is.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .structure import constant_names, graph_constants


def int8_activation_quantizers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The activation QuantizeLinear nodes with an int8 zero point that can be shifted (see module doc)."""
    graph = model.graph
    consts = constant_names(graph)
    zps = _int8_constants(graph)
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in zps:
            continue
        if node.input[0] in consts or node.output[0] in outputs:
            continue  # a weight, or a quantised graph output
        users = consumers.get(node.output[0], [])
        if users and all(u.op_type == "DequantizeLinear" and u.input[0] == node.output[0]
                         and len(u.input) > 2 and u.input[2] in zps for u in users):
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
    zps = _int8_constants(graph)
    shifted_zp: dict[str, str] = {}  # int8 zero-point name → its uint8 twin (weights keep the int8 one)
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}

    def u8_twin(zp_name: str) -> str:
        if zp_name not in shifted_zp:
            shifted_zp[zp_name] = _fresh(f"{zp_name}_u8", taken)
            value = (zps[zp_name].astype(np.int16) + 128).astype(np.uint8)
            graph.initializer.append(numpy_helper.from_array(value, shifted_zp[zp_name]))
        return shifted_zp[zp_name]

    shifted_tensors = set()
    for q in quantizers:
        q.input[2] = u8_twin(q.input[2])
        _set_output_dtype(q)
        shifted_tensors.add(q.output[0])
    for node in graph.node:  # each DequantizeLinear behind a shifted Q, also one with its own int8 zero point
        if node.op_type == "DequantizeLinear" and node.input[0] in shifted_tensors:
            node.input[2] = u8_twin(node.input[2])
    for vi in graph.value_info:
        if vi.name in shifted_tensors and vi.type.HasField("tensor_type"):
            vi.type.tensor_type.elem_type = TensorProto.UINT8
    _drop_unused_initializers(graph, set(shifted_zp))
    return out


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
