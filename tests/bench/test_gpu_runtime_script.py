"""benchmarks/gpu_runtime.py, the GPU evidence of the runtime, checked without a GPU: its gpu part in --smoke mode
(tiny sizes, on the CPU) runs `vsseg-edge run` with both stages, the live replay and the report, so the one
prepared call on a GPU machine does not fail on a script error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_part_smoke_on_cpu_writes_json_and_markdown(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_runtime.py"), "gpu", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "gpu_runtime.json").read_text())
    model = data["gpu"]["models"]["espnet"]
    assert model["card"].startswith("none (smoke run on the CPU")
    torch_entry = model["torch"]
    for key, mode, frames in (("runtime", "device", 12 - 2), ("host", "host", 8 - 2)):  # minus the frames left out
        run = torch_entry["pipeline"][key]
        assert "error" not in run, run
        assert run["fps"] > 0 and run["frames"] == frames and "--preprocess " + mode in run["command"]
    assert torch_entry["pipeline"]["runtime"]["stage_p50_ms"]["infer"] > 0
    assert data["models"]["espnet"]["pipeline_over_backend"] == pytest.approx(
        torch_entry["pipeline"]["runtime"]["fps"] / torch_entry["backend_only"]["fps"]
    )
    assert torch_entry["live"]["frames"] == 8 and torch_entry["live"]["latency_p50_ms"] > 0
    ort_entry = model["ort"]  # onnxruntime's CPU provider here: the camera-frame graph, the host stage
    assert ort_entry["backend_only"]["fps"] > 0 and ort_entry["pipeline"]["runtime"]["frames"] == 10
    assert model["trt"]["status"] in ("unavailable", "failed") or model["trt"]["backend_only"]["fps"] > 0
    md = (tmp_path / "gpu_runtime.md").read_text()
    assert "| espnet | torch" in md and "SMOKE run on the CPU" in md
