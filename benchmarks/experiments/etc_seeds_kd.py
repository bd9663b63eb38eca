"""Why is the multi-frame (ConvLSTM) KD term ~0?  A diagnosis on trained checkpoints, no training.

On every clip (t−k, t, t+k) of the val split (k = 1), with the student, the teacher and the ConvLSTM of an
ETC run (`benchmarks/experiments/etc_synthetic.py`; the cell's trained weights are in the student's last.pt), for the
node grid ETC's 16×16 pooling gives at this crop and for the grid `MultiFrameKDLoss` now uses:

    nodes         pooled grid (h×w) of the PPM features; the graph is (h·w)×(h·w)
    offdiag S/T   mean off-diagonal cosine of the student's / teacher's graph (1 = all nodes alike)
    graph_mse     MSE(G_S, G_T) averaged over the clip's frames: what the term is meant to transfer
    loss_trained  the term (weight 1) through the cell as trained with the student (trainable, 10× lr)
    loss_fresh    the same through freshly initialised cells (mean of 5 init seeds): the frozen-cell term
    gain          loss / graph_mse: how much of the graph discrepancy survives the cell
    grad_ratio    ‖∂term/∂θ_student‖ / ‖∂CE/∂θ_student‖ on the same frames (eval-mode BN); for scale, the
                  same for the recipe's pixel KD and pair-wise-frames KD at weight 1 (4-node-rule rows)

Usage (after `python benchmarks/experiments/etc_synthetic.py ... --runs runs/etc_synthetic`; defaults are those
paths):
    python benchmarks/experiments/etc_seeds_kd.py \
        --students runs/etc_synthetic/espnet_tl_kd runs/etc_synthetic/espnet_baseline \
        --cell-from runs/etc_synthetic/espnet_tl_kd/last.pt --teacher runs/etc_synthetic/teacher_pspnet18/model.pt \
        --data runs/synth128 --out benchmarks/reports/etc_seeds_kd
Writes <out>.json and prints the Markdown table (benchmarks/reports/etc_seeds_kd.md quotes it with the
reading). `--students` takes more run folders or .pt checkpoints (e.g. an intermediate last.pt); with
`--append` their rows are added to those already in <out>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INIT_SEEDS = range(5)


def trained_cell_state(path: Path) -> dict:
    """The ConvLSTM weights saved with a student's training state (keys without the kd_multiframe prefix)."""
    from vsseg_edge.models.checkpoint import load_checkpoint

    state = load_checkpoint(path)["train_state"]["loss"]
    prefix = "kd_multiframe."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def clips(data: Path, spec, every: int, k: int = 1):
    """(images [t−k, t, t+k] as 1×3×H×W tensors, label of t) for every `every`-th val frame with both neighbours."""
    import torch

    from vsseg_edge.core.preprocess import preprocess
    from vsseg_edge.data.datasets import open_dataset

    val = open_dataset(data, "val")
    for ref in val.labelled()[::every]:
        prev, nxt = val.neighbour(ref, -k), val.neighbour(ref, k)
        if prev is None or nxt is None:
            continue
        xs = [torch.from_numpy(preprocess(val.read_image(r), spec)) for r in (prev, ref, nxt)]
        yield xs, torch.from_numpy(val.read_label(ref).astype("int64"))[None]


def student_grad_norm(student, value) -> float:
    import torch

    params = [p for p in student.parameters() if p.requires_grad]
    grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def diagnose(
    student,
    teacher,
    cell_state: dict | None,
    data: Path,
    spec,
    pool: int,
    min_side: int,
    every: int,
    with_other_terms: bool = False,
) -> dict:
    """Figures of one (student, node-grid rule) over the val clips; see the module docstring."""
    import torch
    import torch.nn.functional as F

    from vsseg_edge.train.losses import PairwiseFramesKDLoss, PixelKDLoss
    from vsseg_edge.train.losses.ce import cross_entropy
    from vsseg_edge.train.losses.kd_multiframe import MultiFrameKDLoss

    cells = {}
    for seed in INIT_SEEDS:
        torch.manual_seed(seed)
        cells[f"fresh{seed}"] = MultiFrameKDLoss(pool=pool, min_side=min_side, trainable=False)
    if cell_state is not None:
        cells["trained"] = MultiFrameKDLoss(pool=pool, min_side=min_side, trainable=False)
        cells["trained"].load_state_dict(cell_state)
    acc: dict[str, list[float]] = {}

    def add(key, value):
        acc.setdefault(key, []).append(float(value))

    for xs, label in clips(data, spec, every):
        outs = [student(x, return_features=True) for x in xs]
        with torch.no_grad():
            t_feats = [teacher(x, return_features=True)["ppm"] for x in xs]
        s_feats = [o["ppm"] for o in outs]
        mf = cells["fresh0"]
        gs, gt = [mf.graph(f) for f in s_feats], [mf.graph(f) for f in t_feats]
        m = gs[0].shape[-1]
        off = ~torch.eye(m, dtype=torch.bool)
        add("nodes", m)
        add("offdiag_s", gs[1][0, 0][off].mean().detach() if m > 1 else float("nan"))
        add("offdiag_t", gt[1][0, 0][off].mean() if m > 1 else float("nan"))
        add("graph_mse", statistics.mean(float(F.mse_loss(a.detach(), b)) for a, b in zip(gs, gt)))
        ce = cross_entropy(outs[1]["out"], label)
        ce_norm = student_grad_norm(student, ce)
        if with_other_terms:  # the recipe's other KD terms at weight 1, for scale (neighbours t±k)
            with torch.no_grad():
                t_s8 = [teacher(x, return_features=True)["out_s8"] for x in xs]
            s_s8 = [o["out_s8"] for o in outs]
            pix = PixelKDLoss()(s_s8[1], t_s8[1], [s_s8[0], s_s8[2]], [t_s8[0], t_s8[2]])
            pair = PairwiseFramesKDLoss()(s_s8[1], t_s8[1], [s_s8[0], s_s8[2]], [t_s8[0], t_s8[2]])
            add("grad_ratio_kd_pixel", student_grad_norm(student, pix) / max(ce_norm, 1e-12))
            add("grad_ratio_kd_pairwise_frames", student_grad_norm(student, pair) / max(ce_norm, 1e-12))
        for name, cell in cells.items():
            value = cell(s_feats, t_feats)
            key = "trained" if name == "trained" else "fresh"
            add(f"loss_{key}", value.detach())
            if name in ("trained", "fresh0"):
                add(f"grad_ratio_{key}", student_grad_norm(student, value) / max(ce_norm, 1e-12))
        student.zero_grad(set_to_none=True)
    grid = tuple(cells["fresh0"].graph(s_feats[0]).shape[-2:])
    out = {k: statistics.mean(v) for k, v in acc.items()}
    out["clips"] = len(acc.get("graph_mse", []))
    out["grid"] = (
        f"{s_feats[0].shape[-2]}x{s_feats[0].shape[-1]} map -> {int(out['nodes'])} nodes ({grid[0]}x{grid[1]} graph)"
    )
    for key in ("trained", "fresh"):
        if f"loss_{key}" in out:
            out[f"gain_{key}"] = out[f"loss_{key}"] / max(out["graph_mse"], 1e-12)
    return out


