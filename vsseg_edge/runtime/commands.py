"""CLI commands of this room (registered by vsseg_edge.cli); heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app, data_app) -> None:
    @app.command("run")
    def run(
        model: Path = typer.Argument(
            ...,
            help="TensorRT engine (.engine/.plan), ONNX (.onnx), checkpoint (.pt) or a zoo name (vsseg-edge models).",
        ),
        camera: Optional[int] = typer.Option(
            None, "--camera", show_default="none", help="Camera index (V4L2), e.g. 0."
        ),
        source: Optional[List[str]] = typer.Option(
            None,
            "--source",
            show_default="none",
            help="File, folder, glob ('frames/*.jpg'), csi://N, v4l2:///dev/videoN, /dev/videoN, rtsp://…, "
            "rtp://@:PORT, file://…, or a GStreamer pipeline; repeat it to run several sources in one "
            "process.",
        ),
        csi: bool = typer.Option(False, "--csi", help="Jetson CSI camera 0 (the same as --source csi://0)."),
        backend: Optional[str] = typer.Option(
            None, "--backend", show_default="from the file", help="trt | ort | torch."
        ),
        show: bool = typer.Option(False, "--show", help="Window with colour overlay and FPS/latency HUD."),
        save: Optional[str] = typer.Option(
            None,
            "--save",
            show_default="off",
            help="The overlay as H.264: a video file (.mp4/.mkv/.mov; .avi MJPEG), rtp://HOST:PORT or "
            "rtsp://HOST:PORT/PATH (published to an RTSP server).",
        ),
        save_masks: Optional[Path] = typer.Option(
            None, "--save-masks", show_default="off", help="Write per-frame mask PNGs here."
        ),
        mask_format: str = typer.Option(
            "ids",
            "--mask-format",
            help="ids (class ids) | color (class colours) | labelids (Cityscapes "
            "label ids for cityscapesScripts; Cityscapes models).",
        ),
        frame_json: Optional[str] = typer.Option(
            None,
            "--frame-json",
            show_default="off",
            help="Per-frame JSON lines (class pixel shares, timings); - for stdout.",
        ),
        classes: Optional[str] = typer.Option(
            None, "--classes", show_default="the model's", help="Class file (names, colours) replacing the model's own."
        ),
        input_width: Optional[int] = typer.Option(
            None, "--input-width", show_default="the source's", help="Capture width (cameras), or resize."
        ),
        input_height: Optional[int] = typer.Option(
            None, "--input-height", show_default="the source's", help="Capture height (cameras), or resize."
        ),
        input_rate: Optional[float] = typer.Option(
            None, "--input-rate", show_default="the camera's", help="Camera frame rate (CSI, V4L2)."
        ),
        input_flip: str = typer.Option(
            "none",
            "--input-flip",
            "--flip",
            help="none | counterclockwise | rotate-180 | clockwise | horizontal | "
            "vertical | upper-right-diagonal | upper-left-diagonal.",
        ),
        sensor_mode: Optional[int] = typer.Option(
            None, "--sensor-mode", show_default="the camera's", help="CSI camera sensor mode."
        ),
        input_codec: str = typer.Option("h264", "--input-codec", help="Codec of an rtp:// source."),
        bitrate: Optional[int] = typer.Option(
            None, "--bitrate", show_default="4000000", help="Bits/s of an rtp:// or rtsp:// --save stream."
        ),
        size: Optional[str] = typer.Option(
            None, "--size", show_default="the model's", help="Model input HxW (size-free models only)."
        ),
        alpha: float = typer.Option(0.5, "--alpha", help="Overlay opacity, 0..1."),
        max_frames: Optional[int] = typer.Option(None, "--max-frames", show_default="all", help="Stop after N frames."),
        stats: Optional[Path] = typer.Option(None, "--stats", show_default="off", help="Per-frame timings as JSONL."),
        threads: int = typer.Option(0, "--threads", help="onnxruntime intra-op threads (0: its default)."),
        fp16: Optional[bool] = typer.Option(
            None, "--fp16/--fp32", show_default="fp16 on CUDA, fp32 on CPU", help="torch backend precision."
        ),
        cuda_graph: bool = typer.Option(False, "--cuda-graph", help="torch backend: replay a CUDA graph (GPU only)."),
        preprocess: str = typer.Option(
            "auto", "--preprocess", help="auto: on the GPU when the backend runs there | host | device."
        ),
        max_batch: Optional[int] = typer.Option(
            None,
            "--max-batch",
            show_default="one frame per source",
            help="Several sources: frames per batch (at most what the model takes).",
        ),
    ):
        """Segment every frame of a camera, video, image folder or stream (per-frame inference).

        With several --source: one capture thread per source, their frames batched per step, per-source outputs
        (--save-masks OUT/<name>/, --save OUT/<name>.mp4, --stats OUT/<name>.jsonl + OUT/summary.json,
        --frame-json OUT/<name>.jsonl)."""
        from ..core.errors import VssegError
        from .uri import SourceOptions

        opts = SourceOptions(
            width=input_width,
            height=input_height,
            rate=input_rate,
            flip=input_flip,
            sensor_mode=sensor_mode,
            codec=input_codec,
        )
        common = dict(  # what one source and several share
            backend=backend,
            show=show,
            save=save,
            save_masks=save_masks,
            size=size,
            alpha=alpha,
            max_frames=max_frames,
            stats=stats,
            threads=threads,
            fp16=fp16,
            cuda_graph=cuda_graph,
            mask_format=mask_format,
            frame_json=frame_json,
            classes=classes,
            source_options=opts,
        )
        if source and len(source) > 1:
            from .multi_commands import run_sources

            if camera is not None or csi:
                raise VssegError("run: with several sources give each one as --source (a camera as --source 0)")
            if bitrate is not None:
                raise VssegError(
                    "--bitrate: sets an rtp:// or rtsp:// --save stream; with several sources --save names a "
                    "folder of MP4 files (one per source)"
                )
            if preprocess not in ("auto", "host"):
                raise VssegError(
                    f"--preprocess {preprocess}: a run of several sources preprocesses its batches on "
                    "the host (auto or host)"
                )
            result = run_sources(model, source, max_batch=max_batch, **common)
        else:
            from .run import run_model

            if max_batch is not None:
                raise VssegError(
                    "--max-batch: batches are formed across several --source; one source runs frame by frame"
                )
            result = run_model(
                model,
                camera=camera,
                source=source[0] if source else None,
                csi=csi,
                bitrate=bitrate,
                preprocess=preprocess,
                **common,
            )
        if result.error:
            typer.echo(f"error: {result.error}", err=True)
            raise typer.Exit(1)
        if result.stopped_by == "signal":
            from ..core.errors import Interrupted

            raise Interrupted(result.signal or 15, f"{result.frames} frames written")
