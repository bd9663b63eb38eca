"""CLI commands of this room (registered by vsseg_edge.cli); heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app, data_app) -> None:
    """Adds `vsseg-edge eval`."""
    app.command("eval")(eval_command)


def eval_command(
    pred_dir: Path = typer.Argument(
        ...,
        help="Folder of predicted label PNGs (training ids), named like the images: "
        "<image stem>.png or, for Cityscapes, <prefix>_pred.png for "
        "<prefix>_leftImg8bit.png; flat or in subfolders.",
    ),
    dataset: Path = typer.Option(
        ...,
        "--dataset",
        help="Dataset root (Cityscapes, synthetic, CamVid), a folder of images, a video file or a folder of clips.",
    ),
    split: str = typer.Option("val", "--split", help="Split to evaluate."),
    kind: str = typer.Option("auto", "--kind", help="Dataset layout: auto|cityscapes|synthetic|camvid|images|video."),
    classes: Optional[str] = typer.Option(
        None,
        "--classes",
        show_default="the dataset's classes.yaml, else its layout's",
        help="Class set the labels and predictions are numbered in: cityscapes | camvid | a class file "
        "(unlabelled video: the model's).",
    ),
    flow: str = typer.Option(
        "auto",
        "--flow",
        help="Flow for TC: auto (exact on the synthetic set, else DIS), exact, dis, or a directory of flow files.",
    ),
    flow_cache: Optional[Path] = typer.Option(
        None,
        "--flow-cache",
        show_default="$VSSEG_EDGE_CACHE/flow, else ~/.cache/vsseg-edge/flow",
        help="DIS flow cache folder.",
    ),
    no_tc: bool = typer.Option(False, "--no-tc", help="Skip temporal consistency (mIoU only)."),
    tc_mode: str = typer.Option(
        "nearest", "--tc-mode", help="nearest or etc (the paper script's bilinear warp of class ids, for comparison)."
    ),
    occlusion: bool = typer.Option(
        False,
        "--occlusion",
        help="Also report tc_occ, TC with a forward-backward occlusion check (computes backward flow).",
    ),
    max_sequences: Optional[int] = typer.Option(
        None, "--max-sequences", show_default="all", min=1, help="Evaluate the first N sequences only."
    ),
    json_out: Optional[Path] = typer.Option(
        None, "--json", show_default="off", help="Write the full report as JSON (atomically)."
    ),
):
    """Score predicted label maps: mIoU on the labelled frames, TC over consecutive frames, per class."""
    from ..core.errors import VssegError
    from ..core.fileio import check_output, write_json
    from ..data.frame_source import open_frame_source
    from .evaluate import PredictionDir, evaluate_predictions
    from .tc import MODES

    if tc_mode not in MODES:
        raise VssegError(f"--tc-mode {tc_mode!r}: expected one of {list(MODES)}")
    if json_out is not None:
        # a .json name: a typo can then never replace a prediction PNG or an image of the dataset
        check_output(json_out, "--json", suffixes=(".json",), inputs=[pred_dir, dataset])
    ds = open_frame_source(dataset, split, kind, flag="--dataset", classes=classes)
    preds = PredictionDir(pred_dir, ds)
    preds.check_labelled(
        ds.labelled()
        if max_sequences is None
        else [r for refs in list(ds.sequences.values())[:max_sequences] for r in refs]
    )
    source = None
    if not no_tc:
        from ..data.flow import open_flow_source

        source = open_flow_source(flow, ds, cache_dir=flow_cache)
    report = evaluate_predictions(
        preds, ds, source, tc=not no_tc, max_sequences=max_sequences, tc_mode=tc_mode, occlusion=occlusion
    )
    report["predictions"] = str(pred_dir)
    print_report(report)
    if json_out is not None:
        write_json(json_out, report, flag="--json")
        typer.echo(f"wrote {json_out}")


def print_report(report: dict) -> None:
    """A rich table: IoU and TC per class, then mIoU / TC with the flow source and pair count."""
    from rich.console import Console
    from rich.table import Table

    from .evaluate import class_table

    ds = report["dataset"]
    table = Table(
        title=f"{ds['name']} {ds['split']}: {ds['labelled_frames']} labelled frames, {ds['sequences']} sequences"
    )
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    table.add_column("TC %", justify="right")
    for name, iou, tc in class_table(report):
        table.add_row(name, _fmt(iou), _fmt(tc))
    console = Console()
    console.print(table)
    miou = report.get("miou_detail")
    if miou:
        nan = (
            f" ({len(miou['nan_classes'])} classes absent, left out: {', '.join(miou['nan_classes'])})"
            if miou["nan_classes"]
            else ""
        )
        console.print(
            f"mIoU {_fmt(report['miou'])} over {miou['classes_in_mean']} classes{nan}; "
            f"pixel accuracy {_fmt(miou['pixel_accuracy'])}"
        )
    else:
        console.print("mIoU: no labelled frames")
    tc = report.get("tc_detail")
    if tc:
        occ = f", TC with occlusion check {_fmt(tc['tc_occ'])}" if tc["pairs_with_occlusion_check"] else ""
        skipped = tc["pairs_skipped_missing_prediction"]
        console.print(
            f"TC {_fmt(tc['tc'])}{occ} ({tc['mode']} warp, flow: {tc['flow']}, {tc['pairs']} pairs"
            + (f", {skipped} pairs skipped for missing predictions" if skipped else "")
            + ")"
        )
        if not tc["pairs"]:
            console.print(
                "[yellow]warning: no consecutive pair had both predictions; TC is undefined "
                "(predict every frame of the sequences, or pass --no-tc)[/yellow]"
            )


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.2f}"
