"""`vsseg-edge import MODEL --classes FILE [--size HxW] [--mean … --std … --bgr --scale … --uint8-input]`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def import_command(
    model: Path = typer.Argument(
        ..., help="An ONNX model (.onnx) or TensorRT engine (.engine/.plan) made outside vsseg-edge."
    ),
    classes: str = typer.Option(
        ...,
        "--classes",
        help="Class file (YAML/JSON/txt: names, colours) or cityscapes | camvid; one class per output channel.",
    ),
    size: Optional[str] = typer.Option(
        None, "--size", show_default="the model's", help="Input HxW; needed when the model's size is dynamic."
    ),
    mean: Optional[str] = typer.Option(
        None,
        "--mean",
        show_default="ImageNet's",
        help="Per-channel mean in pixel units 0-255, in the model's channel order.",
    ),
    std: Optional[str] = typer.Option(
        None, "--std", show_default="ImageNet's", help="Per-channel std in pixel units 0-255."
    ),
    bgr: bool = typer.Option(False, "--bgr", help="The model takes BGR channels (not RGB)."),
    scale: str = typer.Option("1", "--scale", help="Factor after (x - mean) / std, e.g. 1/255."),
    uint8_input: bool = typer.Option(
        False,
        "--uint8-input",
        help="Assert that the model takes raw uint8 pixels and normalises inside (read from the graph).",
    ),
    name: Optional[str] = typer.Option(
        None, "--name", show_default="the file name", help="Model name in the manifest."
    ),
    precision: str = typer.Option(
        "unknown", "--precision", help="Engines: fp32 | fp16 | int8 | unknown (a plan does not say)."
    ),
    device: int = typer.Option(0, "--device", help="Engines: the CUDA device that will run it."),
    force: bool = typer.Option(False, "--force", help="Replace an existing manifest."),
):
    """Bring your own model: check a foreign ONNX or engine, smoke-run it, write its manifest for run/bench/…."""
    from ..core.config import parse_size
    from ..core.errors import VssegError
    from .graph import parse_scale, parse_triplet

    common = dict(
        size=parse_size(size) if size is not None else None,
        mean=parse_triplet(mean, "--mean"),
        std=parse_triplet(std, "--std"),
        bgr=bgr,
        scale=parse_scale(scale),
        uint8_input=True if uint8_input else None,
        name=name,
        force=force,
        log=lambda s: typer.echo(s, err=True),
    )
    suffix = model.suffix.lower()
    if suffix == ".onnx":
        from .onnx_import import import_onnx

        man = import_onnx(model, classes, **common)
    elif suffix in (".engine", ".plan"):
        from .engine_import import import_engine

        man = import_engine(model, classes, precision=precision, device=device, **common)
    else:
        raise VssegError(f"{model}: expected an .onnx model or a TensorRT .engine/.plan")
    _summary(model, man)


def _summary(model: Path, man: dict) -> None:
    p = man["input"]["preprocess"]
    smoke = man["imported"].get("smoke_run", {})
    norm = "raw uint8 pixels" if p["dtype"] == "uint8" else f"mean {p['mean']} std {p['std']} scale {p['scale']:g}"
    typer.echo(
        f"{model}: {man['kind']}, input {p['height']}x{p['width']} {p['layout'].upper()} "
        f"{p['channel_order'].upper()} {p['dtype']} ({norm}), output {man['output']} "
        f"{smoke.get('output_shape')}, {len(man['classes'])} classes; smoke run {smoke.get('ms')} ms"
    )
    typer.echo(f"wrote {model.name}.json; now: vsseg-edge run {model} --source …")


def register(app, data_app) -> None:
    """`vsseg-edge import`."""
    app.command("import")(import_command)
