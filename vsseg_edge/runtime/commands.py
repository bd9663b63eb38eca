"""CLI commands of this room (registered by vsseg_edge.cli); heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


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
        fp16: Optional[bool] = typer.Option(None, "--fp16/--fp32",
                                            help="torch backend precision (default: FP16 on CUDA, FP32 on CPU)."),
        cuda_graph: bool = typer.Option(False, "--cuda-graph", help="torch backend: replay a CUDA graph (GPU only)."),
        preprocess: str = typer.Option("auto", "--preprocess",
                                       help="auto: on the GPU when the backend runs there | host | device."),
    ):
        """Segment every frame of a camera, video, image folder or stream (per-frame inference)."""
        from .run import run_model

        result = run_model(model, camera=camera, source=source, csi=csi, backend=backend, show=show, save=save,
                           save_masks=save_masks, size=size, alpha=alpha, max_frames=max_frames, stats=stats,
                           threads=threads, fp16=fp16, cuda_graph=cuda_graph, preprocess=preprocess)
        if result.error:
            typer.echo(f"error: {result.error}", err=True)
            raise typer.Exit(1)
        if result.stopped_by == "signal":
            from ..core.errors import Interrupted

            raise Interrupted(result.signal or 15, f"{result.frames} frames written")
