"""Is the temporal loss's effect on TC real? Several seeds of baseline vs +TL (two weights), same iterations.

For each seed and arm, the user-facing training command, then the package's benchmark on the val split:

    vsseg-edge train train/synth_pspnet18_{baseline,tl}.yaml --override seed=S --override model.name=STUDENT ...
    bench.run_bench([model.pt], dataset ROOT, flow exact)    mIoU and TC of the per-frame predictions

plus a diagnostic that separates "the TL changed nothing" from "TC (an argmax metric) cannot see it":
on every consecutive val pair (t, t+1) with the exact flow, in eval mode on full frames,

    tl_logits  = mean(V·M²·(z_t − warp(z_{t+1}))²)   the very quantity the TL optimises (TemporalLoss, weight 1)
    tl_probs   = the same on softmax outputs           (scale-free: logits of a young model are small)
    flip_pct   = % of valid pixels (V·M² > 0.5) whose warped argmax differs between t and t+1
    logit_rms  = sqrt(mean z²)                          so tl_logits can be read relative to the logit scale

and from the training log the weighted temporal term relative to the CE term over the last 20% of steps.

Usage (after `vsseg-edge data synth --out runs/synth128 --size 128x256`):
    python benchmarks/experiments/etc_seeds.py --data runs/synth128 --runs runs/etc_seeds --student espnet \
        --iterations 400 --seeds 0 1 2 --weights 0.1 1.0 --out benchmarks/reports/etc_seeds
Finished (seed, arm) runs are reused (delete runs/etc_seeds/<name> to redo one); results accumulate in
<runs>/results.json so an interrupted sweep resumes. Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RECIPES = {"baseline": "train/synth_pspnet18_baseline.yaml", "tl": "train/synth_pspnet18_tl.yaml"}


def arms(weights: list[float]) -> list[tuple[str, str, list[str]]]:
    """(arm name, recipe, extra overrides): the baseline, then +TL at each temporal weight."""
    out = [("baseline", RECIPES["baseline"], [])]
    out += [(f"tl_w{w:g}", RECIPES["tl"], ["--override", f"loss.weights.temporal={w}"]) for w in weights]
    return out


def temporal_diagnostic(model_path: Path, data: Path, threads: int = 2) -> dict:
    """TL discrepancy, softmax discrepancy and argmax flip rate on consecutive val pairs (exact flow)."""
    import numpy as np
    import torch

    from vsseg_edge.core.preprocess import preprocess
    from vsseg_edge.data.datasets import open_dataset
    from vsseg_edge.data.flow import open_flow_source
    from vsseg_edge.models.checkpoint import (
        checkpoint_preprocess,
        model_from_checkpoint,
    )
    from vsseg_edge.train.losses.temporal import TemporalLoss
    from vsseg_edge.train.losses.warp import flow_warp

    torch.set_num_threads(threads)
    model, ckpt = model_from_checkpoint(model_path)
    spec = checkpoint_preprocess(ckpt, str(model_path))
    val = open_dataset(data, "val")
    flow_src = open_flow_source("exact", val)
    tl = TemporalLoss(1.0)  # ETC defaults: logits, M², gradient irrelevant here
    sums = {"tl_logits": 0.0, "tl_probs": 0.0, "flip_pct": 0.0, "logit_ms": 0.0}
    pairs = 0
    with torch.no_grad():
        for refs in val.sequences.values():
            prev = None
            for ref in refs:
                x = torch.from_numpy(preprocess(val.read_image(ref), spec))
                z = model(x)
                if prev is not None:
                    (x0, z0, r0) = prev
                    flow = torch.from_numpy(np.ascontiguousarray(flow_src(val, r0, ref).transpose(2, 0, 1)))[None]
                    m = tl.mask(x0, x, flow)
                    sums["tl_logits"] += float(tl(z0, z, x0, x, flow))
                    p0, p1 = torch.softmax(z0, 1), torch.softmax(z, 1)
                    sums["tl_probs"] += float((m * (p0 - flow_warp(p1, flow)) ** 2).mean())
                    onehot = torch.nn.functional.one_hot(z.argmax(1), z.shape[1]).permute(0, 3, 1, 2).float()
                    valid = m > 0.5
                    flips = (z0.argmax(1, keepdim=True) != flow_warp(onehot, flow).argmax(1, keepdim=True)) & valid
                    sums["flip_pct"] += 100.0 * float(flips.sum()) / max(1, int(valid.sum()))
                    sums["logit_ms"] += float((z0**2).mean())
                    pairs += 1
                prev = (x, z, ref)
    out = {k: v / max(1, pairs) for k, v in sums.items()}
    out["logit_rms"] = out.pop("logit_ms") ** 0.5
    out["pairs"] = pairs
    return out


def term_ratio(model_dir: Path) -> float | None:
    """Mean weighted temporal term / mean CE term over the last 20% of logged steps (None without TL)."""
    rows = [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "seg" in r]
    tail = rows[-max(1, len(rows) // 5) :]
    if not tail or "temporal" not in tail[0]:
        return None
    return statistics.mean(r["temporal"] for r in tail) / statistics.mean(r["seg"] for r in tail)


def run_one(arm: str, recipe: str, extra: list[str], seed: int, args) -> dict:
    from vsseg_edge.bench.runner import BenchConfig, run_bench
    from vsseg_edge.core.manifest import read_manifest

    name = f"{args.student}_{arm}_s{seed}"
    model = args.runs / name / "model.pt"
    if not model.is_file():
        meta = json.loads((args.data / "synth.json").read_text())
        overrides = {
            "name": name,
            "out_dir": args.runs,
            "data.root": args.data,
            "iterations": args.iterations,
            "preprocess.height": meta["height"],
            "preprocess.width": meta["width"],
            "model.name": args.student,
            "data.crop": args.crop,
            "seed": seed,
            "threads": args.threads,
            "data.workers": args.workers,
            "val_tc": "false",
        }
        flags = [arg for k, v in overrides.items() for arg in ("--override", f"{k}={v}")]
        subprocess.run(
            [sys.executable, "-m", "vsseg_edge.cli", "train", recipe, "--no-progress", *flags, *extra],
            check=True,
            cwd=REPO,
        )
    bench = run_bench(
        [model],
        BenchConfig(
            dataset=args.data,
            flow="exact",
            backends=("torch",),
            runs=1,
            warmup=0,
            frames=1,
            threads=args.threads,
            progress=False,
        ),
    )
    acc = bench["entries"][0]["accuracy"]
    step = read_manifest(model)["metrics"].get("train_step_seconds_p50")
    return {
        "arm": arm,
        "seed": seed,
        "miou": acc["miou"],
        "tc": acc["tc"],
        "step_time_s": step,
        "temporal_over_ce": term_ratio(model.parent),
        **temporal_diagnostic(model, args.data, args.threads),
    }


def summarise(results: list[dict], arm_names: list[str]) -> dict:
    """Per arm: mean, sample std, min, max of every figure; paired (same-seed) differences to the baseline."""
    keys = ("miou", "tc", "tl_logits", "tl_probs", "flip_pct", "logit_rms")
    base = {r["seed"]: r for r in results if r["arm"] == "baseline"}
    out = {}
    for arm in arm_names:
        rows = [r for r in results if r["arm"] == arm]
        if not rows:
            continue
        s = {"n": len(rows), "seeds": [r["seed"] for r in rows]}
        for k in keys:
            vals = [r[k] for r in rows]
            s[k] = {
                "mean": statistics.mean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else None,
                "min": min(vals),
                "max": max(vals),
            }
            if arm != "baseline":
                d = [r[k] - base[r["seed"]][k] for r in rows if r["seed"] in base]
                s[k]["paired_diff"] = (
                    {
                        "mean": statistics.mean(d),
                        "std": statistics.stdev(d) if len(d) > 1 else None,
                        "n": len(d),
                        "n_positive": sum(x > 0 for x in d),
                    }
                    if d
                    else None
                )
        out[arm] = s
    return out


def fmt(s: dict, k: str, nd: int = 2) -> str:
    v = s[k]
    sd = f" ± {v['std']:.{nd}f}" if v["std"] is not None else ""
    return f"{v['mean']:.{nd}f}{sd}"


def scaled(v: dict, k: float) -> dict:
    """A summary entry with every figure multiplied by k (for small losses)."""

    def mul(x):
        return None if x is None else x * k

    d = v.get("paired_diff")
    return {
        **v,
        "mean": mul(v["mean"]),
        "std": mul(v["std"]),
        "paired_diff": None if not d else {**d, "mean": mul(d["mean"]), "std": mul(d["std"])},
    }


def fmt_diff(s: dict, k: str, nd: int = 2) -> str:
    d = s[k].get("paired_diff")
    if not d:
        return "-"
    sd = f" ± {d['std']:.{nd}f}" if d["std"] is not None else ""
    return f"{d['mean']:+.{nd}f}{sd} ({d['n_positive']}/{d['n']} > 0)"


def write_report(result: dict, out: Path, command: str) -> None:
    summ = result["summary"]
    lines = [
        f"# Temporal loss over seeds ({result['student']}, {result['iterations']} iterations, synthetic "
        f"{result['size']})",
        "",
        "mean ± sample std over seeds; Δ = paired difference to the same seed's baseline (mean ± std, "
        "how many seeds > 0).",
        "",
        "| arm | seeds | mIoU | TC | Δ mIoU | Δ TC | temporal/CE (train, last 20%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, s in summ.items():
        ratios = [r["temporal_over_ce"] for r in result["runs"] if r["arm"] == arm and r["temporal_over_ce"]]
        ratio = f"{statistics.mean(ratios):.3f}" if ratios else "-"
        lines.append(
            f"| {arm} | {s['n']} | {fmt(s, 'miou')} | {fmt(s, 'tc')} | {fmt_diff(s, 'miou')} | "
            f"{fmt_diff(s, 'tc')} | {ratio} |"
        )
    lines += [
        "",
        "Diagnostic on consecutive val pairs (exact flow, eval mode, full 128×256 frames; lower = more "
        "consistent; TL values ×1e3):",
        "",
        "| arm | TL on logits | TL on softmax | argmax flips % | logit RMS | Δ TL logits | Δ TL softmax | Δ flips % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, s in summ.items():
        s = {**s, "tl_logits": scaled(s["tl_logits"], 1e3), "tl_probs": scaled(s["tl_probs"], 1e3)}
        lines.append(
            f"| {arm} | {fmt(s, 'tl_logits', 3)} | {fmt(s, 'tl_probs', 4)} | {fmt(s, 'flip_pct')} | "
            f"{fmt(s, 'logit_rms')} | {fmt_diff(s, 'tl_logits', 3)} | {fmt_diff(s, 'tl_probs', 4)} | "
            f"{fmt_diff(s, 'flip_pct')} |"
        )
    lines += [
        "",
        "Per run:",
        "",
        "| arm | seed | mIoU | TC | TL logits ×1e3 | TL softmax ×1e3 | flips % | step s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['miou']:.2f} | {r['tc']:.2f} | {1e3 * r['tl_logits']:.3f} | "
            f"{1e3 * r['tl_probs']:.4f} | {r['flip_pct']:.2f} | {r['step_time_s'] or float('nan'):.3f} |"
        )
    lines += [
        "",
        f"CPU ({result['machine']}, 2 cores shared with other jobs), {result['date']}, torch threads "
        f"{result['threads']} per run, {result.get('jobs', 1)} runs at a time; step times depend on the load and "
        f"are not comparable across runs. mIoU/TC by `vsseg-edge eval --flow exact` on label PNGs written by "
        f"`vsseg-edge run`.",
        f"Reproduce: `{command}` ({result['wall_seconds']} s here).",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def one(args) -> None:
    """Child process: train + score one (arm, seed); writes <runs>/<name>/row.json."""
    arm, seed = args.one[0], int(args.one[1])
    recipe, extra = {a: (r, e) for a, r, e in arms(args.weights)}[arm]
    row = {**run_one(arm, recipe, extra, seed, args), "iterations": args.iterations}
    (args.runs / f"{args.student}_{arm}_s{seed}" / "row.json").write_text(json.dumps(row) + "\n")


def child_command(arm: str, seed: int, args) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--one",
        arm,
        str(seed),
        "--data",
        str(args.data),
        "--runs",
        str(args.runs),
        "--student",
        args.student,
        "--crop",
        args.crop,
        "--iterations",
        str(args.iterations),
        "--threads",
        str(args.threads),
        "--workers",
        str(args.workers),
        "--weights",
        *[str(w) for w in args.weights],
    ]


def sweep(args, plan, done: list[dict], store: Path) -> None:
    """Run the missing (seed, arm) pairs, `--jobs` at a time, each in its own process with `--threads`."""
    import concurrent.futures as cf
    import os
    import subprocess

    todo = [
        (arm, seed)
        for seed in args.seeds
        for arm, _, _ in plan
        if not any(r["arm"] == arm and r["seed"] == seed and r.get("iterations") == args.iterations for r in done)
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}

    def launch(item):
        arm, seed = item
        log = args.runs / f"{args.student}_{arm}_s{seed}.log"
        with open(log, "w") as fh:
            rc = subprocess.run(
                child_command(arm, seed, args), check=False, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT
            ).returncode
        row_file = args.runs / f"{args.student}_{arm}_s{seed}" / "row.json"
        return item, rc, (json.loads(row_file.read_text()) if rc == 0 and row_file.is_file() else None)

    with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for (arm, seed), rc, row in pool.map(launch, todo):
            print(f"{arm} seed {seed}: rc {rc} {json.dumps(row) if row else ''}", flush=True)
            if row:
                done.append(row)
                store.write_text(json.dumps(done, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO / "runs" / "synth128")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "etc_seeds")
    ap.add_argument("--student", default="espnet")
    ap.add_argument("--crop", default="[128,256]")
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--workers", type=int, default=2, help="data-loader workers per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each its own process")
    ap.add_argument("--store", type=Path, default=None, help="accumulated rows (default <runs>/results.json)")
    ap.add_argument("--report-only", action="store_true", help="write the report from the stored rows, train nothing")
    ap.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports" / "etc_seeds")
    args = ap.parse_args()
    args.data, args.runs = args.data.resolve(), args.runs.resolve()
    t0 = time.time()
    args.runs.mkdir(parents=True, exist_ok=True)
    if args.one:
        one(args)
        return
    store = args.store or args.runs / "results.json"
    done = json.loads(store.read_text()) if store.is_file() else []
    plan = arms(args.weights)
    if not args.report_only:
        sweep(args, plan, done, store)
    runs = [r for r in done if r.get("iterations") == args.iterations and r["seed"] in args.seeds]
    meta = json.loads((args.data / "synth.json").read_text())
    from vsseg_edge.measure.machine import cpu_model

    result = {
        "benchmark": "etc_seeds",
        "date": dt.date.today().isoformat(),
        "machine": cpu_model(),
        "student": args.student,
        "iterations": args.iterations,
        "seeds": args.seeds,
        "weights": args.weights,
        "threads": args.threads,
        "jobs": args.jobs,
        "size": f"{meta['height']}x{meta['width']}",
        "runs": runs,
        "summary": summarise(runs, [a for a, _, _ in plan]),
        "wall_seconds": round(time.time() - t0),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    command = " ".join(
        ["python benchmarks/experiments/etc_seeds.py", *(a for a in sys.argv[1:] if a != "--report-only")]
    )
    write_report(result, args.out, command)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
