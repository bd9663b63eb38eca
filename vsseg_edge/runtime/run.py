"""`run_model`: open sinks, a backend and a source, run the pipeline and print its summary.

The library form of `vsseg-edge run` (the demo and the benchmark drivers call it; the CLI command parses
flags into it). Sinks are built before the model and the source are opened, so a bad output flag fails at
once, and a failure before the run closes them without leaving a partial video.
"""

from __future__ import annotations

from pathlib import Path

import typer


MAX_SIDE = 8192  # pixels: beyond 8K video a model input is a typo, and OpenCV would run out of memory


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'512x1024' (HxW) → (512, 1024); a one-line error otherwise (each side 1 … MAX_SIDE)."""
    if text is None:
        return None
    from ..core.errors import VssegError

    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and 0 < int(p) <= MAX_SIDE for p in parts):
        raise VssegError(f"--size {text}: expected HxW in pixels, each side 1 to {MAX_SIDE}, e.g. 512x1024")
    return int(parts[0]), int(parts[1])


def check_outputs(model: Path, source: str | None, *, save: Path | None, save_masks: Path | None,
                  stats: Path | None) -> None:
    """No output may be an input: the model (or its manifest), the source file or folder, or another output."""
    from ..core.errors import VssegError
    from ..core.fileio import refuse_output_over_inputs, same_file

    inputs = [model]
    if source is not None and "://" not in source and Path(source).exists():
        inputs.append(Path(source))
    outputs = [(f, p) for f, p in (("--save", save), ("--save-masks", save_masks), ("--stats", stats)) if p]
    refuse_output_over_inputs(outputs, inputs)
    for i, (fa, a) in enumerate(outputs):
        for fb, b in outputs[i + 1:]:
            if same_file(a, b):
                raise VssegError(f"{fb} {b}: is also {fa}; give each output its own path")


def build_sinks(*, show: bool, save: Path | None, save_masks: Path | None) -> list:
    """The sinks the flags ask for (the null sink when none); each refuses a bad flag in one line.

    Built before the model and the source are opened, so `--show` without a display fails at once. A
    video's frame rate is settled when the run starts (`VideoSink.start`): the file's own, or measured
    for a live source.
    """
    from .sinks import MaskSink, NullSink, VideoSink, WindowSink

    sinks = []
    try:
        if show:
            sinks.append(WindowSink())
        if save is not None:
            sinks.append(VideoSink(save))
        if save_masks is not None:
            sinks.append(MaskSink(save_masks))
    except BaseException:
        _close(sinks)
        raise
    return sinks or [NullSink()]


def _close(sinks: list) -> None:
    for sink in sinks:
        sink.close()


def backend_options(name: str, *, threads: int, fp16: bool | None, cuda_graph: bool) -> dict:
    """The options of `open_backend` for this backend; a flag that does not apply is a one-line error."""
    from ..core.errors import VssegError

    if name != "torch" and (fp16 is not None or cuda_graph):
        flag = "--cuda-graph" if cuda_graph else ("--fp16" if fp16 else "--fp32")
        raise VssegError(f"{flag}: only the torch backend (a .pt checkpoint) takes this option; an ONNX or "
                         "engine runs in the precision it was exported or built with")
    if name == "ort":
        return {"threads": threads}
    if name == "torch":
        return {"fp16": fp16, "cuda_graph": cuda_graph}
    return {}


def run_model(model: Path, *, camera: int | None = None, source: str | None = None, csi: bool = False,
              backend: str | None = None, show: bool = False, save: Path | None = None,
              save_masks: Path | None = None, size: str | None = None, alpha: float = 0.5,
              max_frames: int | None = None, stats: Path | None = None, threads: int = 0,
              fp16: bool | None = None, cuda_graph: bool = False, preprocess: str = "auto"):
    """Open sinks, backend and source, run the pipeline, print the p50/p99 table; return the RunResult."""
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
    if threads < 0:
        raise VssegError(f"--threads {threads}: expected 0 (onnxruntime's default) or a positive number")
    if preprocess not in ("auto", "host", "device"):
        raise VssegError(f"--preprocess {preprocess}: expected auto, host or device")
    check_outputs(model, source, save=save, save_masks=save_masks, stats=stats)
    hw = parse_size(size)
    options = backend_options(backend or infer_backend_name(model), threads=threads, fp16=fp16,
                              cuda_graph=cuda_graph)
    sinks = build_sinks(show=show, save=save, save_masks=save_masks)
    try:
        with open_backend(model, backend, **options) as be:
            if hw is not None:
                be.check_spec(be.preprocess_spec.replace(height=hw[0], width=hw[1]))
            src = open_source(source, camera=camera, csi=csi)
            pipeline = Pipeline(src, be, sinks, alpha=alpha, max_frames=max_frames,
                                stats_path=str(stats) if stats else None, preprocess=preprocess)
            typer.echo(f"{be.describe()}, {pipeline.stage.kind} stage ← {src.description}", err=True)
            result = pipeline.run()
    except BaseException:
        _close(sinks)  # a failure before the run (model, source): the window goes, no partial video
        raise
    typer.echo(format_summary(result.summary), err=True)
    if result.frames == 0 and result.stopped_by in ("end", "error"):
        raise VssegError(f"{src.description}: no frame was segmented"
                         + (f" ({result.error})" if result.error else " (the source gave no readable frame)"))
    return result