def student_checkpoint(path: Path) -> Path:
    """A run folder means its model.pt; a .pt file (e.g. an intermediate last.pt) is used as it is."""
    return path if path.suffix == ".pt" else path / "model.pt"


def markdown(result: dict) -> str:
    """The report table: one row per (student, grid rule)."""

    def f(v, nd=3):
        return "-" if v is None else (f"{v:.2e}" if abs(v) < 1e-2 and v else f"{v:.{nd}f}")

    head = (
        "| student | graph | offdiag S / T | graph MSE | loss, trained cell | loss, fresh cell "
        "| gain trained / fresh | grad/CE trained / fresh | grad/CE pixel KD, pair KD |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['label']} | {r['grid']} | {f(r['offdiag_s'], 2)} / {f(r['offdiag_t'], 2)} | {f(r['graph_mse'])} "
            f"| {f(r.get('loss_trained'))} | {f(r['loss_fresh'])} | {f(r.get('gain_trained'))} / {f(r['gain_fresh'])} "
            f"| {f(r.get('grad_ratio_trained'))} / {f(r['grad_ratio_fresh'])} "
            f"| {f(r.get('grad_ratio_kd_pixel'))}, {f(r.get('grad_ratio_kd_pairwise_frames'))} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--students",
        type=Path,
        nargs="+",
        help="student run folders (model.pt) or .pt checkpoints",
        default=[REPO / "runs" / "etc_synthetic" / "espnet_tl_kd", REPO / "runs" / "etc_synthetic" / "espnet_baseline"],
    )
    ap.add_argument(
        "--cell-from",
        type=Path,
        default=REPO / "runs" / "etc_synthetic" / "espnet_tl_kd" / "last.pt",
        help="training state holding the trained ConvLSTM; used for the student of the same folder",
    )
    ap.add_argument("--teacher", type=Path, default=REPO / "runs" / "etc_synthetic" / "teacher_pspnet18" / "model.pt")
    ap.add_argument("--data", type=Path, default=REPO / "runs" / "synth128")
    ap.add_argument("--every", type=int, default=5, help="use every N-th labelled val frame as frame t")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--append", action="store_true", help="keep the rows of other students already in <out>.json")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports" / "etc_seeds_kd")
    args = ap.parse_args()

    import torch

    from vsseg_edge.core.fileio import atomic_write
    from vsseg_edge.models.checkpoint import (
        checkpoint_preprocess,
        model_from_checkpoint,
    )

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    teacher, _ = model_from_checkpoint(args.teacher)
    cell = trained_cell_state(args.cell_from)
    out_json = args.out.with_suffix(".json")
    labels = {str(p) for p in args.students}
    rows = (
        [r for r in json.loads(out_json.read_text())["rows"] if r["student"] not in labels]
        if args.append and out_json.is_file()
        else []
    )
    for run in args.students:
        student, ckpt = model_from_checkpoint(student_checkpoint(run))
        spec = checkpoint_preprocess(ckpt, str(run))
        own_cell = cell if student_checkpoint(run).resolve().parent == args.cell_from.resolve().parent else None
        for rule, (pool, min_side) in {"etc_kernel16": (16, 1), "min_side4": (16, 4)}.items():
            figures = diagnose(
                student,
                teacher,
                own_cell,
                args.data,
                spec,
                pool,
                min_side,
                args.every,
                with_other_terms=rule == "min_side4",
            )
            rows.append(
                {
                    "student": str(run),
                    "label": f"{run.parent.name}/{run.name}",
                    "grid_rule": rule,
                    "step": ckpt.get("step"),
                    **figures,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    from vsseg_edge.measure.machine import cpu_model

    result = {
        "benchmark": "etc_seeds_kd",
        "rows": rows,
        "teacher": str(args.teacher),
        "cell_from": str(args.cell_from),
        "data": str(args.data),
        "threads": args.threads,
        "every": args.every,
        "date": dt.date.today().isoformat(),
        "machine": cpu_model(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_json, "w") as fh:
        fh.write(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
