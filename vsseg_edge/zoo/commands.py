"""CLI commands of this room (registered by vsseg_edge.cli): `vsseg-edge models`, `vsseg-edge import-weights`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def models_command(
    as_json: bool = typer.Option(False, "--json", help="Print every entry with all its figures as JSON."),
):
    """List the zoo's pretrained models (name, classes, input, source, licence, measured mIoU/TC) and the
    architectures that can be trained."""
    import json

    from . import describe, entries

    zoo = list(entries().values())
    archs = _architectures()
    if as_json:
        typer.echo(json.dumps({"zoo": [describe(e) for e in zoo], "architectures": archs}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="vsseg-edge model zoo (use a name wherever a model path is accepted)")
    for col in ("name", "classes", "input HxW", "mIoU %", "TC %", "source", "licence"):
        table.add_column(col, justify="right" if col in ("mIoU %", "TC %") else "left", overflow="fold")
    for e in zoo:
        table.add_row(
            e.name,
            f"{e.classes} ({e.num_classes})",
            f"{e.input_hw[0]}x{e.input_hw[1]}",
            _figure(e, "mIoU"),
            _figure(e, "TC"),
            e.source,
            e.licence,
        )
    console = Console() if Console().is_terminal else Console(width=160)
    console.print(table)
    for e in zoo:
        notes = [f"{m['metric']} {m['value']:.2f} on {m['on']}" for m in e.measured if m.get("value") is not None]
        if e.published:
            notes.append(f"published {e.published['metric']} {e.published['value']} on {e.published['on']}")
        console.print(
            f"{e.name}: {e.description}" + (f" [{'; '.join(notes)}]" if notes else ""), markup=False, highlight=False
        )
    console.print(
        "architectures: "
        + (", ".join(archs) if archs else "(install torch to train: pip install 'vsseg-edge[train]')"),
        markup=False,
        highlight=False,
    )


def _figure(entry, metric: str) -> str:
    m = entry.figure(metric)
    return "—" if m is None or m.get("value") is None else f"{m['value']:.1f}"


def _architectures() -> list[str]:
    """The registered architectures (they live in the torch room); empty without torch."""
    try:
        from ..models import list_models
    except ImportError:
        return []
    return list_models()


def import_weights_command(
    weights: Path = typer.Argument(
        ...,
        help="Plain state dict: a published ESPNet file, a whole model's weights, "
        "or (with --backbone) a torchvision-format ImageNet backbone.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (.pt; its manifest goes beside it)."),
    model: Optional[str] = typer.Option(
        None, "--model", show_default="espnet for ESPNet files", help="Architecture (vsseg-edge models lists them)."
    ),
    classes: Optional[str] = typer.Option(
        None, "--classes", show_default="from an ESPNet file's output width", help="Class set: cityscapes | camvid."
    ),
    preprocess: Optional[str] = typer.Option(
        None,
        "--preprocess",
        show_default="an ESPNet file's published one",
        help="espnet-cityscapes | espnet-camvid | imagenet | a YAML file.",
    ),
    size: Optional[str] = typer.Option(
        None, "--size", show_default="the preprocessing's", help="Input HxW stored with the preprocessing."
    ),
    backbone: bool = typer.Option(
        False,
        "--backbone",
        help="The file is an ImageNet backbone for --model; heads start random (a starting point to train).",
    ),
):
    """Turn a plain state dict into a vsseg-edge checkpoint with its manifest (architecture, classes, preprocessing)."""
    from ..core.config import parse_size
    from ..core.errors import VssegError

    if out.suffix != ".pt":
        raise VssegError(f"--out {out}: expected a .pt file (a vsseg-edge checkpoint)")
    from ..models.importing import import_weights, preprocess_preset

    hw = parse_size(size) if size else None
    if hw and not preprocess:
        raise VssegError(f"--size {size}: give --preprocess too (the size is part of a preprocessing)")
    spec = preprocess_preset(preprocess, hw) if preprocess else None
    info = import_weights(weights, out, model=model, classes=classes, preprocess=spec, backbone=backbone)
    p = info["preprocess"]
    typer.echo(
        f"wrote {info['out']}: {info['model']} {info['model_kwargs']}, {info['classes']} "
        f"({info['num_classes']} classes), {info['parameters']:,} parameters, input {p['height']}x{p['width']} "
        f"{p['channel_order']}; from {info['source']['kind']} {info['source']['file']}"
    )


def register(app, data_app) -> None:
    app.command("models")(models_command)
    app.command("import-weights")(import_weights_command)
