"""`vsseg-edge run MODEL --source A --source B …`: the outputs and flags of a multi-source run.

With several sources every per-source output is named after its source (`multi.source_names`: the file or
folder name, `camera0`, the stream's host and path; a name several sources share gets -1, -2 …):

    --save-masks OUT   OUT/<name>/<frame>.png
    --save OUT         OUT/<name>.mp4            (OUT is a folder here, not a video file name)
    --stats OUT        OUT/<name>.jsonl per frame, and OUT/summary.json (per-source FPS, drops, errors, batches)
    --frame-json OUT   OUT/<name>.jsonl (class pixel shares, timings)
    --show             one window per source, titled with its name

The name ↔ source table is printed when the run starts and written into summary.json. An output that would
land on an input (a mask folder that is a source's image folder, a video over a source file, the model) is
refused before anything is opened (`core.fileio.refuse_output_over_inputs`, as for one source).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import typer

from ..core.errors import VssegError

_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi")


def _input_paths(spec: str) -> list[Path]:
    """The local files/folders a --source reads (nothing for cameras, streams and pipelines)."""
    if spec.isdigit() or "!" in spec:
        return []
    if "://" in spec:
        url = urlsplit(spec)
        if url.scheme != "file":
            return []
        spec = url.path
    if any(ch in spec for ch in "*?["):  # a glob: the folders of the files it matches
        import glob

        return sorted({Path(f).resolve().parent for f in glob.glob(spec, recursive=True)})
    return [Path(spec).resolve()]


def _folders(save: str | Path | None, stats: Path | None, frame_json: str | None) -> tuple:
    """--save / --stats / --frame-json name folders here: refuse a stream, stdout or a file name in one line."""
    if save is not None:
        text = str(save)
        if "://" in text and not text.lower().startswith("file://"):
            raise VssegError(
                f"--save {text}: with several sources --save names a folder (OUT/<name>.mp4 per "
                "source); stream one source per process"
            )
        save = Path(text[len("file://") :] if text.lower().startswith("file://") else text)
    if frame_json is not None and str(frame_json) == "-":
        raise VssegError("--frame-json -: with several sources --frame-json names a folder (OUT/<name>.jsonl)")
    frame_json = Path(frame_json) if frame_json is not None else None
    for flag, out, bad in (
        ("--save", save, _VIDEO_SUFFIXES + (".mkv",)),
        ("--stats", stats, (".jsonl", ".json")),
        ("--frame-json", frame_json, (".jsonl", ".json")),
    ):
        if out is None:
            continue
        if out.suffix.lower() in bad:
            raise VssegError(
                f"{flag} {out}: with several sources {flag} names a folder "
                f"(one file per source inside it), not a {out.suffix} file"
            )
        if out.exists() and not out.is_dir():
            raise VssegError(f"{flag} {out}: exists and is not a folder (several sources write one file each)")
    return save, frame_json


def _outputs(names: list[str], save, save_masks, stats, frame_json) -> dict[str, dict[str, Path]]:
    """Per source name: {flag: the path it writes}."""
    out = {}
    for name in names:
        paths = {
            "--save": save / f"{name}.mp4" if save is not None else None,
            "--save-masks": save_masks / name if save_masks is not None else None,
            "--stats": stats / f"{name}.jsonl" if stats is not None else None,
            "--frame-json": frame_json / f"{name}.jsonl" if frame_json is not None else None,
        }
        out[name] = {flag: path for flag, path in paths.items() if path is not None}
    return out


def _check_outputs(model: Path, specs: list[str], outputs: dict) -> None:
    """No output may be an input (the model, a source's file or folder, a glob's folders), as for one source, and
    no two outputs the same file. What is checked is what is written: OUT/<name>…, not OUT itself."""
    from ..core.fileio import refuse_output_over_inputs

    files = [(flag, path) for per in outputs.values() for flag, path in per.items()]
    refuse_output_over_inputs(files, [model, *(p for spec in specs for p in _input_paths(spec))])
    seen: dict[Path, str] = {}
    for flag, path in files:
        other = seen.setdefault(path.resolve(), flag)
        if other != flag:
            raise VssegError(
                f"{flag} {path.parent}: {other} writes {path.name} there too; give each output its own folder"
            )


def _build_streams(specs, names, outputs, *, show, mask_format, label_set, open_source, source_options):
    """Per source: its sinks (built first, so a bad flag fails before any source opens), its stats, its source."""
    from .frame_json import FrameJsonSink
    from .multi import Stream
    from .run import bind_sinks
    from .sinks import MaskSink, NullSink, VideoSink, WindowSink
    from .stats import StatsCollector

    streams, opened = [], []
    try:
        for name in names:
            sinks, paths = [], outputs[name]
            opened.append(sinks)
            if show:
                sinks.append(WindowSink(title=f"vsseg-edge {name}"))
            if "--save" in paths:
                sinks.append(VideoSink(paths["--save"]))
            if "--save-masks" in paths:
                sinks.append(MaskSink(paths["--save-masks"], mask_format))
            if "--frame-json" in paths:
                sinks.append(FrameJsonSink(paths["--frame-json"]))
            bind_sinks(sinks, label_set)
            collector = StatsCollector(str(paths["--stats"]) if "--stats" in paths else None)
            streams.append(Stream(name, None, sinks or [NullSink()], collector))
        for st, spec in zip(streams, specs):
            st.source = open_source(spec, options=source_options)
    except BaseException:
        for st in streams:
            if st.source is not None:
                st.source.stop()
            st.stats.close()
        for sinks in opened:
            for sink in sinks:
                sink.close()
        raise
    return streams


def run_sources(
    model: Path,
    specs: list[str],
    *,
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
    max_batch: int | None = None,
    mask_format: str = "ids",
    frame_json: str | None = None,
    classes: str | None = None,
    source_options=None,
):
    """Open the backend, every source and its sinks, run the batched pipeline, print the per-source table and
    write OUT/summary.json for --stats; return the MultiRunResult."""
    from ..core.classes import resolve_classes
    from ..core.config import parse_size
    from ..core.fileio import write_json
    from .backends import infer_backend_name
    from .multi import MultiPipeline, format_multi_summary, source_names
    from .run import backend_options, open_run_backend
    from .sources import open_source

    if not 0.0 <= alpha <= 1.0:
        raise VssegError(f"--alpha {alpha}: expected a value in [0, 1]")
    if max_frames is not None and max_frames < 1:
        raise VssegError(f"--max-frames {max_frames}: expected a positive number")
    if max_batch is not None and max_batch < 1:
        raise VssegError(f"--max-batch {max_batch}: expected a positive number")
    if threads < 0:
        raise VssegError(f"--threads {threads}: expected 0 (onnxruntime's default) or a positive number")
    names = source_names(specs)
    save, frame_json = _folders(save, stats, frame_json)
    outputs = _outputs(names, save, save_masks, stats, frame_json)
    _check_outputs(model, specs, outputs)
    hw = parse_size(size) if size is not None else None
    options = backend_options(backend or infer_backend_name(model), threads=threads, fp16=fp16, cuda_graph=cuda_graph)
    label_set = resolve_classes(classes) if classes is not None else None
    with open_run_backend(model, backend, options, hw, label_set, classes) as be:
        streams = _build_streams(
            specs,
            names,
            outputs,
            show=show,
            mask_format=mask_format,
            label_set=be.label_set,
            open_source=open_source,
            source_options=source_options,
        )
        pipe = MultiPipeline(streams, be, max_batch=max_batch, alpha=alpha, max_frames=max_frames)
        typer.echo(
            f"{be.describe()} ← {len(streams)} sources, batches of up to {pipe.max_batch}"
            + (
                ""
                if be.max_batch is None or be.max_batch >= len(streams)
                else f" (the model takes batch {be.max_batch}; export --dynamic-batch for more)"
            ),
            err=True,
        )
        width = max(len(n) for n in names)
        for st, spec in zip(streams, specs):
            typer.echo(f"  {st.name:<{width}} ← {spec}", err=True)
        result = pipe.run()
    if stats is not None:
        write_json(stats / "summary.json", {"model": str(model), **result.summary()})
    typer.echo(format_multi_summary(result), err=True)
    if result.frames == 0 and result.stopped_by in ("end", "error"):
        raise VssegError("run: no frame was segmented from any source" + (f" ({result.error})" if result.error else ""))
    return result
