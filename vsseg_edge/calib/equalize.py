"""Per-channel range equalisation before INT8: the FP32 graph rewritten so that every channel of a convolution's
input uses the int8 range, with the model's function unchanged.

Why: an int8 Q/DQ activation has ONE scale per tensor, while the channels of a tensor can differ by an order of
magnitude. In the published ESPNet Cityscapes model, half of the 131 channels read by one convolution
(concatenation → BatchNorm → PReLU) stay below 1/16 of the tensor's range, i.e. fewer than 8 int8 steps
(benchmarks/reports/int8_tc.md); whatever those channels carry is rounded away, and pixels near a decision
boundary flip from frame to frame. Per-channel activation scales do not exist in int8 Q/DQ (TensorRT or
onnxruntime), but the scale of a channel can move through the graph:

    X = f(Y),  Z = W * X     with f positively homogeneous per channel: f(k·y) = k·f(y) for k > 0
                                 (the identity, ReLU, PReLU, LeakyReLU)
    Y' = k ⊙ Y,  W'[:, c] = W[:, c] / k_c   ⇒   Z' = W' * f(Y') = W * X = Z          (exactly, in real arithmetic)

where Y is the output of a node whose output channels can be scaled in its parameters (a Conv: weight rows and
bias; a BatchNormalization: γ and β) and W are the weights of EVERY reader of X (Conv or ConvTranspose; zero
padding stays zero). This is the cross-layer scaling of Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction" (ICCV 2019), with the scale chosen from measured activation ranges as in
SmoothQuant (Xiao et al., ICML 2023): with a_c the channel's activation range (a percentile of |X_c| over the
calibration frames) and w_c the largest |weight| any reader applies to channel c,

    k_c = w_c^(1−α) / a_c^α        new ranges: activations a_c·k_c = (a_c·w_c)^(1−α), weights w_c / k_c = (a_c·w_c)^α

α = 1 equalises the activation channels alone (each then spans the same range; the reader's weights carry the
difference, which per-channel weight scales absorb only per OUTPUT channel), α = 0.5 balances activations and
weights (the default, SmoothQuant's). The scales are normalised so the tensor's largest channel range is kept.

Where X is also read by something else (a residual Add, a Concat: the sensitive inputs of ESPNet's level-3
blocks are of this kind) or its producer cannot absorb the scales, a per-channel Mul (x ⊙ k) can be inserted on
the convolutions' branch instead (`Site.scaled` None; `branch=True`, `calibrate`'s `equalize_branches`): the
other readers keep X as it was, and the cost at run time is one elementwise pass (which TensorRT may fuse with
the preceding pointwise layer; not verified here). Off by default: on the Cityscapes ESPNet the branch Muls
made the INT8 model relabel whole vehicles, while folding alone did not (benchmarks/reports/int8_tc.md,
round 3). Parameters shared between nodes are never rewritten. `equalize` records which sites it changed and
how far the channel ranges were apart.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from ..onnx_graph import node_attr, node_key, tensor_producers, tensor_readers, with_outputs

HOMOGENEOUS = ("Relu", "PRelu", "LeakyRelu")  # f(k·y) = k·f(y) for k > 0, per channel
READERS = ("Conv", "ConvTranspose")
MIN_RANGE = 1e-3  # channels below this fraction of the tensor's range (dead ones) are treated as this


@dataclass(frozen=True)
class Site:
    """One tensor whose channels are rescaled for its convolution readers.

    `scaled` set: the producer (a Conv or BatchNormalization, then optionally the activation `via`) absorbs the
    scales, and `readers` are ALL the tensor's readers (free at run time). `scaled` None: the tensor has other
    readers too (a residual Add, a Concat) or no scalable producer, so a per-channel Mul is inserted on the
    convolutions' branch only (one elementwise pass at run time);
    the other readers keep the tensor as it was.
    """

    tensor: str
    scaled: str | None  # node key of the Conv / BatchNormalization whose output channels are scaled
    via: str | None  # node key of the positively homogeneous activation between them, if any
    readers: tuple[str, ...]  # node keys of the convolutions whose weights take the inverse scales


def find_sites(model: onnx.ModelProto, branch: bool = False) -> list[Site]:
    """Tensors of `model` (FP32, no Q/DQ) whose channel scales can move into their convolution readers'
    weights exactly: first those whose producer absorbs the scales, then (`branch`) every other activation a
    convolution reads, through an inserted Mul (see `Site`). Graph inputs and outputs are left alone."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    producers = tensor_producers(graph)
    consumers = tensor_readers(graph)
    uses: dict[str, int] = defaultdict(int)  # parameters shared by two nodes are not rewritten
    for node in graph.node:
        for name in set(node.input):
            if name in inits:
                uses[name] += 1
    outputs = {o.name for o in graph.output}

    def own_params(node: onnx.NodeProto, idx: Iterable[int]) -> bool:
        names = [node.input[i] for i in idx if i < len(node.input) and node.input[i]]
        return all(n in inits and uses[n] == 1 for n in names)

    def conv_reader(r: onnx.NodeProto, tensor: str) -> bool:
        return r.op_type in READERS and r.input[0] == tensor and tensor not in r.input[1:] and own_params(r, [1])

    def absorbing_producer(tensor: str) -> tuple[onnx.NodeProto | None, onnx.NodeProto | None]:
        prod, via = producers[tensor], None
        if prod.op_type in HOMOGENEOUS:
            src = prod.input[0]
            if prod.op_type == "PRelu" and not own_params(prod, [1]):
                return None, None
            if src in outputs or len(consumers.get(src, [])) != 1 or src not in producers:
                return None, None
            via, prod = prod, producers[src]
        if prod.op_type in ("Conv", "BatchNormalization") and own_params(prod, [1, 2]) and len(prod.output) == 1:
            return prod, via
        return None, None

    sites, seen = [], set()
    for node in graph.node:
        tensor = node.input[0] if node.input else ""
        if node.op_type not in READERS or tensor in seen or tensor in outputs or tensor not in producers:
            continue
        readers = consumers.get(tensor, [])
        convs = [r for r in readers if conv_reader(r, tensor)]
        if not convs:
            continue
        prod, via = absorbing_producer(tensor) if len(convs) == len(readers) else (None, None)
        if prod is None and not branch:
            continue
        seen.add(tensor)
        sites.append(
            Site(
                tensor,
                node_key(prod) if prod is not None else None,
                node_key(via) if via is not None else None,
                tuple(node_key(r) for r in convs),
            )
        )
    return sites


