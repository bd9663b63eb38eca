"""CLI commands of this room (registered by vsseg_edge.cli): `serve` (and `serve --check`) and `export-triton`.

PyTriton and tritonclient are imported inside the commands (the `serve` extra), so `--help` needs neither.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def _streams(text: str) -> list[int]:
    from ..core.errors import VssegError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise VssegError(f"--streams {text!r}: expected positive numbers separated by commas, e.g. 1,2,4,8")
    return values


def serve_command(
    model: Optional[Path] = typer.Argument(
        None,
        help="Engine (.engine/.plan), ONNX (.onnx), checkpoint (.pt) or a zoo name to serve; omitted with --check URL.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="HTTP port; gRPC listens on PORT+1, metrics on PORT+2."),
    max_batch: int = typer.Option(
        8,
        "--max-batch",
        help="Triton's max_batch_size: frames per dynamic batch (--check --robustness: the server's, to exceed it).",
    ),
    instances: int = typer.Option(1, "--instances", help="Model instances, each with its own backend."),
    queue_delay_us: int = typer.Option(
        0, "--queue-delay-us", help="How long a request may wait for others to batch with (Triton's max_queue_delay)."
    ),
    name: Optional[str] = typer.Option(None, "--name", show_default="the file name", help="Model name on the server."),
    backend: Optional[str] = typer.Option(None, "--backend", show_default="from the file", help="trt | ort | torch."),
    threads: int = typer.Option(
        0, "--threads", help="onnxruntime intra-op threads per instance (0: its default; --check: for --reference)."
    ),
    check: Optional[str] = typer.Option(
        None,
        "--check",
        show_default="off",
        help="Load-test a running server instead: grpc://HOST:PORT or http://HOST:PORT.",
    ),
    source: Optional[str] = typer.Option(
        None, "--source", show_default="none", help="--check: frames to send (video, folder, glob …)."
    ),
    streams: str = typer.Option("1,2,4,8", "--streams", help="--check: concurrent streams, one run per number."),
    seconds: float = typer.Option(10.0, "--seconds", help="--check: timed seconds per run (after 1 s warm-up)."),
    frames: int = typer.Option(32, "--frames", help="--check: distinct frames read from --source and cycled."),
    model_name: Optional[str] = typer.Option(
        None, "--model-name", show_default="the only one", help="--check: the served model."
    ),
    robustness: bool = typer.Option(
        False,
        "--robustness",
        help="--check: also send malformed requests and disconnects, and check the server still serves.",
    ),
    reference: Optional[Path] = typer.Option(
        None,
        "--reference",
        show_default="off",
        help="--check: compare the labels with this artifact (or zoo model) run locally.",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", show_default="off", help="--check: write the results as JSON here."
    ),
):
    """Serve a model on NVIDIA Triton (PyTriton): HTTP + gRPC, dynamic batching, health and metrics endpoints;
    uint8 BGR frames in, uint8 labels out. With --check URL: load-test a running server."""
    from ..core.errors import VssegError

    if check is not None:
        if model is not None:
            raise VssegError(
                "serve --check URL: checks a running server; give no MODEL (use --reference MODEL to "
                "compare its labels with a local run)"
            )
        if source is None:
            raise VssegError("serve --check: --source is required (the frames to send)")
        _check(
            check,
            source,
            _streams(streams),
            seconds,
            frames,
            model_name,
            robustness,
            reference,
            out,
            max_batch,
            threads,
        )
        return
    if model is None:
        raise VssegError("serve: give the MODEL to serve (or --check URL to test a running server)")
    from .server import SegmentationServer, ServeConfig, serve_forever

    cfg = ServeConfig(
        host=host,
        http_port=port,
        max_batch=max_batch,
        instances=instances,
        queue_delay_us=queue_delay_us,
        name=name,
        backend=backend,
        threads=threads,
    )

    def started(server):
        typer.echo(server.describe(), err=True)
        typer.echo("ready (Ctrl-C or SIGTERM stops the server)", err=True)

    serve_forever(SegmentationServer(model, cfg), started=started)  # returns only by Interrupted or an error


def _check(url, source, streams, seconds, count, model_name, robustness, reference, out, max_batch, threads):
    import shlex

    from ..core.fileio import write_json
    from ..zoo import resolve
    from .client import (
        compare_labels,
        environment,
        load_frames,
        load_test,
        robustness_check,
        wait_ready,
    )

    reference = resolve(reference) if reference is not None else None  # a zoo name, refused before connecting
    client = wait_ready(url, model_name, timeout_s=30)
    frames = load_frames(source, count)
    report = {
        "schema": "vsseg-edge-serve-check/1",
        "command": shlex.join(["vsseg-edge", *sys.argv[1:]]),
        "url": url,
        "model": client.model,
        "source": source,
        "frames": {"count": len(frames), "size": list(frames[0].shape)},
        "request": "one frame per request (1×H×W×3 uint8), closed loop per stream",
        "environment_start": environment(),
        "runs": [],
    }
    try:
        if reference is not None:
            report["reference"] = compare_labels(client, reference, frames[:8], threads)
            r = report["reference"]
            typer.echo(
                f"labels vs {reference} run locally: {r['identical']}/{r['frames']} frames identical, "
                f"{r['agreement_percent']:.4f} % of pixels agree",
                err=True,
            )
        typer.echo(f"{'streams':>8}{'frames/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}", err=True)
        for n in streams:
            res = load_test(url, client.model, frames, n, seconds)
            report["runs"].append(res.to_dict())
            lat = res.latency_ms

            def fmt(v):
                return f"{v:>9.1f}" if v is not None else f"{'n/a':>9}"

            typer.echo(
                f"{n:>8}{res.frames_per_s:>10.2f}{fmt(lat['p50'])}{fmt(lat['p90'])}{fmt(lat['p99'])}{res.errors:>8}",
                err=True,
            )
        if robustness:
            protocol = url.split("://", 1)[0] if "://" in url else "grpc"
            host_port = url.split("://", 1)[-1]
            host, port = host_port.rsplit(":", 1)
            grpc_url, http_url = (
                (url, f"http://{host}:{int(port) - 1}")
                if protocol == "grpc"
                else (f"grpc://{host}:{int(port) + 1}", url)
            )
            report["robustness"] = robustness_check(grpc_url, http_url, client.model, frames[0], max_batch)
            for r in report["robustness"]:
                typer.echo(
                    f"  {r['case']:<42} error response: {'yes' if r['error_response'] else 'no ':<4} "
                    f"served after: {'yes' if r['served_after'] else 'NO'}",
                    err=True,
                )
    finally:
        client.close()
    report["environment_end"] = environment()
    if out is not None:
        write_json(out, report)
        typer.echo(f"wrote {out}", err=True)


def export_triton_command(
    model: Path = typer.Argument(
        ...,
        help="ONNX (.onnx, FP32 or Q/DQ), TensorRT engine (.engine/.plan) or a zoo "
        "name (its ONNX export, made once into the cache; needs torch).",
    ),
    repo: Path = typer.Option(..., "--repo", help="Triton model repository folder (created if missing)."),
    name: Optional[str] = typer.Option(None, "--name", show_default="the file name", help="Model name."),
    max_batch: Optional[int] = typer.Option(
        None,
        "--max-batch",
        show_default="8; an engine: its profile max",
        help="max_batch_size for a dynamic-batch model.",
    ),
    instances: int = typer.Option(1, "--instances", help="instance_group count."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing REPO/NAME."),
):
    """Write REPO/NAME/config.pbtxt + 1/model.onnx|model.plan for `tritonserver --model-repository REPO`."""
    from .repository import export_triton

    res = export_triton(
        model,
        repo,
        name=name,
        max_batch=max_batch,
        instances=instances,
        overwrite=overwrite,
        log=lambda s: typer.echo(s, err=True),
    )
    typer.echo(f"{res['path']}: {res['platform']}, max_batch_size {res['max_batch_size']}")
    for kind in ("inputs", "outputs"):
        for tname, dtype, dims in res[kind]:
            typer.echo(f"  {kind[:-1]:<7}{tname!r} {dtype} {dims}")
    typer.echo(f"serve it with: tritonserver --model-repository {Path(repo).resolve()}")


def register(app, data_app) -> None:
    app.command("serve")(serve_command)
    app.command("export-triton")(export_triton_command)
