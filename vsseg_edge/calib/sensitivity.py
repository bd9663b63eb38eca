"""Which layers suffer most from INT8: quantise one layer at a time and measure the output error.

With calibration ranges cached, quantising a single layer costs a graph rewrite and a few inferences, so
every Conv/MatMul/Gemm of the model is scored: the noise-to-signal ratio of the model output on a few
held-out frames when only that layer (its input activation and weights) is quantised. The layers with the
highest scores are kept in float in the next quantisation rounds: the top 1, then 2, 4, 8 … (bounded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import onnx

QUANTISED_LAYER_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def candidate_layers(model: onnx.ModelProto | str | Path) -> list[str]:
    """Names of the layers the sensitivity search scores, in graph order."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    return [n.name for n in model.graph.node if n.op_type in QUANTISED_LAYER_TYPES and n.name]


def rank_layers(layers: Sequence[str], quantize_only: Callable[[list[str], Path], None],
                error_of: Callable[[Path], float], workdir: str | Path,
                log: Callable[[str], None] = lambda s: None) -> list[tuple[str, float]]:
    """Score each layer by the output error with only that layer quantised; most sensitive first.

    `quantize_only(names, path)` writes a model with only `names` quantised; `error_of(path)` measures it.
    """
    scores = []
    for i, name in enumerate(layers):
        path = Path(workdir) / f"sensitivity_{i:03d}.onnx"
        quantize_only([name], path)
        scores.append((name, error_of(path)))
        path.unlink(missing_ok=True)
        log(f"  sensitivity {i + 1}/{len(layers)} {name}: {scores[-1][1]:.3e}")
    return sorted(scores, key=lambda s: -s[1])


def exclusion_rounds(ranked: Sequence[tuple[str, float]], max_rounds: int) -> list[list[str]]:
    """Cumulative sets of layers to keep in float: top 1, 2, 4, … of `ranked`, at most `max_rounds` sets.

    The last set never holds every layer (a model with nothing quantised is not an INT8 model).
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
