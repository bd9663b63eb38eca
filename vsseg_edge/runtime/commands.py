"""CLI commands of this room (registered by vsseg_edge.cli); heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'512x1024' (HxW) → (512, 1024); a one-line error otherwise."""
    if text is None:
        return None
    from ..core.errors import VssegError

    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise VssegError(f"--size {text}: expected HxW in pixels, e.g. 512x1024")
    return int(parts[0]), int(parts[1])


def build_sinks(*, show: bool, save: Path | None, save_masks: Path | None, fps: float | None) -> list:
    from .sinks import MaskSink, NullSink, VideoSink, WindowSink

    sinks = []
    if show:
        sinks.append(WindowSink())
    if save is not None:
        sinks.append(VideoSink(save, fps=fps))
    if save_masks is not None:
        sinks.append(MaskSink(save_masks))
    return sinks or [NullSink()]


def run_model(model: Path, *, camera: int | None = None, source: str | None = None, csi: bool = False,
              backend: str | None = None, show: bool = False, save: Path | None = None,
              save_masks: Path | None = None, size: str | None = None, alpha: float = 0.5,
              max_frames: int | None = None, stats: Path | None = None, threads: int = 0):
    """Open backend, source and sinks, run the pipeline, print the p50/p99 table; return the RunResult."""
    from ..core.errors import VssegError
    from .backends import infer_backend_name, open_backend
    from .pipeline import Pipeline
    from .sources import open_source
    from .stats import format_summary

    given = [flag for flag, v in (("--camera", camera), ("--source", source), ("--csi", csi or None)) if v is not None]
    if len(given) != 1:
        raise VssegError(f"run: give exactly one of --camera N, --source FILE|DIR|URL|PIPELINE or --csi"
                         f"{' (got ' + ' and '.join(given) + ')' if given else ''}")
    if not 0.0 <= alpha <= 1.0:
        raise VssegError(f"--alpha {alpha}: expected a value in [0, 1]")
    if max_frames is not None and max_frames < 1:
        raise VssegError(f"--max-frames {max_frames}: expected a positive number")
    hw = parse_size(size)
    options = {"threads": threads} if (backend or infer_backend_name(model)) == "ort" else {}
    with open_backend(model, backend, **options) as be:
        if hw is not None:
            be.check_spec(be.preprocess_spec.replace(height=hw[0], width=hw[1]))
        src = open_source(source, camera=camera, csi=csi)
        sinks = build_sinks(show=show, save=save, save_masks=save_masks, fps=src.fps)
        typer.echo(f"{be.describe()} ← {src.description}", err=True)
        result = Pipeline(src, be, sinks, alpha=alpha, max_frames=max_frames,
                          stats_path=str(stats) if stats else None).run()
    typer.echo(format_summary(result.summary), err=True)
    return result


def register(app, data_app) -> None:
    @app.command("run")
    def run(
        model: Path = typer.Argument(..., help="TensorRT engine (.engine/.plan), ONNX (.onnx) or checkpoint (.pt)."),
        camera: Optional[int] = typer.Option(None, "--camera", help="Camera index (V4L2), e.g. 0."),
        source: Optional[str] = typer.Option(None, "--source", help="Video, folder, rtsp:// URL, GStreamer pipeline."),
        csi: bool = typer.Option(False, "--csi", help="Jetson CSI camera (nvarguscamerasrc pipeline)."),
        backend: Optional[str] = typer.Option(None, "--backend", help="trt | ort | torch (default: from the file)."),
        show: bool = typer.Option(False, "--show", help="Window with colour overlay and FPS/latency HUD."),
        save: Optional[Path] = typer.Option(None, "--save", help="Write the overlay video (.mp4)."),
        save_masks: Optional[Path] = typer.Option(None, "--save-masks", help="Write per-frame label PNGs here."),
        size: Optional[str] = typer.Option(None, "--size", help="Model input HxW (size-free models only)."),
        alpha: float = typer.Option(0.5, "--alpha", help="Overlay opacity, 0..1."),
        max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after N frames."),
        stats: Optional[Path] = typer.Option(None, "--stats", help="Per-frame timings as JSONL."),
        threads: int = typer.Option(0, "--threads", help="onnxruntime intra-op threads (0: its default)."),
    ):
        """Segment every frame of a camera, video, image folder or stream (per-frame inference)."""
        result = run_model(model, camera=camera, source=source, csi=csi, backend=backend, show=show, save=save,
                           save_masks=save_masks, size=size, alpha=alpha, max_frames=max_frames, stats=stats,
                           threads=threads)
        if result.error:
            typer.echo(f"error: {result.error}", err=True)
            raise typer.Exit(1)
