"""A real Triton server (PyTriton's tritonserver) on loopback, serving the tiny model through the project's backend.

One server, started once, for one test whose checks are subtests (pytest-xdist 3.8 cannot keep tests of a module
on one worker under pytest 9, and a server per worker doubles the start-ups on two cores); skipped, with the
reason, where Triton cannot start. The reference labels are the local backend's, computed the way `run` computes
them, one frame at a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.runtime.conftest import make_frames
from tests.serve.conftest import free_port_run, free_ports, triton_start_lock
from tests.serve.test_segmenter import run_labels
from vsseg_edge.cli import app
from vsseg_edge.core.errors import VssegError
from vsseg_edge.runtime.backends import open_backend

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (pip install 'vsseg-edge[serve]')")
pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install 'vsseg-edge[serve]')")

MAX_BATCH = 8


@pytest.fixture(scope="module")
def server(serve_models):
    from vsseg_edge.serve.server import SegmentationServer, ServeConfig

    http, grpc, metrics = free_ports(3)
    cfg = ServeConfig(http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch=MAX_BATCH, instances=2, threads=1)
    srv = SegmentationServer(serve_models["logits_batch"], cfg)
    try:
        with triton_start_lock():
            srv.start_retrying()
    except VssegError as exc:
        pytest.skip(f"Triton cannot start on this machine: {exc}")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local(serve_models):
    with open_backend(serve_models["logits_batch"], threads=1) as be:
        yield be


def _frames(n, size=(64, 128), seed=0):
    return np.stack([cv2.resize(f, size[::-1]) for f in make_frames(n, seed=seed)])


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read().decode()


def _metric(text: str, name: str, model: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and f'model="{model}"' in line
    )


def check_a_batch_gives_the_local_backends_labels(server, local, protocol):
    from vsseg_edge.serve.client import Client

    client = Client(server.grpc_url if protocol == "grpc" else server.http_url, server.name)
    try:
        for frames in (_frames(4), _frames(3, size=(90, 160), seed=3)):  # the model's size, and one it resizes
            got = client.labels(frames)
            want = np.stack([run_labels(local, f) for f in frames])
            assert got.dtype == np.uint8 and got.shape == frames.shape[:3]
            np.testing.assert_array_equal(got, want)
            assert len({g.tobytes() for g in got}) > 1
    finally:
        client.close()


def check_concurrent_requests_are_batched_by_triton(server, local):
    from vsseg_edge.serve.client import Client

    frames = _frames(MAX_BATCH, seed=5)
    before = _get(server.metrics_url)[1]
    clients = [Client(server.grpc_url, server.name) for _ in frames]
    results, start = [None] * len(frames), threading.Barrier(len(frames))

    def send(i):
        start.wait()
        results[i] = clients[i].labels(frames[i : i + 1])[0]

    def slow(infer):  # each execution takes ≥ 1 s: requests that arrive meanwhile queue up and go as one batch
        return lambda batch: (time.sleep(1.0), infer(batch))[1]

    for be in server._backends:
        be.infer = slow(be.infer)
    try:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(frames))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for be in server._backends:
            del be.infer  # back to the class's method
        for c in clients:
            c.close()
    deadline, after = time.monotonic() + 10, _get(server.metrics_url)[1]
    while (
        _metric(after, "nv_inference_count", server.name) - _metric(before, "nv_inference_count", server.name)
        < len(frames)
        and time.monotonic() < deadline
    ):  # the statistics follow the answers closely, not at once
        time.sleep(0.1)
        after = _get(server.metrics_url)[1]
    for frame, got in zip(frames, results):
        np.testing.assert_array_equal(got, run_labels(local, frame))
    inferences = _metric(after, "nv_inference_count", server.name) - _metric(before, "nv_inference_count", server.name)
    executions = _metric(after, "nv_inference_exec_count", server.name) - _metric(
        before, "nv_inference_exec_count", server.name
    )
    assert inferences == len(frames)
    assert executions < inferences  # several requests ran as one batch


def check_health_and_metrics_endpoints(server):
    assert _get(f"{server.http_url}/v2/health/live")[0] == 200
    assert _get(f"{server.http_url}/v2/health/ready")[0] == 200
    status, meta = _get(f"{server.http_url}/v2/models/{server.name}")
    meta = json.loads(meta)
    assert status == 200 and meta["inputs"][0]["name"] == "frames" and meta["inputs"][0]["datatype"] == "UINT8"
    assert meta["outputs"][0]["name"] == "labels" and meta["outputs"][0]["shape"] == [-1, -1, -1]
    text = _get(server.metrics_url)[1]
    assert _metric(text, "nv_inference_request_success", server.name) >= 0
    assert f'nv_inference_request_success{{model="{server.name}"' in text


def check_malformed_requests_and_disconnects_leave_it_serving(server):
    from vsseg_edge.serve.client import robustness_check

    results = robustness_check(server.grpc_url, server.http_url, server.name, _frames(1)[0], MAX_BATCH)
    by_case = {r["case"]: r for r in results}
    assert len(by_case) == 9 and all(r["served_after"] for r in results), results
    hang_up = by_case.pop("HTTP client hangs up mid-request")
    assert all(r["error_response"] for r in by_case.values()), results
    assert not hang_up["error_response"]  # nothing to answer: the client is gone
    assert "FP32" in by_case["float32 frames"]["response"] and "UINT8" in by_case["float32 frames"]["response"]
    assert "expects" in by_case["float32 frames"]["response"] or "data-type" in by_case["float32 frames"]["response"]
    assert str(MAX_BATCH) in by_case[f"batch of {MAX_BATCH + 1} (max {MAX_BATCH})"]["response"]
    assert _get(f"{server.http_url}/v2/health/ready")[0] == 200


def check_load_test_counts_answers_and_latency(server):
    from vsseg_edge.serve.client import load_test

    res = load_test(server.grpc_url, server.name, list(_frames(4)), streams=2, seconds=1.0, warmup_s=0.3)
    assert res.answered > 0 and res.errors == 0 and res.frames_per_s == pytest.approx(res.answered / 1.0)
    assert 0 < res.latency_ms["p50"] <= res.latency_ms["p99"] <= res.latency_ms["max"]


def check_check_command_against_the_server(server, serve_models, video_file, tmp_path):
    out = tmp_path / "check.json"
    r = CliRunner().invoke(
        app,
        [
            "serve",
            "--check",
            server.http_url,
            "--model-name",
            server.name,
            "--source",
            str(video_file),
            "--frames",
            "3",
            "--streams",
            "1,2",
            "--seconds",
            "0.5",
            "--reference",
            str(serve_models["logits_batch"]),
            "--threads",
            "1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert [run["streams"] for run in report["runs"]] == [1, 2]
    assert all(run["answered"] > 0 and run["errors"] == 0 for run in report["runs"])
    assert report["reference"] == {
        "reference": str(serve_models["logits_batch"]),
        "frames": 3,
        "identical": 3,
        "agreement_percent": 100.0,
    }
    assert report["environment_start"]["cpu_count"] == os.cpu_count()
    assert report["environment_start"]["serving"]["nvidia-pytriton"] and report["environment_end"]["load_avg"]


def check_check_without_a_model_name_says_how_to_name_it(server):
    from vsseg_edge.serve.client import Client

    with pytest.raises(VssegError, match="--model-name"):
        Client(server.grpc_url)


def test_served_model(server, local, serve_models, video_file, tmp_path, subtests):
    for protocol in ("grpc", "http"):
        with subtests.test(f"a batch over {protocol} gives the local backend's labels"):
            check_a_batch_gives_the_local_backends_labels(server, local, protocol)
    with subtests.test("concurrent requests are batched by Triton"):
        check_concurrent_requests_are_batched_by_triton(server, local)
    with subtests.test("health and metrics endpoints"):
        check_health_and_metrics_endpoints(server)
    with subtests.test("malformed requests and disconnects leave it serving"):
        check_malformed_requests_and_disconnects_leave_it_serving(server)
    with subtests.test("the load test counts answers and latency"):
        check_load_test_counts_answers_and_latency(server)
    with subtests.test("serve --check against the server"):
        check_check_command_against_the_server(server, serve_models, video_file, tmp_path)
    with subtests.test("a client without --model-name is told to give it"):
        check_check_without_a_model_name_says_how_to_name_it(server)


def test_a_port_in_use_is_refused_at_once(serve_models):
    import socket

    from vsseg_edge.serve.server import SegmentationServer, ServeConfig

    base = free_port_run(3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 2))
        busy.listen()
        server = SegmentationServer(serve_models["logits_batch"], ServeConfig(http_port=base, threads=1))
        with pytest.raises(VssegError, match=rf"127.0.0.1:{base + 2} for metrics \(--port \+ 2\) is not free"):
            server.start()
    assert not server.is_alive() and server._backends == []


# -------------------------------------------------------------------------- the command, as a process ----
def _tritonservers_on(port: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tritonserver" in cmd and f"{port}" in cmd:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_serve_command_stops_triton_on_sigterm(serve_models):
    """`vsseg-edge serve` in its own process: ready line, one request, SIGTERM → exit 143, no tritonserver left."""
    from vsseg_edge.serve.client import Client

    http = free_port_run(3)  # the command takes --port P and P+1 (gRPC), P+2 (metrics)
    with triton_start_lock():
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vsseg_edge.cli",
                "serve",
                str(serve_models["uint8_labels"]),
                "--port",
                str(http),
                "--threads",
                "1",
                "--name",
                "seg",
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("ready") or proc.poll() is not None:
                break
    try:
        if not any(line.startswith("ready") for line in lines):
            err = "".join(lines) + proc.stderr.read()
            pytest.skip(f"`vsseg-edge serve` did not start: {err.strip().splitlines()[-1] if err.strip() else '?'}")
        assert any(f"http://127.0.0.1:{http}/v2/models/seg/infer" in line for line in lines), lines
        assert _tritonservers_on(http)
        client = Client(f"grpc://127.0.0.1:{http + 1}", "seg")
        frames = _frames(2)
        with open_backend(serve_models["uint8_labels"]) as be:
            np.testing.assert_array_equal(client.labels(frames), np.stack([run_labels(be, f) for f in frames]))
        client.close()
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
        assert proc.returncode == 128 + signal.SIGTERM, rest
        assert "stopped the Triton server" in rest
        deadline = time.monotonic() + 10
        while _tritonservers_on(http) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _tritonservers_on(http)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
