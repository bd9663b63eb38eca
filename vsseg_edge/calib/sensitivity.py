"""Which quantised nodes cost the most accuracy, found on the Q/DQ graph itself (any quantiser).

Every node that reads an activation through a QuantizeLinear → DequantizeLinear pair is a candidate:
convolutions, but also the BatchNormalization, pooling, Add and Concat inputs that ModelOpt quantises for
TensorRT. Leave-one-out: for each candidate, the fully quantised model with only that node in float (its
inputs fed from the float tensors behind their Q/DQ) is run on a few held-out frames, and the node's score
is the output error it removes (error of the quantised model − error with the node in float; the error is
the gate's noise-to-signal of the logits). The nodes with the largest reductions are then kept in float
together: the top 1, then 2, 4, 8 … (bounded).

Why on the Q/DQ graph rather than by re-quantising with `nodes_to_exclude`: it needs no quantiser run per
candidate (ModelOpt runs in a child process that imports torch), it scores exactly the Q/DQ placement that
ships (ModelOpt's own, whose node names need not match onnxruntime's), and the model kept in the end is the
one the search measured. "In float" means all of the node's inputs: activations from the float tensor
before their QuantizeLinear, weights from the float weight behind their Q/DQ, or, when only an int8 weight
is stored (onnxruntime's flavour), its dequantised value as a float initializer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from .structure import constant_names, graph_constants

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def node_key(node: onnx.NodeProto) -> str:
    """A node's name, or its first output when unnamed (node names are optional in ONNX)."""
    return node.name or node.output[0]


def qdq_candidates(model: onnx.ModelProto) -> list[str]:
    """Nodes with at least one activation input read through Q → DQ, in graph order."""
    graph = model.graph
    consts = constant_names(graph)
    producers = {o: n for n in graph.node for o in n.output}
    out = []
    for node in graph.node:
        if node.op_type in _QDQ:
            continue
        for name in node.input:
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in consts:
                out.append(node_key(node))
                break
    return out


def keep_in_float(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` where the nodes `names` read every input in float; Q/DQ left unused are removed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    wanted = set(names)
    consts, values = constant_names(graph), {}  # values: converted only if an int8-only weight needs it
    producers = {o: n for n in graph.node for o in n.output}
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
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
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
        dead = [n for n in graph.node if n.op_type in _QDQ and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def rank_qdq_nodes(model: onnx.ModelProto, nodes: Sequence[str], error_of: Callable[[onnx.ModelProto], float],
                   log: Callable[[str], None] = lambda s: None) -> tuple[float, list[tuple[str, float]]]:
    """Leave-one-out: (error of `model`, [(node, error reduction with only it in float)], largest first)."""
    base = error_of(model)
    scores = []
    for i, name in enumerate(nodes):
        scores.append((name, base - error_of(keep_in_float(model, [name]))))
        log(f"  sensitivity {i + 1}/{len(nodes)} {name}: {scores[-1][1]:+.3e}")
    return base, sorted(scores, key=lambda s: -s[1])


def exclusion_rounds(ranked: Sequence[tuple[str, float]], max_rounds: int) -> list[list[str]]:
    """Cumulative sets of nodes to keep in float: top 1, 2, 4, … of `ranked`, at most `max_rounds` sets.

    The last set never holds every node (a model with nothing quantised is not an INT8 model).
    """
    names = [n for n, _ in ranked]
    limit = max(len(names) - 1, 0)
    rounds, k = [], 1
    while len(rounds) < max_rounds and k <= limit:
        rounds.append(names[:k])
        if k == limit:
            break
        k = min(k * 2, limit)
    return rounds
