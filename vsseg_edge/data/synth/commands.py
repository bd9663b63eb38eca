"""`vsseg-edge data synth`: render the synthetic street-scene set (registered by vsseg_edge.cli).

Only typer and the standard library are imported here; the generator (numpy, OpenCV) loads inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app, data_app) -> None:
    """Add `synth` to the `data` command group."""

    @data_app.command("synth")
    def synth(
        out: Path = typer.Option(
            ..., "--out", "-o", help="Output folder (created): Cityscapes layout, flow/, synth.json."
        ),
        train: int = typer.Option(16, "--train", help="Number of training sequences."),
        val: int = typer.Option(4, "--val", help="Number of validation sequences (unseen cities)."),
        frames: int = typer.Option(30, "--frames", help="Frames per sequence (>= 2), all labelled."),
        size: str = typer.Option("256x512", "--size", help="Frame size HxW."),
        seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives identical files."),
        workers: int = typer.Option(0, "--workers", help="Worker processes (0: one per CPU)."),
        clean: bool = typer.Option(False, "--clean", help="No per-frame nuisances (flicker, blur, noise, JPEG)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace the synthetic set already in --out."),
    ):
        """Render the synthetic street-scene video set: every frame labelled, exact optical flow."""
        import time

        from tqdm import tqdm

        from ...core.config import parse_size
        from ...core.errors import VssegError
        from .writer import generate

        height, width = parse_size(size, minimum=16)
        for flag, value, least in (
            ("--train", train, 0),
            ("--val", val, 0),
            ("--frames", frames, 2),
            ("--seed", seed, 0),
            ("--workers", workers, 0),
        ):
            if value < least:
                raise VssegError(f"{flag}: expected an integer >= {least}, got {value}")
        if out.exists() and not out.is_dir():
            raise VssegError(f"--out {out}: is an existing file; expected a folder (or a new path)")
        t0 = time.perf_counter()
        with tqdm(total=(train + val) * frames, unit="frame", desc="synth", leave=False) as bar:
            generate(
                out,
                num_train=train,
                num_val=val,
                frames=frames,
                height=height,
                width=width,
                seed=seed,
                workers=workers or None,
                nuisances=not clean,
                progress=bar.update,
                overwrite=overwrite,
            )
        typer.echo(
            f"wrote {train} train + {val} val sequences x {frames} frames ({height}x{width}) to {out} "
            f"in {time.perf_counter() - t0:.1f} s"
        )
