"""`vsseg-edge train RECIPE.yaml [--override key=value …] [-o OUT] [--resume]`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def register(app, data_app) -> None:
    @app.command()
    def train(
        recipe: Path = typer.Argument(..., help="Training recipe YAML (see train/*.yaml)."),
        override: Optional[List[str]] = typer.Option(
            None,
            "--override",
            show_default="none",
            help="key=value over the recipe, e.g. --override iterations=200 --override optim.lr=0.005",
        ),
        out: Optional[Path] = typer.Option(
            None,
            "--out",
            "-o",
            show_default="the recipe's out_dir",
            help="Output folder (the recipe's out_dir; runs go in OUT/<name>/).",
        ),
        resume: bool = typer.Option(False, "--resume", help="Continue from <out_dir>/<name>/last.pt exactly."),
        overwrite: bool = typer.Option(
            False,
            "--overwrite",
            help="Start again in a run folder that holds a previous run (its model, checkpoints and log go).",
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    ):
        """Train a student (baseline, +temporal loss, +distillation) from a recipe; writes model.pt + manifest."""
        from ..core.errors import VssegError
        from .config import load_recipe

        if out is not None and "=" in str(out):
            raise VssegError(
                f"-o/--out {out}: -o is the output folder in every command; recipe overrides are --override {out}"
            )
        overrides = list(override or []) + ([f"out_dir={json.dumps(str(out))}"] if out is not None else [])
        cfg = load_recipe(recipe, overrides)
        from .trainer import train as run_training

        if resume and overwrite:
            raise VssegError("--resume and --overwrite exclude each other (continue the run, or start it again)")
        metrics = run_training(cfg, resume=resume, progress=progress, overwrite=overwrite)
        if metrics:
            shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in metrics.items()}
            typer.echo(f"done: {cfg.out_path / 'model.pt'}  {shown}")
