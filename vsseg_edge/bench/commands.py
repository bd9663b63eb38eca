"""CLI commands of this room (registered by vsseg_edge.cli); heavy imports stay inside the commands."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer


def register(app, data_app) -> None:
    """Adds `vsseg-edge bench`."""
    app.command("bench")(bench_command)


def bench_command(
    models: List[Path] = typer.Argument(
        ...,
        help="Artifacts to benchmark: .onnx (FP32 or Q/DQ INT8, onnxruntime), "
        ".pt (vsseg-edge checkpoint, torch) or a zoo name, "
        ".engine (TensorRT); "
        "FILE::key=value,… adds backend options (e.g. "
        "m.int8.qdq.onnx::shift_int8=false). With --compare: two "
        "report.json files A B.",
    ),
    dataset: Optional[Path] = typer.Option(
        None,
        "--dataset",
        show_default="none; required unless --compare",
        help="Dataset root (synthetic, Cityscapes, CamVid …), a folder of images, a video file or a folder of clips.",
    ),
    split: str = typer.Option("val", "--split", help="Split to time and evaluate."),
    kind: str = typer.Option("auto", "--kind", help="Dataset layout: auto|cityscapes|synthetic|camvid|images."),
    classes: Optional[str] = typer.Option(
        None,
        "--classes",
        show_default="the dataset's classes.yaml, else its layout's",
        help="Class file the dataset's labels are numbered in.",
    ),
    backends: str = typer.Option("ort,torch,trt", "--backends", help="Comma list of backends allowed to run."),
    out: Path = typer.Option(
        Path("reports/bench"), "--out", "-o", help="Report folder: report.json, report.md, PNG plots."
    ),
    runs: int = typer.Option(50, "--runs", help="Timed runs per latency figure."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed warm-up runs before each latency figure."),
    threads: Optional[int] = typer.Option(
        None, "--threads", show_default="each library's", help="CPU threads for onnxruntime and torch."
    ),
    frames: int = typer.Option(
        16, "--frames", help="Distinct frames (evenly spaced over the split) for timing and agreement."
    ),
    max_sequences: Optional[int] = typer.Option(
        None, "--max-sequences", show_default="all", min=1, help="Evaluate the first N sequences."
    ),
    flow: str = typer.Option("auto", "--flow", help="Flow for TC: auto|exact|dis|<folder of flow files>."),
    no_tc: bool = typer.Option(False, "--no-tc", help="Skip temporal consistency."),
    reference: Optional[Path] = typer.Option(
        None,
        "--reference",
        show_default="the nearest FP32 of the same lineage",
        help="FP32 artifact the agreement is measured against (none if no FP32 entry shares the lineage).",
    ),
    device: Optional[str] = typer.Option(
        None, "--device", show_default="cuda if available", help="torch backend device."
    ),
    repeats: int = typer.Option(
        1,
        "--repeats",
        help="Timing rounds over all entries (entries back to back in each "
        "round); speed vs the reference is the median paired ratio.",
    ),
    isolate: bool = typer.Option(False, "--isolate", help="Time each entry of each round in a process of its own."),
    speed_only: bool = typer.Option(
        False, "--speed-only", help="Latency and agreement only: no mIoU / TC pass over the split."
    ),
    compare: bool = typer.Option(False, "--compare", help="Compare two reports: `bench --compare A.json B.json`."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the report already in --out (its plots too)."),
):
    """Benchmark artifacts: latency (compute-only and end-to-end), FPS, mIoU, TC and INT8 agreement → a report."""
    from ..core.errors import VssegError

    if compare:
        if len(models) != 2:
            raise VssegError(f"--compare: expected two report.json files A B, got {len(models)}")
        return compare_command(models[0], models[1])
    if dataset is None:
        raise VssegError("--dataset: required (the dataset root to time and evaluate on)")
    from ..zoo import resolve
    from .report import write_report
    from .runner import BenchConfig, run_bench

    models = [resolve(m) for m in models]

    cfg = BenchConfig(
        dataset=dataset,
        split=split,
        kind=kind,
        backends=tuple(b.strip() for b in backends.split(",") if b.strip()),
        runs=runs,
        warmup=warmup,
        threads=threads,
        frames=frames,
        max_sequences=max_sequences,
        flow=flow,
        tc=not no_tc,
        reference=reference,
        device=device,
        classes=classes,
        repeats=repeats,
        isolate=isolate,
        accuracy=not speed_only,
    )
    files_in = [Path(str(m).split("::")[0]) for m in models]  # FILE::options names FILE
    check_report_folder(out, overwrite, inputs=[*files_in, dataset, reference])
    verify_manifests([*files_in, *([reference] if reference else [])])
    report = run_bench(models, cfg)
    require_an_entry(report)
    report["command"] = shlex.join(["vsseg-edge", *sys.argv[1:]])
    clear_report(out)
    files = write_report(report, out)
    _print_table(report)
    typer.echo(f"wrote {files['markdown']} and {files['json']} ({len(files) - 2} plots)")


REPORT_BYTES = 512 << 10  # a report's JSON, Markdown and three PNG plots, with room to spare


def report_files(out: Path) -> list[Path]:
    """The files a report writes into its folder (JSON, Markdown, every plot)."""
    from .plots import PLOT_FILES
    from .report import JSON_NAME, MD_NAME

    return [out / JSON_NAME, out / MD_NAME, *(out / name for name in PLOT_FILES.values())]


def check_report_folder(out: Path, overwrite: bool, inputs) -> None:
    """Before benchmarking: --out must be a writable folder with room for a report, and hold no report unless
    --overwrite (a report written over another keeps the old one's plots that the new one does not make)."""
    from ..core.errors import VssegError
    from ..core.fileio import check_output

    check_output(out, "--out", folder=True, need_bytes=REPORT_BYTES, inputs=inputs)
    existing = [p.name for p in report_files(out) if p.exists()]
    if existing and not overwrite:
        raise VssegError(
            f"--out {out}: already holds a report ({', '.join(existing)}); pass --overwrite to "
            "replace it, or choose a new folder"
        )


def clear_report(out: Path) -> None:
    """Remove the previous report's files, so no stale plot outlives the report that made it."""
    for p in report_files(out):
        p.unlink(missing_ok=True)


def verify_manifests(models) -> None:
    """Every artifact with a manifest must match it (sha256) before any benchmarking: lineage cannot be spoofed."""
    from ..core.manifest import manifest_path, read_manifest

    for m in models:
        if Path(m).is_file() and manifest_path(m).is_file():
            read_manifest(m, verify=True)


def require_an_entry(report: dict) -> None:
    """A benchmark in which no entry ran is a failure (exit 2 with every entry's reason), not an empty report."""
    from ..core.errors import VssegError

    entries = report["entries"]
    if entries and not any(e["status"] == "ok" for e in entries):
        why = "; ".join(f"{e['id']} {e['status']}: {e['reason']}" for e in entries)
        raise VssegError(f"bench: no entry ran ({why})")


def compare_command(a: Path, b: Path) -> None:
    from .compare import compare_reports, format_comparison, load_report

    typer.echo(format_comparison(compare_reports(load_report(a), load_report(b)), str(a), str(b)))


def _print_table(report: dict) -> None:
    """A compact terminal table (the Markdown report has every column)."""
    from rich.console import Console
    from rich.table import Table

    from .report import HEADER, table_rows

    keep = ["entry", "e2e p50 ms", "e2e FPS", "compute p50 ms", "mIoU %", "TC %", "agreement %", "note"]
    idx = [HEADER.index(h) for h in keep]
    table = Table(title=f"bench: {report['dataset']['name']} {report['dataset']['split']}")
    for h in keep:
        table.add_column(h, justify="left" if h in ("entry", "note") else "right", overflow="fold")
    for row in table_rows(report):
        table.add_row(*[row[i] for i in idx])
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
    from .report import not_run_lines

    for line in not_run_lines(report):
        console.print(f"not run {line[2:]}", markup=False, highlight=False)
