"""`vsseg-edge demo`: the whole pipeline on the embedded synthetic set, on a CPU, in minutes, then real streets.

    synthesise ─► train teacher ─► train student (temporal loss + KD) ─► export ONNX ─► calibrate INT8
               ─► run the INT8 model over a val sequence (overlay video) ─► benchmark report
    real footage: the zoo model before and after temporal fine-tuning (espnet-camvid, espnet-camvid-tc) on the
               shipped PandaSet street clip ─► side-by-side overlay video + the TC of both in the report

Each step calls the same code as its CLI command and leaves its artifact (with manifest) under OUT:

    OUT/synth/                 the dataset (Cityscapes layout, exact flow)
    OUT/train/<name>/model.pt  teacher and student checkpoints (+ metrics.jsonl, val_report.json)
    OUT/student.onnx           FP32 ONNX (parity-checked)          OUT/student.int8.qdq.onnx   INT8 (gated)
    OUT/overlay.mp4            the INT8 model's overlay on a val sequence
    OUT/report/                report.md (opens with the table and a plot), report.json, PNG plots
    OUT/real/                  masks of both zoo models on the real clip, side_by_side.mp4 (before | after),
                               real_footage.json (TC of both); report.md gets a "Real streets" section

The real clip is held out from the footage the `-tc` model was fine-tuned on; TC there uses OpenCV DIS flow
(cached in the user cache), nearest warp, out-of-frame pixels excluded, as `vsseg-edge eval` measures it.
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
    real_before: str = "espnet-camvid"  # zoo models compared on the shipped real clip ("" skips that step)
    real_after: str = "espnet-camvid-tc"
    real_clip: Path | None = None  # default: the shipped PandaSet clip (vsseg_edge.demo_data)


def _step(i: int, n: int, title: str) -> float:
    typer.secho(f"\n[{i}/{n}] {title}", bold=True)
    return time.perf_counter()


def _train(cfg: DemoConfig, name: str, model: str, iterations: int, loss: dict, teacher: Path | None) -> Path:
    from .core.config import from_dict
    from .train.config import TrainConfig
    from .train.trainer import train

    data = {
        "name": name,
        "classes": "cityscapes",
        "iterations": iterations,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "out_dir": str(cfg.out / "train"),
        "log_every": 5,
        "ckpt_every": 50,
        "val_max_sequences": cfg.val_sequences,
        "data": {"root": str(cfg.out / "synth"), "crop": list(cfg.crop), "scale_range": [0.5, 1.0], "workers": 1},
        "model": {"name": model},
        "preprocess": {"height": cfg.size[0], "width": cfg.size[1]},
        "loss": {"weights": loss},
        "teacher": {"checkpoint": str(teacher) if teacher else None},
    }
    # the demo's own run folders: a second demo into the same --out trains again
    metrics = train(from_dict(TrainConfig, data, f"demo {name}"), progress=True, overwrite=True)
    typer.echo(
        f"  {name}: mIoU {metrics['val_miou']:.1f}  TC {metrics.get('val_tc', float('nan')):.1f} "
        f"({metrics.get('tc_flow')})"
    )
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
    n, times = 8 if cfg.real_before else 7, {}
    t = _step(
        1,
        n,
        f"synthesise {cfg.train_sequences}+{cfg.val_sequences} sequences × {cfg.frames} frames "
        f"at {cfg.size[0]}x{cfg.size[1]}",
    )
    synth = out / "synth"
    if not (synth / "synth.json").is_file():
        from tqdm.auto import tqdm

        total = (cfg.train_sequences + cfg.val_sequences) * cfg.frames
        with tqdm(total=total, desc="synth", unit="frame") as bar:
            generate(
                synth,
                num_train=cfg.train_sequences,
                num_val=cfg.val_sequences,
                frames=cfg.frames,
                height=cfg.size[0],
                width=cfg.size[1],
                seed=cfg.seed,
                progress=bar.update,
                overwrite=True,
            )  # no synth.json: an interrupted earlier demo's partial set
    times["synth"] = time.perf_counter() - t

    t = _step(2, n, f"train the teacher ({cfg.teacher}, cross-entropy, {cfg.teacher_iterations} steps)")
    teacher = _train(cfg, "teacher", cfg.teacher, cfg.teacher_iterations, {"seg": 1.0, "aux": 0.4}, None)
    times["train_teacher"] = time.perf_counter() - t

    t = _step(3, n, f"train the student ({cfg.student}) with ETC's temporal loss and distillation")
    student = _train(
        cfg,
        "student",
        cfg.student,
        cfg.student_iterations,
        {"seg": 1.0, "aux": 0.4, "temporal": 0.1, "kd_pixel": 1.0, "kd_pairwise_frames": 1.0, "kd_multiframe": 1.0},
        teacher,
    )
    # ETC's loss weights (TL 0.1, multi-frame KD 1.0); benchmarks/reports/demo_synthetic/ records the demo's figures
    times["train_student"] = time.perf_counter() - t

    t = _step(4, n, "export the student to ONNX (onnxsim, parity check with onnxruntime)")
    onnx_path = out / "student.onnx"
    res = export_checkpoint(student, onnx_path, ExportPreset(parity_frames=str(synth), exporter=cfg.exporter))
    typer.echo(f"  {onnx_path}: {res.summary['nodes']} nodes, parity {res.parity.describe()}")
    times["export"] = time.perf_counter() - t

    t = _step(5, n, f"calibrate INT8 for onnxruntime on {cfg.calib_frames} train frames, accuracy gate on val")
    int8 = out / "student.int8.qdq.onnx"
    calib_cfg = CalibConfig(
        target="ort",
        method="percentile",
        percentile=99.999,
        integer_weights="uint8",
        num_frames=cfg.calib_frames,
        eval_frames=16,
    )  # calib/ort_cpu.yaml's settings, fewer frames
    man = calibrate(onnx_path, synth, int8, calib_cfg, log=lambda m: typer.echo(f"  {m}"))
    gate = (man.get("gate") or {}).get("result") or {}
    typer.echo(f"  {int8}: gate {'passed' if gate.get('passed') else 'not run' if not gate else 'FAILED'}")
    times["calibrate"] = time.perf_counter() - t

    t = _step(6, n, "run the INT8 model over a val sequence, writing an overlay video")
    val_city = sorted(p for p in (synth / "leftImg8bit_sequence" / "val").iterdir() if p.is_dir())[0]
    run_model(int8, source=str(val_city), save=out / "overlay.mp4")
    times["run"] = time.perf_counter() - t

    t = _step(7, n, "benchmark: torch FP32, onnxruntime FP32 and INT8 — FPS, mIoU, TC")
    report, files = benchmark(
        [student, onnx_path, int8],
        synth,
        out / "report",
        runs=cfg.bench_runs,
        warmup=2,
        frames=8,
        backends=("ort", "torch"),
    )
    times["bench"] = time.perf_counter() - t
    real = None
    if cfg.real_before:
        t = _step(8, n, f"real streets: {cfg.real_before} before and {cfg.real_after} after temporal fine-tuning")
        real = real_footage(out / "real", cfg.real_before, cfg.real_after, cfg.real_clip)
        _append_real_section(Path(files["markdown"]), real)
        typer.echo(
            f"  TC on {real['clip_name']}: {real['before']['model']} {real['before']['tc']:.1f} → "
            f"{real['after']['model']} {real['after']['tc']:.1f}   video: {real['video']}"
        )
        times["real"] = time.perf_counter() - t
    typer.secho(f"\nreport: {files['markdown']}   overlay: {out / 'overlay.mp4'}", bold=True)
    typer.echo("  ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    return {"times": times, "report": files, "student": student, "onnx": onnx_path, "int8": int8, "real": real}


def real_footage(out: Path, before: str, after: str, clip: Path | None = None) -> dict:
    """Run two models (zoo names or checkpoints) over a real clip, score the TC of each, write a side-by-side video.

    Both predictions go through the same `vsseg-edge run` code path as a user's (masks at the clip's size), TC
    through `evaluate_predictions` on the clip opened as the video dataset kind, in the models' own classes.
    """
    from .core.fileio import write_json
    from .core.labels import label_set_for
    from .data.datasets import open_dataset
    from .data.flow import open_flow_source
    from .demo_data import ATTRIBUTION, PANDASET_CLIP
    from .metrics.evaluate import PredictionDir, evaluate_predictions
    from .runtime.run import run_model

    clip = Path(clip) if clip is not None else PANDASET_CLIP
    result: dict = {
        "clip": str(clip),
        "clip_name": clip.stem,
        "attribution": ATTRIBUTION.read_text().strip().splitlines()[2] if clip == PANDASET_CLIP else None,
    }
    for side, model in (("before", before), ("after", after)):
        masks = out / side / "masks"
        run_model(Path(model), source=str(clip), save_masks=masks)
        classes = _model_classes(model)
        ds = open_dataset(clip, kind="video").with_label_set(label_set_for(classes))
        rep = evaluate_predictions(PredictionDir(masks, ds), ds, open_flow_source("dis", ds), progress=False)
        result[side] = {
            "model": model,
            "tc": rep["tc"],
            "pairs": rep["tc_detail"]["pairs"],
            "flow": rep["tc_detail"]["flow"],
            "per_class": rep["tc_detail"]["per_class"],
        }
    result["video"] = str(_side_by_side(clip, out, result, ds))
    write_json(out / "real_footage.json", result)
    return result


def _model_classes(model: str) -> list[str]:
    from .core.manifest import read_manifest
    from .zoo import resolve

    return read_manifest(resolve(model))["classes"]


def _side_by_side(clip: Path, out: Path, result: dict, ds) -> Path:
    """before | after overlays of every frame, captioned with each model's name and TC, as one mp4."""
    import cv2
    import numpy as np

    from .core.errors import VssegError
    from .core.fileio import atomic_path, read_label
    from .runtime.hud import bgr_lut, overlay

    target = out / "side_by_side.mp4"
    refs = ds.frames()
    fps = ds.clips[next(iter(ds.clips))].fps or 10.0
    writer, lut = None, bgr_lut(ds.label_set)
    with atomic_path(target) as tmp:
        try:
            for ref in refs:
                frame = ds.read_image(ref)
                panels = []
                for side in ("before", "after"):
                    labels = read_label(out / side / "masks" / f"{ref.image.stem}.png", expected_hw=frame.shape[:2])
                    panel = overlay(frame, labels, lut, 0.5)
                    text = f"{result[side]['model']}  TC {result[side]['tc']:.1f}"
                    cv2.putText(panel, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
                    panels.append(panel)
                image = np.hstack(panels)
                if writer is None:
                    writer = cv2.VideoWriter(
                        str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (image.shape[1], image.shape[0])
                    )
                    if not writer.isOpened():
                        raise VssegError(f"{target}: OpenCV cannot write an mp4v video here")
                writer.write(image)
        finally:
            if writer is not None:
                writer.release()
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise VssegError(f"{target}: the video was not written (disk full?)")
    return target


def _append_real_section(report_md: Path, real: dict) -> None:
    """Add the real-footage figures to the demo's report (rewritten atomically)."""
    from .core.fileio import atomic_write

    b, a = real["before"], real["after"]
    lines = [
        "",
        "## Real streets (zoo models, not the synthetic student)",
        "",
        f"Clip: `{real['clip_name']}` ({real['attribution'] or real['clip']}); held out from the footage the "
        f"`-tc` model was fine-tuned on. TC: {b['flow']}, nearest warp, {b['pairs']} consecutive pairs.",
        "",
        "| model | TC % |",
        "|---|---|",
        f"| {b['model']} (published weights) | {b['tc']:.2f} |",
        f"| {a['model']} (after temporal fine-tuning) | {a['tc']:.2f} |",
        "",
        f"Side-by-side overlay (before | after): `{Path(real['video']).name}` in `{Path(real['video']).parent}`.",
        "",
    ]
    text = report_md.read_text() + "\n".join(lines)
    with atomic_write(report_md, "w") as fh:
        fh.write(text)


def register(app, data_app) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Folder for every artifact of the demo."),
        student_iterations: int = typer.Option(
            DemoConfig.student_iterations, "--iterations", help="Student training steps."
        ),
        teacher_iterations: int = typer.Option(DemoConfig.teacher_iterations, "--teacher-iterations"),
        train_sequences: int = typer.Option(DemoConfig.train_sequences, "--train-sequences"),
        real: bool = typer.Option(
            True,
            "--real/--no-real",
            help="Also the zoo model before/after temporal fine-tuning on the shipped real street clip.",
        ),
    ):
        """The whole job on the synthetic set: synth → train (TL+KD) → export → INT8 → run → report; real streets."""
        run_demo(
            DemoConfig(
                out=out,
                student_iterations=student_iterations,
                teacher_iterations=teacher_iterations,
                train_sequences=train_sequences,
                real_before=DemoConfig.real_before if real else "",
            )
        )
