"""ETC on the synthetic set: baseline vs +TL vs +TL+KD students, same iterations and seed, scored by `vsseg-edge bench`.

Runs the user-facing commands end to end (no private APIs), so the figures are what a user gets:

    vsseg-edge data synth      (if the dataset is missing)
    vsseg-edge train           teacher (a bigger net), then each student recipe
    vsseg-edge bench MODEL --dataset ROOT --flow exact --backends torch     mIoU on the labelled val frames and
                                                                            TC with the exact flow, from the
                                                                            per-frame end-to-end predictions
                                                                            (what `run --save-masks` + `eval` give)

and each student's median training step time from its manifest (`train_step_seconds_p50`).

Usage:
    python benchmarks/experiments/etc_synthetic.py --data runs/synth --iterations 300 \
        --out benchmarks/reports/etc_synthetic
Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STUDENTS = ("baseline", "tl", "tl_kd")


def cli(*args: str) -> None:
    """Run `vsseg-edge ARGS…` from the repository root, echoing the command."""
    print("+ vsseg-edge", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "vsseg_edge.cli", *args], check=True, cwd=REPO)


def train(recipe: str, name: str, runs: Path, data: Path, iterations: int, extra: list[str]) -> Path:
    """`vsseg-edge train RECIPE` at the dataset's frame size; the checkpoint's path."""
    meta = json.loads((data / "synth.json").read_text())
    size = (meta["height"], meta["width"])
    cli(
        "train",
        recipe,
        "--no-progress",
        "--override",
        f"name={name}",
        "--override",
        f"out_dir={runs}",
        "--override",
        f"data.root={data}",
        "--override",
        f"iterations={iterations}",
        "--override",
        f"preprocess.height={size[0]}",
        "--override",
        f"preprocess.width={size[1]}",
        *extra,
    )
    return runs / name / "model.pt"


def score(model: Path, data: Path, out: Path) -> dict:
    """mIoU, TC (exact flow) and the median training step time of a checkpoint."""
    from vsseg_edge.core.manifest import read_manifest

    cli(
        "bench",
        str(model),
        "--dataset",
        str(data),
        "--split",
        "val",
        "--flow",
        "exact",
        "--backends",
        "torch",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--frames",
        "1",
        "--out",
        str(out),
    )
    acc = json.loads((out / "report.json").read_text())["entries"][0]["accuracy"]
    step = read_manifest(model)["metrics"].get("train_step_seconds_p50")
    return {"miou": acc["miou"], "tc": acc["tc"], "flow": acc["flow"], "step_time_s": step, "model": str(model)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO / "runs" / "synth")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "etc_synthetic")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--teacher-iterations", type=int, default=None)
    ap.add_argument("--student", default="pspnet18")
    ap.add_argument("--teacher", default="pspnet50")
    ap.add_argument("--crop", default="[128,256]", help="training crop as a YAML list [H,W]")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports" / "etc_synthetic")
    args = ap.parse_args()
    t0 = time.time()
    if not (args.data / "synth.json").is_file():
        cli("data", "synth", "--out", str(args.data))
    common = ["--override", f"model.name={args.student}", "--override", f"data.crop={args.crop}"]
    teacher = train(
        "train/synth_teacher_pspnet50.yaml",
        f"teacher_{args.teacher}",
        args.runs,
        args.data,
        args.teacher_iterations or 2 * args.iterations,
        ["--override", f"model.name={args.teacher}", "--override", f"data.crop={args.crop}"],
    )
    rows = {}
    for kind in STUDENTS:
        extra = common + (["--override", f"teacher.checkpoint={teacher}"] if kind == "tl_kd" else [])
        model = train(
            f"train/synth_pspnet18_{kind}.yaml", f"{args.student}_{kind}", args.runs, args.data, args.iterations, extra
        )
        rows[kind] = score(model, args.data, args.runs / f"eval_{kind}")
    rows["teacher"] = score(teacher, args.data, args.runs / "eval_teacher")
    base = rows["baseline"]["step_time_s"]
    for r in rows.values():
        r["step_time_ratio"] = (r["step_time_s"] / base) if (base and r["step_time_s"]) else None
    from vsseg_edge.measure.machine import cpu_model

    result = {
        "benchmark": "etc_synthetic",
        "date": dt.date.today().isoformat(),
        "machine": cpu_model(),
        "iterations": args.iterations,
        "student": args.student,
        "teacher": args.teacher,
        "flow": rows["teacher"]["flow"],
        "rows": rows,
        "wall_seconds": round(time.time() - t0),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# ETC on the synthetic set ({args.student} students, {args.teacher} teacher)",
        "",
        "| run | mIoU | TC | median step time (s) | step time vs baseline |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        ratio = f"{r['step_time_ratio']:.2f}x" if r["step_time_ratio"] else "-"
        step = "-" if r["step_time_s"] is None else f"{r['step_time_s']:.3f}"
        lines.append(f"| {name} | {r['miou']:.2f} | {r['tc']:.2f} | {step} | {ratio} |")
    teacher_iterations = args.teacher_iterations or 2 * args.iterations
    command = " ".join(["python benchmarks/experiments/etc_synthetic.py", *sys.argv[1:]])
    lines += [
        "",
        f"{args.iterations} iterations per student (teacher {teacher_iterations}), seed 0, CPU, "
        f"{result['date']}. mIoU on the val labelled frames, TC over consecutive val frame pairs warped with "
        f"{result['flow']}; both by `vsseg-edge bench` on the per-frame end-to-end predictions.",
        f"Reproduce: `{command}` ({result['wall_seconds']} s here).",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
