"""Step time of each ETC recipe relative to the baseline, measured side by side in one process.

The trainers of every recipe are built first, then their steps are interleaved round-robin (baseline,
TL, TL+KD, baseline, …) so machine noise hits them alike; the report gives median step times and the
ratio to the baseline. Weights do not matter for timing: the teacher is a randomly initialised checkpoint
of `--teacher` (`bench.models.random_init_checkpoint`) unless `--teacher-checkpoint` names a trained one.
Each trainer's batches come from its public `data_loader()`, fetched before the clock starts.

    python benchmarks/experiments/train_step_time.py --data runs/synth --steps 6 \
        --out benchmarks/reports/train_step_time
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RECIPES = {
    "baseline": {"seg": 1.0, "aux": 0.4},
    "tl": {"seg": 1.0, "aux": 0.4, "temporal": 0.1},
    "tl_kd": {
        "seg": 1.0,
        "aux": 0.4,
        "temporal": 0.1,
        "kd_pixel": 1.0,
        "kd_pairwise_frames": 1.0,
        "kd_multiframe": 1.0,
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO / "runs" / "synth")
    ap.add_argument("--student", default="pspnet18")
    ap.add_argument("--teacher", default="pspnet50")
    ap.add_argument("--teacher-checkpoint", type=Path, default=None)
    ap.add_argument("--crop", default="128x256")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports" / "train_step_time")
    args = ap.parse_args()

    import tempfile

    import torch

    from vsseg_edge.bench.models import random_init_checkpoint
    from vsseg_edge.core.config import from_dict, parse_size
    from vsseg_edge.measure.machine import cpu_model
    from vsseg_edge.train.config import TrainConfig
    from vsseg_edge.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    h, w = parse_size(args.crop, "--crop")
    tmp = Path(tempfile.mkdtemp(prefix="vsseg-steptime-"))
    teacher = args.teacher_checkpoint
    if teacher is None:
        teacher = random_init_checkpoint(args.teacher, tmp / "teacher.pt", size=(h, w))
    trainers = {}
    for name, weights in RECIPES.items():
        cfg = from_dict(
            TrainConfig,
            {
                "name": name,
                "iterations": 10**6,
                "batch_size": args.batch,
                "threads": args.threads,
                "out_dir": str(tmp / "runs"),
                "data": {"root": str(args.data), "crop": [h, w], "workers": 0},
                "model": {"name": args.student},
                "preprocess": {"height": h, "width": w},
                "loss": {"weights": weights},
                "teacher": {"checkpoint": str(teacher) if "kd_pixel" in weights else None},
            },
            name,
        )
        tr = Trainer(cfg, progress=False)
        trainers[name] = (tr, iter(tr.data_loader()))
    times = {name: [] for name in trainers}
    for i in range(args.steps + 1):  # the first round is warm-up
        for name, (tr, batches) in trainers.items():
            batch = next(batches)
            t0 = time.perf_counter()
            tr.train_step(batch)
            if i:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = {
        k: {"median_s": round(v, 4), "ratio": round(v / med["baseline"], 3), "steps": len(times[k])}
        for k, v in med.items()
    }
    result = {
        "benchmark": "train_step_time",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
        "student": args.student,
        "teacher": args.teacher,
        "crop": [h, w],
        "batch": args.batch,
        "threads": args.threads,
        "cpu": cpu_model(),
        "rows": rows,
        "note": "step = data already loaded; forward of every frame (+ teacher), losses, backward, SGD step",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Training step time per recipe ({args.student}, teacher {args.teacher})",
        "",
        "| recipe | frames per sample | median step (s) | vs baseline |",
        "|---|---|---|---|",
    ]
    frames = {"baseline": 1, "tl": 2, "tl_kd": 3}
    for k, r in rows.items():
        lines.append(f"| {k} | {frames[k]} | {r['median_s']:.3f} | {r['ratio']:.2f}x |")
    lines += [
        "",
        f"Batch {args.batch}, crop {h}x{w}, {args.threads} CPU threads, {args.steps} interleaved steps "
        f"each after one warm-up round, {result['date']} on {result['cpu']}. The loader's time is excluded "
        "(batches are fetched before the clock starts).",
        f"Reproduce: `python benchmarks/experiments/train_step_time.py --data DATA --steps {args.steps}`.",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
