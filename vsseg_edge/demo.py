"""`vsseg-edge demo`: the whole pipeline on the embedded synthetic set, on a CPU, in minutes.

    synthesise ─► train teacher ─► train student (temporal loss + KD) ─► export ONNX ─► calibrate INT8
               ─► run the INT8 model over a val sequence (overlay video) ─► benchmark report

Each step calls the same code as its CLI command and leaves its artifact (with manifest) under OUT:

    OUT/synth/                 the dataset (Cityscapes layout, exact flow)
    OUT/train/<name>/model.pt  teacher and student checkpoints (+ metrics.jsonl, val_report.json)
    OUT/student.onnx           FP32 ONNX (parity-checked)          OUT/student.int8.qdq.onnx   INT8 (gated)
    OUT/overlay.mp4            the INT8 model's overlay on a val sequence
    OUT/report/                report.md (opens with the table and a plot), report.json, PNG plots
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import typer

REPO_TRAIN = Path(__file__).resolve().parents[1] / "train"


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    train_sequences: int = 8
    val_sequences: int = 2
    frames: int = 30
    size: tuple[int, int] = (256, 512)
    teacher: str = "pspnet18"
    student: str = "bisenetv2"
    teacher_iterations: int = 100  # sized with student_iterations for minutes on a 2-core CPU
    student_iterations: int = 60  # each step runs 3 frames + the teacher + KD
    batch_size: int = 4
    crop: tuple[int, int] = (128, 256)
    calib_frames: int = 64
    bench_runs: int = 10
    seed: int = 0
    exporter: str = "dynamo"  # ONNX exporter (export.presets.ExportPreset.exporter); tests use the faster legacy one


def _step(i: int, n: int, title: str) -> float:
    typer.secho(f"\n[{i}/{n}] {title}", bold=True)
    return time.perf_counter()


def _train(cfg: DemoConfig, name: str, model: str, iterations: int, loss: dict, teacher: Path | None) -> Path:
    from .core.config import from_dict
    from .train.config import TrainConfig
    from .train.trainer import train

    data = {
        "name": name, "classes": "cityscapes", "iterations": iterations, "batch_size": cfg.batch_size,
        "seed": cfg.seed, "out_dir": str(cfg.out / "train"), "log_every": 5, "ckpt_every": 50,
        "val_max_sequences": cfg.val_sequences,
        "data": {"root": str(cfg.out / "synth"), "crop": list(cfg.crop), "scale_range": [0.5, 1.0],
                 "workers": 1},
        "model": {"name": model},
        "preprocess": {"height": cfg.size[0], "width": cfg.size[1]},
        "loss": {"weights": loss},
        "teacher": {"checkpoint": str(teacher) if teacher else None},
    }
    # the demo's own run folders: a second demo into the same --out trains again
    metrics = train(from_dict(TrainConfig, data, f"demo {name}"), progress=True, overwrite=True)
    typer.echo(f"  {name}: mIoU {metrics['val_miou']:.1f}  TC {metrics.get('val_tc', float('nan')):.1f} "
               f"({metrics.get('tc_flow')})")
    return cfg.out / "train" / name / "model.pt"


def run_demo(cfg: DemoConfig) -> dict:
    """Run every step; return {step: seconds} and the paths of the artifacts."""
    from .bench import benchmark
    from .calib.config import CalibConfig
    from .calib.pipeline import calibrate
    from .data.synth import generate
    from .export.onnx_export import export_checkpoint
    from .export.presets import ExportPreset
    from .runtime.run import run_model

    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    n, times = 7, {}
    t = _step(1, n, f"synthesise {cfg.train_sequences}+{cfg.val_sequences} sequences × {cfg.frames} frames "
                    f"at {cfg.size[0]}x{cfg.size[1]}")
    synth = out / "synth"
    if not (synth / "synth.json").is_file():
        from tqdm.auto import tqdm

        total = (cfg.train_sequences + cfg.val_sequences) * cfg.frames
        with tqdm(total=total, desc="synth", unit="frame") as bar:
            generate(synth, num_train=cfg.train_sequences, num_val=cfg.val_sequences, frames=cfg.frames,
                     height=cfg.size[0], width=cfg.size[1], seed=cfg.seed, progress=bar.update,
                     overwrite=True)  # no synth.json: an interrupted earlier demo's partial set
    times["synth"] = time.perf_counter() - t

    t = _step(2, n, f"train the teacher ({cfg.teacher}, cross-entropy, {cfg.teacher_iterations} steps)")
    teacher = _train(cfg, "teacher", cfg.teacher, cfg.teacher_iterations, {"seg": 1.0, "aux": 0.4}, None)
    times["train_teacher"] = time.perf_counter() - t

    t = _step(3, n, f"train the student ({cfg.student}) with ETC's temporal loss and distillation")
    student = _train(cfg, "student", cfg.student, cfg.student_iterations,
                     {"seg": 1.0, "aux": 0.4, "temporal": 0.1, "kd_pixel": 1.0, "kd_pairwise_frames": 1.0,
                      "kd_multiframe": 1.0}, teacher)
    # ETC's loss weights (TL 0.1, multi-frame KD 1.0); benchmarks/reports/demo_synthetic/ records the demo's figures
    times["train_student"] = time.perf_counter() - t

    t = _step(4, n, "export the student to ONNX (onnxsim, parity check with onnxruntime)")
    onnx_path = out / "student.onnx"
    res = export_checkpoint(student, onnx_path, ExportPreset(parity_frames=str(synth), exporter=cfg.exporter))
    typer.echo(f"  {onnx_path}: {res.summary['nodes']} nodes, parity {res.parity.describe()}")
    times["export"] = time.perf_counter() - t

    t = _step(5, n, f"calibrate INT8 for onnxruntime on {cfg.calib_frames} train frames, accuracy gate on val")
    int8 = out / "student.int8.qdq.onnx"
    calib_cfg = CalibConfig(target="ort", method="percentile", reduce_range=True, num_frames=cfg.calib_frames,
                            eval_frames=16)  # calib/ort_cpu.yaml's settings, fewer frames
    man = calibrate(onnx_path, synth, int8, calib_cfg,
                    log=lambda m: typer.echo(f"  {m}"))
    gate = (man.get("gate") or {}).get("result") or {}
    typer.echo(f"  {int8}: gate {'passed' if gate.get('passed') else 'not run' if not gate else 'FAILED'}")
    times["calibrate"] = time.perf_counter() - t

    t = _step(6, n, "run the INT8 model over a val sequence, writing an overlay video")
    val_city = sorted(p for p in (synth / "leftImg8bit_sequence" / "val").iterdir() if p.is_dir())[0]
    run_model(int8, source=str(val_city), save=out / "overlay.mp4")
    times["run"] = time.perf_counter() - t

    t = _step(7, n, "benchmark: torch FP32, onnxruntime FP32 and INT8 — FPS, mIoU, TC")
    report, files = benchmark([student, onnx_path, int8], synth, out / "report", runs=cfg.bench_runs,
                              warmup=2, frames=8, backends=("ort", "torch"))
    times["bench"] = time.perf_counter() - t
    typer.secho(f"\nreport: {files['markdown']}   overlay: {out / 'overlay.mp4'}", bold=True)
    typer.echo("  ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    return {"times": times, "report": files, "student": student, "onnx": onnx_path, "int8": int8}


def register(app, data_app) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Folder for every artifact of the demo."),
        student_iterations: int = typer.Option(DemoConfig.student_iterations, "--iterations",
                                               help="Student training steps."),
        teacher_iterations: int = typer.Option(DemoConfig.teacher_iterations, "--teacher-iterations"),
        train_sequences: int = typer.Option(DemoConfig.train_sequences, "--train-sequences"),
    ):
        """The whole job on the synthetic set: synth → train (TL+KD) → export → INT8 → run → report."""
        run_demo(DemoConfig(out=out, student_iterations=student_iterations, teacher_iterations=teacher_iterations,
                            train_sequences=train_sequences))
