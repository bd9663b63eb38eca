"""`run_model`: open sinks, a backend and a source, run the pipeline and print its summary.

The library form of `vsseg-edge run` (the demo and the benchmark drivers call it; the CLI command parses
flags into it). Sinks are built before the model and the source are opened, so a bad output flag fails at
once, and a failure before the run closes them without leaving a partial video.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _local(path) -> Path | None:
    """A file path named by a source or output text (file:// optional), or None for a URL or a device."""
    if path is None:
        return None
    text = str(path)
    if text.lower().startswith("file://"):
        text = text[len("file://") :]
    return None if "://" in text or text.startswith("/dev/") or "!" in text else Path(text)


def check_outputs(
    model: Path,
    source: str | None,
    *,
    save: str | Path | None,
    save_masks: Path | None,
    stats: Path | None,
    frame_json: str | None = None,
) -> None:
    """No output may be an input: the model (or its manifest), the source file or folder (a glob's folders),
    or another output. Network outputs (rtp://, rtsp://) and stdout (`--frame-json -`) are not files."""
    import glob

    from ..core.errors import VssegError
    from ..core.fileio import refuse_output_over_inputs, same_file

    inputs = [model]
    src = _local(source)
    if src is not None and src.exists():
        inputs.append(src)
    elif src is not None and any(c in str(src) for c in "*?["):
        inputs += sorted({Path(f).parent for f in glob.glob(str(src), recursive=True)})
    outputs = [
        (f, p)
        for f, p in (
            ("--save", _local(save)),
            ("--save-masks", save_masks),
            ("--stats", stats),
            ("--frame-json", None if frame_json in (None, "-") else Path(frame_json)),
        )
        if p
    ]
    refuse_output_over_inputs(outputs, inputs)
    for i, (fa, a) in enumerate(outputs):
        for fb, b in outputs[i + 1 :]:
            if same_file(a, b):
                raise VssegError(f"{fb} {b}: is also {fa}; give each output its own path")


def build_sinks(
    *,
    show: bool,
    save: str | Path | None,
    save_masks: Path | None,
    mask_format: str = "ids",
    frame_json: str | None = None,
    bitrate: int | None = None,
) -> list:
    """The sinks the flags ask for (the null sink when none); each refuses a bad flag in one line.

    Built before the model and the source are opened, so `--show` without a display fails at once. A
    video's frame rate is settled when the run starts (`VideoSink.start`): the file's own, or measured
    for a live source. `--save` takes a file (file:// optional) or an rtp:// / rtsp:// stream.
    """
    from .sinks import MaskSink, NullSink, WindowSink

    sinks = []
    try:
        if show:
            sinks.append(WindowSink())
        if save is not None:
            sinks.append(save_sink(str(save), bitrate))
        if save_masks is not None:
            sinks.append(MaskSink(save_masks, mask_format))
        if frame_json is not None:
            from .frame_json import FrameJsonSink

            sinks.append(FrameJsonSink(frame_json))
    except BaseException:
        _close(sinks)
        raise
    return sinks or [NullSink()]


def save_sink(target: str, bitrate: int | None = None):
    """`--save`: an rtp:// or rtsp:// stream (H.264 through PyAV), else a video file (file:// optional)."""
    from .sinks import VideoSink

    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    if scheme in ("rtp", "rtsp"):
        from .av_output import DEFAULT_BITRATE, StreamSink

        return StreamSink(target, bitrate or DEFAULT_BITRATE)
    if scheme not in ("", "file"):
        from ..core.errors import VssegError

        raise VssegError(
            f"--save {target}: expected a video file (.mp4, .mkv, .mov, .avi), rtp://HOST:PORT or rtsp://HOST:PORT/PATH"
        )
    return VideoSink(target[len("file://") :] if scheme == "file" else target)


def bind_sinks(sinks: list, label_set) -> None:
    """Give the model's classes to the sinks that write them (colour masks, label ids, per-frame JSON)."""
    for sink in sinks:
        if hasattr(sink, "bind"):
            sink.bind(label_set)


def _close(sinks: list) -> None:
    for sink in sinks:
        sink.close()


def backend_options(name: str, *, threads: int, fp16: bool | None, cuda_graph: bool) -> dict:
    """The options of `open_backend` for this backend; a flag that does not apply is a one-line error."""
    from ..core.errors import VssegError

    if name != "torch" and (fp16 is not None or cuda_graph):
        flag = "--cuda-graph" if cuda_graph else ("--fp16" if fp16 else "--fp32")
        raise VssegError(
            f"{flag}: only the torch backend (a .pt checkpoint) takes this option; an ONNX or "
            "engine runs in the precision it was exported or built with"
        )
    if name == "ort":
        return {"threads": threads}
    if name == "torch":
        return {"fp16": fp16, "cuda_graph": cuda_graph}
    return {}


def open_run_backend(
    model: Path,
    backend: str | None,
    options: dict,
    hw: tuple[int, int] | None,
    label_set=None,
    classes_flag: str | None = None,
):
    """`open_backend` with run's overrides: `--size` (size-free models) and `--classes` (a class file's names and
    colours over the model's, as many classes as it predicts); the backend is closed if an override is refused."""
    from ..core.classes import check_model_classes
    from .backends import open_backend

    be = open_backend(model, backend, **options)
    try:
        if hw is not None:
            be.check_spec(be.preprocess_spec.replace(height=hw[0], width=hw[1]))
        if label_set is not None:
            check_model_classes(label_set, be.classes, f"--classes {classes_flag}")
            be.classes, be.palette = list(label_set.classes), label_set.palette_list()
    except BaseException:
        be.close()
        raise
    return be


def run_model(
    model: Path,
    *,
    camera: int | None = None,
    source: str | None = None,
    csi: bool = False,
    backend: str | None = None,
    show: bool = False,
    save: str | Path | None = None,
    save_masks: Path | None = None,
    size: str | None = None,
    alpha: float = 0.5,
    max_frames: int | None = None,
    stats: Path | None = None,
    threads: int = 0,
    fp16: bool | None = None,
    cuda_graph: bool = False,
    preprocess: str = "auto",
    mask_format: str = "ids",
    frame_json: str | None = None,
    classes: str | None = None,
    source_options=None,
    bitrate: int | None = None,
):
    """Open sinks, backend and source, run the pipeline, print the p50/p99 table; return the RunResult.

    `classes`: a class file whose names and colours replace the model's (as many classes as it predicts);
    `source_options`: jetson-utils' input options (`uri.SourceOptions`)."""
    from ..core.classes import resolve_classes
    from ..core.config import parse_size
    from ..core.errors import VssegError
    from ..zoo import resolve
    from .backends import infer_backend_name
    from .pipeline import Pipeline
    from .sources import open_source
    from .stats import format_summary

    model = resolve(model)  # a zoo name → its packaged checkpoint

    given = [flag for flag, v in (("--camera", camera), ("--source", source), ("--csi", csi or None)) if v is not None]
    if len(given) != 1:
        raise VssegError(
            f"run: give exactly one of --camera N, --source FILE|DIR|URL|PIPELINE or --csi"
            f"{' (got ' + ' and '.join(given) + ')' if given else ''}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise VssegError(f"--alpha {alpha}: expected a value in [0, 1]")
    if max_frames is not None and max_frames < 1:
        raise VssegError(f"--max-frames {max_frames}: expected a positive number")
    if threads < 0:
        raise VssegError(f"--threads {threads}: expected 0 (onnxruntime's default) or a positive number")
    if preprocess not in ("auto", "host", "device"):
        raise VssegError(f"--preprocess {preprocess}: expected auto, host or device")
    check_outputs(model, source, save=save, save_masks=save_masks, stats=stats, frame_json=frame_json)
    hw = parse_size(size) if size is not None else None
    options = backend_options(backend or infer_backend_name(model), threads=threads, fp16=fp16, cuda_graph=cuda_graph)
    label_set = resolve_classes(classes) if classes is not None else None
    sinks = build_sinks(
        show=show, save=save, save_masks=save_masks, mask_format=mask_format, frame_json=frame_json, bitrate=bitrate
    )
    try:
        with open_run_backend(model, backend, options, hw, label_set, classes) as be:
            bind_sinks(sinks, be.label_set)
            src = open_source(source, camera=camera, csi=csi, options=source_options)
            pipeline = Pipeline(
                src,
                be,
                sinks,
                alpha=alpha,
                max_frames=max_frames,
                stats_path=str(stats) if stats else None,
                preprocess=preprocess,
            )
            typer.echo(f"{be.describe()}, {pipeline.stage.kind} stage ← {src.description}", err=True)
            result = pipeline.run()
    except BaseException:
        _close(sinks)  # a failure before the run (model, source): the window goes, no partial video
        raise
    typer.echo(format_summary(result.summary), err=True)
    if result.frames == 0 and result.stopped_by in ("end", "error"):
        raise VssegError(
            f"{src.description}: no frame was segmented"
            + (f" ({result.error})" if result.error else " (the source gave no readable frame)")
        )
    return result
