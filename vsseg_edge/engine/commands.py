"""`vsseg-edge build-engine model.onnx --fp16 | --int8 …`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _batch(text: Optional[str]):
    if text is None:
        return None
    from ..core.errors import VssegError

    try:
        lo, opt, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise VssegError(f"--batch {text!r}: expected MIN,OPT,MAX, e.g. 1,4,8") from None
    return (lo, opt, hi)


def default_engine_path(model: Path, precision: str) -> Path:
    """MODEL.<precision>.engine beside the ONNX, without repeating what the name says: m.onnx → m.fp16.engine,
    m.int8.qdq.onnx → m.int8.engine (the Q/DQ stage is the ONNX's, not the engine's)."""
    stem = model.name.removesuffix(".onnx").removesuffix(".qdq")
    if not stem.endswith(f".{precision}"):
        stem += f".{precision}"
    return model.with_name(f"{stem}.engine")


def register(app, data_app) -> None:
    @app.command("build-engine")
    def build_engine_command(
        model: Path = typer.Argument(
            ..., help="FP32 ONNX (vsseg-edge export) or Q/DQ INT8 ONNX (vsseg-edge calibrate)."
        ),
        fp16: bool = typer.Option(False, "--fp16", help="FP16 engine (TRT 11: via an FP16 ONNX, strongly typed)."),
        int8: bool = typer.Option(
            False, "--int8", help="INT8 engine: from a Q/DQ ONNX, or --calib-frames on TRT 8.6/10."
        ),
        out: Optional[Path] = typer.Option(
            None,
            "--out",
            "-o",
            show_default="MODEL.<precision>.engine",
            help="Engine path (m.onnx → m.fp16.engine; m.int8.qdq.onnx → m.int8.engine).",
        ),
        workspace: int = typer.Option(2048, "--workspace", help="Builder workspace in MiB."),
        timing_cache: Optional[Path] = typer.Option(
            None, "--timing-cache", show_default="off", help="Timing cache file to load and update."
        ),
        dla_core: Optional[int] = typer.Option(
            None, "--dla-core", show_default="off (GPU)", help="Jetson DLA core (GPU fallback allowed)."
        ),
        batch: Optional[str] = typer.Option(
            None, "--batch", show_default="the ONNX's", help="MIN,OPT,MAX for a dynamic-batch ONNX."
        ),
        calib_frames: Optional[str] = typer.Option(
            None,
            "--calib-frames",
            show_default="off",
            help="Frames for the legacy implicit-INT8 calibrator (TRT 8.6/10).",
        ),
        strongly_typed: bool = typer.Option(
            False, "--strongly-typed", help="Strongly typed build on TRT 10.x (TRT 11 is always strongly typed)."
        ),
        cache_dir: Optional[Path] = typer.Option(
            None, "--cache-dir", show_default="off", help="Engine cache keyed by ONNX/TRT/GPU/settings."
        ),
        device: int = typer.Option(0, "--device", help="CUDA device index."),
        explain: bool = typer.Option(False, "--explain", help="Print what the build would do and exit (needs no GPU)."),
        for_trt: Optional[str] = typer.Option(
            None,
            "--for-trt",
            show_default="the installed TensorRT",
            help="With --explain: plan for this TensorRT version (e.g. 8.6, 10.3, 11.0).",
        ),
    ):
        """Build an FP16 or INT8 TensorRT engine (TensorRT 8.6 / 10 / 11) with a manifest; refuse foreign engines."""
        from ..core.errors import VssegError
        from .policy import BuildSettings

        if fp16 and int8:
            raise VssegError("--fp16 and --int8 exclude each other (an INT8 build keeps FP16 for unquantised layers)")
        precision = "int8" if int8 else "fp16" if fp16 else "fp32"
        settings = BuildSettings(
            precision=precision,
            workspace_mib=workspace,
            timing_cache=str(timing_cache) if timing_cache else None,
            dla_core=dla_core,
            batch=_batch(batch),
            strongly_typed=strongly_typed or None,
        )
        if explain:
            _explain(model, settings, for_trt, bool(calib_frames))
            return
        from ..core.fileio import check_output
        from .builder import build_engine

        target = out or default_engine_path(model, precision)
        # before TensorRT is loaded and the build starts: a path `run` accepts, writable, not an input
        check_output(target, "--out", suffixes=(".engine", ".plan"), inputs=[model, timing_cache])
        man = build_engine(
            model, target, settings, calib_frames=calib_frames, cache_dir=cache_dir, device=device, log=typer.echo
        )
        typer.echo(
            f"engine: {target} (TensorRT {man['tensorrt']['version']}, {man['tensorrt']['gpu']['name']}, {precision})"
        )


def _explain(model: Path, settings, for_trt: Optional[str], has_frames: bool) -> None:
    import json

    from ..core.manifest import read_manifest
    from .builder import check_shapes, import_tensorrt
    from .policy import plan_build

    man = read_manifest(model, kind=("onnx", "qdq_onnx"), verify=True)
    check_shapes(model, settings)
    version = for_trt or import_tensorrt().__version__
    plan = plan_build(settings, version, man["kind"], has_calibration_frames=has_frames)
    typer.echo(
        json.dumps(
            {"onnx": str(model), "onnx_kind": man["kind"], "settings": settings.to_dict(), "plan": plan.to_dict()},
            indent=2,
        )
    )
