"""Protecting named classes: keep in float the quantised nodes whose rounding most flips the classes a user names.

Why a step of its own: the gates judge a mean over the frames they have, and TC is a mean over classes, so a
class that covers a few hundred pixels of a clip (a traffic sign, a pole) weighs as much in a clip's TC as the
road does — yet the gate frames may hold none of it. On the published ESPNet CamVid model the TensorRT-flavour
PTQ that passed both gates lost the third held-out clip's sign symbol (TC 26.9 → 4.6, a 3.2-point drop of the
clip's TC); keeping in float the four nodes that most flip FP32's sign and pole pixels, ranked on CamVid train
frames, brought the drop under a point on all three held-out clips (benchmarks/reports/int8_tc.md, round 8).

How, measured and not guessed:
- frames: from a pool of frames (the calibration source, or `--protect-frames`; never the gate's or the TC
  gate's frames), the `frames` ones where FP32 predicts the most of the named classes, each class's pixels
  counted as a share of its pixels over the pool (a rare class weighs as much as a common one);
- error of a candidate: the mean over the named classes of the share of the pixels FP32 labels as the class
  that the candidate labels otherwise (class by class, as TC averages over classes);
- ranking: `calib.sensitivity.rank_qdq_nodes`, every quantised node put back in float on its own, in memory;
  the `keep` nodes that most lower the error (and lower it at all) stay in float.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..core.errors import VssegError
from ..onnx_graph import keep_in_float, qdq_candidates
from .frames import FrameSet
from .gate import Evaluator
from .sensitivity import rank_qdq_nodes


class NoProtectedClass(VssegError):
    """The frames to rank on show none of the classes to protect."""


@dataclass
class Protection:
    """What the step did (the manifest's `protected` entry)."""

    classes: list[str]
    frames: dict  # the pool's record, and the keys of the frames ranked on
    kept_in_float: list[str]
    agreement_before: dict  # class → % of FP32's pixels of the class the model keeps, before and after
    agreement_after: dict
    ranking: list  # [[node, gain in points of the class-balanced disagreement], …], best first (top 20)
    default: bool = False  # the classes are the class set's thin ones (`core.labels.LabelSet.thin`), not named

    def to_dict(self) -> dict:
        return {
            "classes": self.classes,
            "default": self.default,
            "frames": self.frames,
            "kept_in_float": self.kept_in_float,
            "agreement_before": self.agreement_before,
            "agreement_after": self.agreement_after,
            "ranking": self.ranking,
        }

    def summary(self) -> str:
        worst = min(self.agreement_before, key=self.agreement_before.get)
        return (
            f"{len(self.kept_in_float)} node(s) kept in float for {', '.join(self.classes)}: agreement with FP32 on "
            f"{worst} {self.agreement_before[worst]:.2f} → {self.agreement_after[worst]:.2f} % "
            f"on {len(self.frames['keys'])} frames"
        )


def class_indices(names: Sequence[str], classes: Sequence[str], model_name: str) -> list[int]:
    """The named classes' indices in the model's class list, or a one-line error naming what it has."""
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise VssegError(
            f"protect_classes: {model_name} has no class {', '.join(map(repr, unknown))}; its classes are "
            + ", ".join(classes)
        )
    return [list(classes).index(n) for n in dict.fromkeys(names)]


def richest_frames(fp32_labels: Sequence[np.ndarray], wanted: Sequence[int], count: int, keys: Sequence[str]):
    """Indices of the `count` label maps with the most of the `wanted` classes, each class's pixels as a share of
    its pixels over all maps (ties: by key), and the classes present in the pool at all."""
    counts = np.array([[np.count_nonzero(lab == c) for c in wanted] for lab in fp32_labels], dtype=np.float64)
    totals = counts.sum(axis=0)
    present = totals > 0
    score = (counts[:, present] / totals[present]).sum(axis=1) if present.any() else np.zeros(len(counts))
    order = sorted(range(len(counts)), key=lambda i: (-score[i], keys[i]))
    return order[:count], [c for c, p in zip(wanted, present) if p]


def class_disagreement(labels: np.ndarray, ref: np.ndarray, wanted: Sequence[int]) -> dict[int, float]:
    """Per class: the share of `ref`'s pixels of that class that `labels` labels otherwise — the by-class part of
    `measure.compare.agreement_breakdown`, unrounded (the ranking compares small gains) and without its boundary
    pass (the ranking runs it once per quantised node)."""
    out = {}
    for c in wanted:
        where = ref == c
        n = np.count_nonzero(where)
        if n:
            out[c] = float(np.count_nonzero(labels[where] != c)) / n
    return out


def protect_classes(
    model: onnx.ModelProto,
    fp32,
    pool: FrameSet,
    spec,
    classes: Sequence[str],
    names: Sequence[str],
    *,
    keep: int,
    frames: int,
    exclude: Sequence[str] = (),
    threads: int = 0,
    exact_qdq: bool = False,
    model_name: str = "the model",
    log: Callable[[str], None] = lambda s: None,
) -> tuple[onnx.ModelProto, Protection]:
    """`model` (a Q/DQ ModelProto) with the `keep` quantised nodes in float that most protect the classes `names`
    on the `frames` frames of `pool` richest in them (see the module docstring), and the record of it."""
    wanted = class_indices(names, classes, model_name)
    if not pool.frames:
        raise VssegError(f"--protect-frames {pool.source}: no frames to rank on")
    ev = Evaluator(fp32, pool.frames, spec, classes, threads, error_frames=0, exact_qdq=exact_qdq)
    keys = [f.key for f in pool.frames]
    chosen, present = richest_frames(ev.fp32_labels, wanted, frames, keys)
    if not present:
        raise NoProtectedClass(
            f"--protect-frames {pool.source}: the FP32 model predicts none of {', '.join(names)} on its "
            f"{len(pool.frames)} frame(s); give frames that show them"
        )
    images = [pool.frames[i].read() for i in chosen]
    ref = np.stack([ev.fp32_labels[i] for i in chosen])

    def per_class(candidate) -> dict[int, float]:
        return class_disagreement(np.stack(ev.labels(candidate, images)), ref, present)

    before = per_class(model)

    def error_of(candidate) -> float:
        return float(np.mean(list((before if candidate is model else per_class(candidate)).values())))

    skip = set(exclude)
    nodes = [n for n in qdq_candidates(model) if n not in skip]
    absent = [classes[c] for c in wanted if c not in present]
    log(
        f"protecting {', '.join(classes[c] for c in present)}: ranking {len(nodes)} quantised node(s) on the "
        f"{len(images)} of {len(pool.frames)} frames where FP32 predicts the most of them"
        + (f" (FP32 predicts no {', '.join(absent)} there: not protected)" if absent else "")
    )
    _, ranked = rank_qdq_nodes(model, nodes, error_of, log)
    top = [n for n, gain in ranked[:keep] if gain > 0]
    protected = keep_in_float(model, top) if top else model
    after = per_class(protected) if top else before

    def pct(d: dict[int, float]) -> dict[str, float]:
        return {classes[c]: round(100.0 * (1.0 - v), 3) for c, v in d.items()}

    record = Protection(
        classes=[classes[c] for c in present],
        frames={**pool.record(), "keys": [keys[i] for i in chosen]},
        kept_in_float=top,
        agreement_before=pct(before),
        agreement_after=pct(after),
        ranking=[[n, round(100.0 * g, 4)] for n, g in ranked[:20]],
    )
    return protected, record
