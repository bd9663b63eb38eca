"""CLI commands of this room (registered by vsseg_edge.cli); heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _parse_offsets(text: str | None) -> tuple[int, ...]:
    """Comma-separated non-zero integers; None gives ETC's offsets (`data.flow.ETC_OFFSETS`)."""
    from ..core.errors import VssegError

    if text is None:
        from .flow import ETC_OFFSETS

        return ETC_OFFSETS
    try:
        offsets = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise VssegError(f"--offsets: expected comma-separated integers such as -2,-1,1,2,3, got {text!r}") from None
    if not offsets or 0 in offsets:
        raise VssegError(f"--offsets: expected non-zero integers such as -2,-1,1,2,3, got {text!r}")
    return offsets


def flow_command(
    dataset_root: Path = typer.Argument(
        ...,
        help="Dataset folder (Cityscapes, synthetic, CamVid, images) or video "
        "(a video file, a folder of frames or of clips).",
    ),
    split: str = typer.Option("train", "--split", help="Split to process."),
    offsets: Optional[str] = typer.Option(
        None,
        "--offsets",
        show_default="ETC's -2,-1,1,2,3",
        help="Neighbour offsets k of each labelled frame (every frame of unlabelled video) (flow t→t+k).",
    ),
    cache: Path = typer.Option(
        None, "--cache", show_default="$VSSEG_EDGE_CACHE/flow, else ~/.cache/vsseg-edge/flow", help="Flow cache folder."
    ),
    preset: str = typer.Option("medium", "--preset", help="DIS preset: ultrafast | fast | medium."),
    scale: float = typer.Option(
        1.0, "--scale", help="Compute DIS on frames resized by this factor (0-1], e.g. 0.5 for full-size Cityscapes."
    ),
    consecutive: bool = typer.Option(True, "--consecutive/--no-consecutive", help="Also every (t, t+1) pair, for TC."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes computing flow in parallel."),
    cache_format: str = typer.Option(
        "png", "--format", help="Cache entries: png (KITTI, 1/64 px, ~4x smaller) | npy (exact, faster to write)."
    ),
    kind: str = typer.Option(
        "auto", "--kind", help="Dataset layout: auto | cityscapes | synthetic | camvid | images | video."
    ),
):
    """Compute OpenCV DIS optical flow for training (labelled frame → neighbours) and TC, into the cache."""
    import time

    from .flow import DISFlow, flow_cache_dir, precompute_flows
    from .frame_source import open_frame_source

    offs = _parse_offsets(offsets)
    dataset = open_frame_source(dataset_root, split, kind, flag="data flow")
    if dataset.name == "video":
        dataset.check_offsets(offs)
    source = DISFlow(preset, flow_cache_dir(cache), cache_format, scale)
    t0 = time.perf_counter()
    stats = precompute_flows(dataset, source, offs, progress=True, consecutive=consecutive, workers=workers)
    dt = time.perf_counter() - t0
    per_pair = f", {1000 * dt / stats['computed']:.1f} ms per computed pair" if stats["computed"] else ""
    typer.echo(
        f"{source.name}: {stats['pairs']} pairs ({stats['computed']} computed, {stats['cached']} cached) "
        f"in {dt:.1f} s{per_pair}; cache {source.cache_dir}"
    )


def register(app, data_app) -> None:
    """`vsseg-edge data flow`, and `data synth` from the generator's own commands module."""
    from .synth import commands as synth_commands  # typer and stdlib only, like this module

    synth_commands.register(app, data_app)
    data_app.command("flow")(flow_command)
