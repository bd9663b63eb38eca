"""ETC on the synthetic set: baseline vs +TL vs +TL+KD students, same iterations and seed, scored by `vsseg-edge eval`.

Runs the user-facing commands end to end (no private APIs), so the figures are what a user gets:

    vsseg-edge data synth      (if the dataset is missing)
    vsseg-edge train           teacher (a bigger net), then each student recipe
    vsseg-edge run MODEL --source <val folder> --save-masks DIR    per-frame inference, label PNGs
    vsseg-edge eval DIR --dataset ROOT --json                       mIoU on labelled frames, TC with exact flow

Usage:
    python benchmarks/etc_synthetic.py --data runs/synth --iterations 300 --out benchmarks/reports/etc_synthetic
Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDENTS = ("baseline", "tl", "tl_kd")


def sh(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, cwd=REPO)


def cli(*args: str) -> None:
    sh(sys.executable, "-m", "vsseg_edge.cli", *args)


def train(recipe: str, name: str, runs: Path, data: Path, iterations: int, extra: list[str]) -> Path:
    meta = json.loads((data / "synth.json").read_text())
    size = (meta["height"], meta["width"])
    cli("train", recipe, "--no-progress", "-o", f"name={name}", "-o", f"out_dir={runs}", "-o", f"data.root={data}",
        "-o", f"iterations={iterations}", "-o", f"preprocess.height={size[0]}", "-o", f"preprocess.width={size[1]}",
        *extra)
    return runs / name / "model.pt"


def score(model: Path, data: Path, work: Path) -> dict:
    masks = work / "masks"
    val = data / "leftImg8bit_sequence" / "val"
    for city in sorted(p for p in val.iterdir() if p.is_dir()):
        cli("run", str(model), "--source", str(city), "--save-masks", str(masks / city.name))
    report = work / "eval.json"
    cli("eval", str(masks), "--dataset", str(data), "--split", "val", "--flow", "exact", "--json", str(report))
    return json.loads(report.read_text())


def step_time(model_dir: Path) -> float | None:
    log = model_dir / "metrics.jsonl"
    times = [json.loads(line).get("step_time") for line in log.read_text().splitlines()]
    times = [t for t in times if t]
    return sorted(times)[len(times) // 2] if times else None


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
    common = ["-o", f"model.name={args.student}", "-o", f"data.crop={args.crop}"]
    teacher = train("train/synth_teacher_pspnet50.yaml", f"teacher_{args.teacher}", args.runs, args.data,
                    args.teacher_iterations or 2 * args.iterations,
                    ["-o", f"model.name={args.teacher}", "-o", f"data.crop={args.crop}"])
    rows = {}
    for kind in STUDENTS:
        extra = common + (["-o", f"teacher.checkpoint={teacher}"] if kind == "tl_kd" else [])
        model = train(f"train/synth_pspnet18_{kind}.yaml", f"{args.student}_{kind}", args.runs, args.data,
                      args.iterations, extra)
        ev = score(model, args.data, args.runs / f"eval_{kind}")
        rows[kind] = {"miou": ev["miou"], "tc": ev["tc"], "step_time_s": step_time(model.parent),
                      "model": str(model)}
    ev = score(teacher, args.data, args.runs / "eval_teacher")
    rows["teacher"] = {"miou": ev["miou"], "tc": ev["tc"], "step_time_s": step_time(teacher.parent),
                       "model": str(teacher)}
    base = rows["baseline"]["step_time_s"]
    for r in rows.values():
        r["step_time_ratio"] = (r["step_time_s"] / base) if (base and r["step_time_s"]) else None
    result = {"benchmark": "etc_synthetic", "date": dt.date.today().isoformat(), "machine": platform.processor() or
              platform.machine(), "iterations": args.iterations, "student": args.student, "teacher": args.teacher,
              "flow": ev.get("tc_detail", {}).get("flow"), "rows": rows, "wall_seconds": round(time.time() - t0)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# ETC on the synthetic set ({args.student} students, {args.teacher} teacher)", "",
             "| run | mIoU | TC | median step time (s) | step time vs baseline |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        ratio = f"{r['step_time_ratio']:.2f}x" if r["step_time_ratio"] else "-"
        lines.append(f"| {name} | {r['miou']:.2f} | {r['tc']:.2f} | {r['step_time_s']:.3f} | {ratio} |")
    lines += ["", f"{args.iterations} iterations per student (teacher {args.teacher_iterations or 2 * args.iterations}), "
              f"seed 0, CPU, {result['date']}. mIoU on the val labelled frames, TC over consecutive val frame pairs "
              f"warped with {result['flow']}; both by `vsseg-edge eval` on label PNGs from `vsseg-edge run`.",
              f"Reproduce: `python benchmarks/{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))}` "
              f"({result['wall_seconds']} s here)."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
