"""CLI commands of this room (registered by vsseg_edge.cli); heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _preset(name: str) -> str:
    """The built-in preset's value of a setting, shown as its default in --help (a --preset may change it)."""
    import dataclasses

    from .presets import ExportPreset  # dataclasses only

    return str({f.name: f.default for f in dataclasses.fields(ExportPreset)}[name]).lower()


def export_command(
    checkpoint: Path = typer.Argument(..., help="vsseg-edge checkpoint (.pt) or zoo name to export."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="ONNX file to write (its manifest goes beside it as <out>.json)."
    ),
    preset: Optional[Path] = typer.Option(
        None,
        "--preset",
        show_default="built-in settings",
        help="Export preset YAML (export/*.yaml); flags override it.",
    ),
    opset: Optional[int] = typer.Option(
        None, "--opset", show_default=_preset("opset"), help="ONNX opset, 17 or later."
    ),
    size: Optional[str] = typer.Option(
        None, "--size", show_default="the checkpoint's", help="Input size HxW, e.g. 512x1024."
    ),
    dynamic_batch: Optional[bool] = typer.Option(
        None,
        "--dynamic-batch/--static-batch",
        help="Dynamic batch dimension.",
        show_default="dynamic-batch" if _preset("dynamic_batch") == "true" else "static-batch",
    ),
    uint8_input: Optional[bool] = typer.Option(
        None,
        "--uint8-input/--float-input",
        help="uint8 NHWC input with the normalisation inside the graph.",
        show_default="uint8-input" if _preset("uint8_input") == "true" else "float-input",
    ),
    frame_size: Optional[str] = typer.Option(
        None,
        "--frame-size",
        show_default="off",
        help="Camera frame HxW the graph takes as it is (resize, channel "
        "order and normalisation in the graph; needs --uint8-input).",
    ),
    argmax: Optional[str] = typer.Option(
        None, "--argmax", show_default=_preset("argmax"), help="ArgMax in the graph: uint8 | int32 | none (logits)."
    ),
    simplify: Optional[bool] = typer.Option(
        None,
        "--simplify/--no-simplify",
        help="Simplify with onnxsim.",
        show_default="simplify" if _preset("simplify") == "true" else "no-simplify",
    ),
    exporter: Optional[str] = typer.Option(
        None, "--exporter", show_default=_preset("exporter"), help="dynamo | torchscript (legacy)."
    ),
    parity_frames: Optional[str] = typer.Option(
        None,
        "--parity-frames",
        show_default="synthetic smooth frames",
        help="Image folder or dataset root for the parity check.",
    ),
    target: Optional[str] = typer.Option(
        None,
        "--target",
        show_default="trt for a QAT checkpoint",
        help="QAT checkpoints only: INT8 Q/DQ for trt or ort (CPU).",
    ),
):
    """Export a checkpoint to ONE self-contained ONNX file, checked for parity with onnxruntime."""
    from ..core.config import parse_size
    from ..core.errors import VssegError
    from ..zoo import resolve
    from .presets import load_preset

    checkpoint = resolve(checkpoint)
    if checkpoint.is_dir() or not checkpoint.exists():
        raise VssegError(f"{checkpoint}: checkpoint not found (expected a vsseg-edge .pt file)")
    cfg = load_preset(
        preset,
        opset=opset,
        size=parse_size(size) if size else None,
        dynamic_batch=dynamic_batch,
        uint8_input=uint8_input,
        argmax=argmax,
        simplify=simplify,
        exporter=exporter,
        parity_frames=parity_frames,
        frame_size=parse_size(frame_size, "--frame-size") if frame_size else None,
    )
    from .onnx_export import export_checkpoint

    result = export_checkpoint(checkpoint, out, cfg, target=target)
    s, p, t = result.summary, result.parity, result.timings
    ins, outs = s["inputs"][0], s["outputs"][0]
    typer.echo(
        f"{result.path}: opset {s['opset']}, {s['nodes']} nodes, {s['parameters']:,} parameters; "
        f"{ins['name']} {ins['dtype']} {ins['shape']} → {outs['name']} {outs['dtype']} {outs['shape']}"
    )
    typer.echo(f"parity: {p.describe()}")
    typer.echo(
        f"time: {t['total_s']:.1f} s (export {t['export_s']:.1f} s, "
        f"simplify+check {t['simplify_check_s']:.1f} s, "
        f"parity {t['parity_s']:.1f} s); manifest {result.path.name}.json"
    )


def register(app, data_app) -> None:
    """`vsseg-edge export`."""
    app.command("export")(export_command)