def channel_ranges(
    model: onnx.ModelProto,
    sites: list[Site],
    inputs: Iterable[dict[str, np.ndarray]],
    percentile: float = 99.99,
    threads: int = 0,
) -> dict[str, np.ndarray]:
    """Per-channel activation range of every site's tensor: the `percentile` of |x| over each frame's pixels,
    the largest over the frames (onnxruntime, CPU, the sites' tensors exposed as extra outputs)."""
    from ..runtime.backends.ort import ort_session

    names = [s.tensor for s in sites]
    sess = ort_session(with_outputs(model, names), threads=threads, where="channel ranges")
    ranges: dict[str, np.ndarray] = {}
    for feed in inputs:
        for name, value in zip(names, sess.run(names, feed)):
            x = np.abs(value[0].reshape(value.shape[1], -1))
            r = np.percentile(x, percentile, axis=1) if percentile < 100 else x.max(axis=1)
            ranges[name] = np.maximum(ranges[name], r) if name in ranges else r
    if not ranges:
        raise ValueError("no frames to measure channel ranges on")
    return ranges


def _reader_weight_range(w: np.ndarray, op: str, group: int, channels: int) -> np.ndarray:
    """Largest |weight| applied to each input channel by one reader."""
    if op == "ConvTranspose":  # W: (C_in, C_out / group, kh, kw)
        return np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    cg = w.shape[1]  # Conv W: (C_out, C_in / group, kh, kw)
    og = w.shape[0] // group
    out = np.zeros(channels, dtype=np.float64)
    for c in range(channels):
        g, j = divmod(c, cg)
        out[c] = np.abs(w[g * og : (g + 1) * og, j]).max()
    return out


def _scale_reader(w: np.ndarray, op: str, group: int, k: np.ndarray) -> np.ndarray:
    """The reader's weights with input channel c divided by k_c."""
    w = w.astype(np.float64)
    if op == "ConvTranspose":
        return w / k.reshape((-1,) + (1,) * (w.ndim - 1))
    cg, og = w.shape[1], w.shape[0] // group
    out = w.copy()
    for c in range(k.size):
        g, j = divmod(c, cg)
        out[g * og : (g + 1) * og, j] /= k[c]
    return out


