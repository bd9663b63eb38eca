"""`vsseg-edge train RECIPE.yaml [--override key=value …] [--resume]`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app, data_app) -> None:
    @app.command()
    def train(
        recipe: Path = typer.Argument(..., help="Training recipe YAML (see train/*.yaml)."),
        override: Optional[List[str]] = typer.Option(None, "--override", "-o",
                                                     help="key=value, e.g. -o iterations=200 -o optim.lr=0.005"),
        resume: bool = typer.Option(False, "--resume", help="Continue from <out_dir>/<name>/last.pt exactly."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Start again in a run folder that holds a "
                                                                  "previous run (its model, checkpoints and log go)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    ):
        """Train a student (baseline, +temporal loss, +distillation) from a recipe; writes model.pt + manifest."""
        from .config import load_recipe
        from .trainer import train as run_training

        cfg = load_recipe(recipe, override)
        if resume and overwrite:
            from ..core.errors import VssegError

            raise VssegError("--resume and --overwrite exclude each other (continue the run, or start it again)")
        metrics = run_training(cfg, resume=resume, progress=progress, overwrite=overwrite)
        if metrics:
            shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in metrics.items()}
            typer.echo(f"done: {cfg.out_path / 'model.pt'}  {shown}")
