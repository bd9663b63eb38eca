"""Which quantised nodes cost the most accuracy, found on the Q/DQ graph itself (any quantiser).

Every node that reads an activation through a QuantizeLinear → DequantizeLinear pair is a candidate
(`onnx_graph.qdq_candidates`: convolutions, but also the BatchNormalization, pooling, Add and Concat inputs
that ModelOpt quantises for TensorRT). Leave-one-out: for each candidate, the fully quantised model with
only that node in float (its inputs fed from the float tensors behind their Q/DQ) is run on a few held-out
frames, and the node's score
is the output error it removes (error of the quantised model − error with the node in float; the error is
the gate's noise-to-signal of the logits). The nodes with the largest reductions are then kept in float
together: the top 1, then 2, 4, 8 … (bounded).

Why on the Q/DQ graph rather than by re-quantising with `nodes_to_exclude`: it needs no quantiser run per
candidate (ModelOpt runs in a child process that imports torch), it scores exactly the Q/DQ placement that
ships (ModelOpt's own, whose node names need not match onnxruntime's), and the model kept in the end is the
one the search measured. "In float" is `onnx_graph.keep_in_float`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx

from ..onnx_graph import keep_in_float


def rank_qdq_nodes(
    model: onnx.ModelProto,
    nodes: Sequence[str],
    error_of: Callable[[onnx.ModelProto], float],
    log: Callable[[str], None] = lambda s: None,
) -> tuple[float, list[tuple[str, float]]]:
    """Leave-one-out: (error of `model`, [(node, error reduction with only it in float)], largest first)."""
    base = error_of(model)
    scores = []
    for i, name in enumerate(nodes):
        scores.append((name, base - error_of(keep_in_float(model, [name]))))
        log(f"  sensitivity {i + 1}/{len(nodes)} {name}: {scores[-1][1]:+.3e}")
    return base, sorted(scores, key=lambda s: -s[1])


def exclusion_rounds(
    ranked: Sequence[tuple[str, float]], max_rounds: int, candidates: int | None = None
) -> list[list[str]]:
    """Cumulative sets of nodes to keep in float: top 1, 2, 4, … of `ranked`, at most `max_rounds` sets.

    The last set never holds every one of the `candidates` nodes (default: every ranked node): a model with
    nothing quantised is not an INT8 model. `ranked` may be a subset (the nodes whose fallback helps).
    """
    names = [n for n, _ in ranked]
    total = len(names) if candidates is None else candidates
    limit = max(min(len(names), total - 1), 0)
    rounds, k = [], 1
    while len(rounds) < max_rounds and k <= limit:
        rounds.append(names[:k])
        if k == limit:
            break
        k = min(k * 2, limit)
    return rounds