def equalize(
    model: onnx.ModelProto,
    ranges: dict[str, np.ndarray],
    alpha: float = 0.5,
    max_scale: float = 64.0,
    branch: bool = False,
) -> tuple[onnx.ModelProto, dict]:
    """A copy of `model` with the channels of every site in `ranges` rescaled (see the module docstring).

    `max_scale` bounds k_c / min(k) so that no channel is blown up or shrunk into float32's rounding.
    Returns the model and a record: per site the tensor's channel-range spread before and after
    (max / median channel range), and the settings.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    nodes = {node_key(n): n for n in graph.node}
    inits = {i.name: i for i in graph.initializer}

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    def put(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    order = {node_key(n): i for i, n in enumerate(graph.node)}
    inserts: dict[int, list[onnx.NodeProto]] = {}  # the branch Muls, by the index of their first reader
    record = []
    for site in find_sites(model, branch):
        if site.tensor not in ranges:
            continue
        a = np.asarray(ranges[site.tensor], dtype=np.float64)
        a = np.maximum(a, MIN_RANGE * a.max()) if a.max() > 0 else None
        if a is None:
            continue
        readers = [nodes[r] for r in site.readers]
        w = np.max(
            [_reader_weight_range(get(r.input[1]), r.op_type, node_attr(r, "group", 1), a.size) for r in readers],
            axis=0,
        )
        w = np.maximum(w, MIN_RANGE * w.max()) if w.max() > 0 else np.ones_like(a)
        k = w ** (1.0 - alpha) / a**alpha
        k = np.clip(k / k.min(), 1.0, max_scale)
        k *= a.max() / (a * k).max()  # keep the tensor's largest channel range where it was
        if site.scaled is None:  # a Mul on the convolutions' branch: x_eq = x ⊙ k
            scale, scaled = f"{site.tensor}_eq_k", f"{site.tensor}_eq"  # not *_scale: quantisers name theirs so
            graph.initializer.append(numpy_helper.from_array(k.astype(np.float32).reshape(1, -1, 1, 1), scale))
            inits[scale] = graph.initializer[-1]
            mul = onnx.helper.make_node("Mul", [site.tensor, scale], [scaled], name=f"{site.tensor}_eq_mul")
            first = min(order[node_key(r)] for r in readers)
            inserts.setdefault(first, []).append(mul)
            for r in readers:
                r.input[0] = scaled
        else:
            prod = nodes[site.scaled]
            if prod.op_type == "Conv":
                wt = get(prod.input[1])
                put(prod.input[1], wt * k.reshape((-1,) + (1,) * (wt.ndim - 1)))
                if len(prod.input) > 2 and prod.input[2]:
                    put(prod.input[2], get(prod.input[2]) * k)
            else:  # BatchNormalization: y = γ (x − μ) / σ + β
                put(prod.input[1], get(prod.input[1]) * k)
                put(prod.input[2], get(prod.input[2]) * k)
        for r in readers:
            put(r.input[1], _scale_reader(get(r.input[1]), r.op_type, node_attr(r, "group", 1), k))
        after = a * k
        record.append(
            {
                "tensor": site.tensor,
                "scaled": site.scaled or "Mul on the convolutions' branch",
                "via": site.via,
                "readers": list(site.readers),
                "spread_before": round(float(a.max() / np.median(a)), 2),
                "spread_after": round(float(after.max() / np.median(after)), 2),
            }
        )
    if inserts:  # rebuild the node list in topological order with the Muls before their readers
        rebuilt = []
        for i, node in enumerate(graph.node):
            rebuilt.extend(inserts.get(i, []))
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            rebuilt.append(copy)
        del graph.node[:]
        graph.node.extend(rebuilt)
    return out, {"alpha": alpha, "max_scale": max_scale, "branches": branch, "sites": record}


def equalize_file(
    fp32: str | Path,
    out: str | Path,
    inputs: Iterable[dict[str, np.ndarray]],
    alpha: float = 0.5,
    percentile: float = 99.99,
    branch: bool = False,
    threads: int = 0,
) -> dict:
    """`equalize` the FP32 ONNX file `fp32` with ranges measured on `inputs`; write it to `out` (a working
    file: the calibrator quantises it in place of the FP32 model). Returns the record (see `equalize`)."""
    model = onnx.load(str(fp32))
    sites = find_sites(model, branch)
    if not sites:
        onnx.save(model, str(out))
        return {"alpha": alpha, "percentile": percentile, "branches": branch, "sites": []}
    ranges = channel_ranges(model, sites, inputs, percentile, threads)
    eq, info = equalize(model, ranges, alpha, branch=branch)
    onnx.save(eq, str(out))
    return {**info, "percentile": percentile}
