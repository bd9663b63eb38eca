"""`vsseg-edge run MODEL --source A --source B …`: the outputs and flags of a multi-source run.

With several sources every per-source output is named after its source (`multi.source_names`: the file or
folder name, `camera0`, the stream's host and path; a name several sources share gets -1, -2 …):

    --save-masks OUT   OUT/<name>/<frame>.png
    --save OUT         OUT/<name>.mp4            (OUT is a folder here, not a video file name)
    --stats OUT        OUT/<name>.jsonl per frame, and OUT/summary.json (per-source FPS, drops, errors, batches)
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
    path = Path(spec)
    if any(ch in path.name for ch in "*?["):  # a glob: its folder holds the inputs
        path = path.parent
    path = path.resolve()
    return [path] + ([path.parent] if path.is_file() else [])


def _check_outputs(model: Path, specs: list[str], names: list[str], save: Path | None, save_masks: Path | None,
                   stats: Path | None) -> None:
    """Refuse folder-shaped flags given file names, and outputs that would be written over an input."""
    from ..core.fileio import refuse_output_over_inputs

    for flag, out, bad in (("--save", save, _VIDEO_SUFFIXES), ("--stats", stats, (".jsonl", ".json"))):
        if out is None:
            continue
        if out.suffix.lower() in bad:
            raise VssegError(f"{flag} {out}: with several sources {flag} names a folder "
                             f"(one file per source inside it), not a {out.suffix} file")
        if out.exists() and not out.is_dir():
            raise VssegError(f"{flag} {out}: exists and is not a folder (several sources write one file each)")
    outputs = [(flag, folder) for flag, folder in (("--save", save), ("--save-masks", save_masks),
                                                   ("--stats", stats)) if folder is not None]
    for name in names:
        if save_masks is not None:
            outputs.append(("--save-masks", save_masks / name))
        if save is not None:
            outputs.append(("--save", save / f"{name}.mp4"))
        if stats is not None:
            outputs.append(("--stats", stats / f"{name}.jsonl"))
    refuse_output_over_inputs(outputs, [model, *(p for spec in specs for p in _input_paths(spec))])


def _build_streams(specs, names, *, show, save, save_masks, stats, open_source):
    """Per source: its sinks (built first, so a bad flag fails before any source opens), its stats, its source."""
    from .multi import Stream
    from .sinks import MaskSink, NullSink, VideoSink, WindowSink
    from .stats import StatsCollector

    streams, opened = [], []
    try:
        for spec, name in zip(specs, names):
            sinks = []
            opened.append(sinks)
            if show:
                sinks.append(WindowSink(title=f"vsseg-edge {name}"))
            if save is not None:
                sinks.append(VideoSink(save / f"{name}.mp4"))
            if save_masks is not None:
                sinks.append(MaskSink(save_masks / name))
            collector = StatsCollector(str(stats / f"{name}.jsonl") if stats is not None else None)
            streams.append(Stream(name, None, sinks or [NullSink()], collector))
        for st, spec in zip(streams, specs):
            st.source = open_source(spec)
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


def run_sources(model: Path, specs: list[str], *, backend: str | None = None, show: bool = False,
                save: Path | None = None, save_masks: Path | None = None, size: str | None = None,
                alpha: float = 0.5, max_frames: int | None = None, stats: Path | None = None, threads: int = 0,
                fp16: bool | None = None, cuda_graph: bool = False, max_batch: int | None = None):
    """Open the backend, every source and its sinks, run the batched pipeline, print the per-source table and
    write OUT/summary.json for --stats; return the MultiRunResult."""
    from ..core.fileio import write_json
    from .backends import infer_backend_name, open_backend
    from .multi import MultiPipeline, format_multi_summary, source_names
    from .run import backend_options, parse_size
    from .sources import open_source

    if not 0.0 <= alpha <= 1.0:
        raise VssegError(f"--alpha {alpha}: expected a value in [0, 1]")
    if max_frames is not None and max_frames < 1:
        raise VssegError(f"--max-frames {max_frames}: expected a positive number")
    if max_batch is not None and max_batch < 1:
        raise VssegError(f"--max-batch {max_batch}: expected a positive number")
    names = source_names(specs)
    _check_outputs(model, specs, names, save, save_masks, stats)
    hw = parse_size(size)
    options = backend_options(backend or infer_backend_name(model), threads=threads, fp16=fp16,
                              cuda_graph=cuda_graph)
    with open_backend(model, backend, **options) as be:
        if hw is not None:
            be.check_spec(be.preprocess_spec.replace(height=hw[0], width=hw[1]))
        streams = _build_streams(specs, names, show=show, save=save, save_masks=save_masks, stats=stats,
                                 open_source=open_source)
        pipe = MultiPipeline(streams, be, max_batch=max_batch, alpha=alpha, max_frames=max_frames)
        typer.echo(f"{be.describe()} ← {len(streams)} sources, batches of up to {pipe.max_batch}"
                   + ("" if be.max_batch is None or be.max_batch >= len(streams) else
                      f" (the model takes batch {be.max_batch}; export --dynamic-batch for more)"), err=True)
        for st, spec in zip(streams, specs):
            typer.echo(f"  {st.name:<20} ← {spec}", err=True)
        result = pipe.run()
    if stats is not None:
        write_json(stats / "summary.json", {"model": str(model), **result.summary()})
    typer.echo(format_multi_summary(result), err=True)
    return result
