"""CLI commands of this room (registered by vsseg_edge.cli); heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _preset(name: str) -> str:
    """The built-in preset's value of a setting, shown as its default in --help (a --preset may change it)."""
    import dataclasses

    from .config import CalibConfig  # dataclasses only

    return str({f.name: f.default for f in dataclasses.fields(CalibConfig)}[name])


def _class_list(value: str | None) -> tuple[str, ...] | None:
    """--protect-classes 'sign symbol,pole' → ('sign symbol', 'pole'); 'none' → () (off); None when not given."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        from ..core.errors import VssegError

        raise VssegError(
            f"--protect-classes {value!r}: expected class names separated by commas, e.g. 'sign symbol,pole'"
        )
    return names


def register(app, data_app) -> None:
    """`vsseg-edge calibrate`."""
    app.command("calibrate")(calibrate_command)


def calibrate_command(
    model: Path = typer.Argument(
        ...,
        help="FP32 ONNX model with its manifest (model.onnx.json), or a zoo name (exported once into the user cache).",
    ),
    frames: Path = typer.Option(..., "--frames", help="Dataset root (train split is sampled), image folder or video."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output Q/DQ model, e.g. model.int8.qdq.onnx (+ .json manifest)."
    ),
    preset: Optional[Path] = typer.Option(
        None,
        "--preset",
        show_default="built-in settings",
        help="Calibration preset YAML (calib/*.yaml); flags override it.",
    ),
    target: Optional[str] = typer.Option(
        None, "--target", show_default=_preset("target"), help="trt (symmetric int8 for TensorRT) | ort (CPU)."
    ),
    method: Optional[str] = typer.Option(
        None, "--method", show_default=_preset("method"), help="entropy | percentile | minmax."
    ),
    num_frames: Optional[int] = typer.Option(
        None, "--num-frames", show_default=_preset("num_frames"), help="Calibration frames."
    ),
    seed: Optional[int] = typer.Option(None, "--seed", show_default=_preset("seed"), help="Seed of the frame sample."),
    quantizer: Optional[str] = typer.Option(
        None,
        "--quantizer",
        show_default=_preset("quantizer"),
        help="Who places the Q/DQ: auto (ModelOpt if installed) | modelopt | ort.",
    ),
    eval_frames_src: Optional[Path] = typer.Option(
        None, "--eval-frames", show_default="the dataset's val split", help="Held-out frames for the accuracy gate."
    ),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", show_default=_preset("threshold"), help="Max mIoU drop in points."
    ),
    tc_frames: Optional[Path] = typer.Option(
        None,
        "--tc-frames",
        show_default="the calibration clip's unused frames, or the eval split's sequences",
        help="Consecutive frames for the TC gate: a video, a folder of frames or of clips.",
    ),
    tc_threshold: Optional[float] = typer.Option(
        None, "--tc-threshold", show_default=_preset("tc_threshold"), help="Max TC drop in points."
    ),
    tc_confidence: Optional[float] = typer.Option(
        None,
        "--tc-confidence",
        show_default=_preset("tc_confidence"),
        help="Judge the TC drop's upper bound at this confidence (e.g. 0.9; bootstrap over the pairs), 0: the drop.",
    ),
    protect_classes: Optional[str] = typer.Option(
        None,
        "--protect-classes",
        show_default="the class set's thin classes (CamVid: sign symbol, pole; others: none)",
        help="Comma-separated class names (e.g. 'sign symbol,pole') whose pixels INT8 must not flip: the nodes "
        "that most flip them stay in float. 'none': off.",
    ),
    protect_frames: Optional[Path] = typer.Option(
        None,
        "--protect-frames",
        show_default="--frames",
        help="Frames the protected classes are ranked on (a dataset root: its train split; a folder or video).",
    ),
    no_gate: bool = typer.Option(False, "--no-gate", help="Skip the accuracy and TC gates (recorded in the manifest)."),
    keep_failed: bool = typer.Option(False, "--keep-failed", help="Write the model even if the gate fails."),
    override: Optional[list[str]] = typer.Option(
        None, "--override", show_default="none", help="key=value over the preset."
    ),
):
    """Calibrate an FP32 ONNX model on frames and write a gated INT8 Q/DQ ONNX with its manifest."""
    from ..zoo import onnx_for
    from .config import load_calib_config
    from .pipeline import calibrate

    model = onnx_for(model, log=lambda s: typer.echo(s, err=True))

    cfg = load_calib_config(
        preset,
        override,
        target=target,
        method=method,
        num_frames=num_frames,
        seed=seed,
        quantizer=quantizer,
        threshold=threshold,
        tc_threshold=tc_threshold,
        tc_confidence=tc_confidence,
        gate=False if no_gate else None,
        protect_classes=_class_list(protect_classes),
    )
    man = calibrate(
        model,
        frames,
        out,
        cfg,
        eval_source=eval_frames_src,
        keep_failed=keep_failed,
        log=lambda s: typer.echo(s, err=True),
        tc_source=tc_frames,
        protect_source=protect_frames,
    )
    gate = (man.get("gate") or {}).get("result")
    passed = (man.get("gate") or {}).get("passed")
    verdict = "gate skipped" if gate is None else ("gates passed" if passed else "gate FAILED (kept)")
    typer.echo(f"wrote {out} ({man['quantization']['quantizer']}; {verdict})")
