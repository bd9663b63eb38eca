"""Import boundaries (DESIGN.md): the edge-side rooms import without torch, and `--help` is instant."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

# an edge box runs these without PyTorch (and without onnx / TensorRT until a command needs them)
LIGHT = [
    "vsseg_edge.core.preprocess",
    "vsseg_edge.core.manifest",
    "vsseg_edge.core.config",
    "vsseg_edge.core.labels",
    "vsseg_edge.metrics.evaluate",
    "vsseg_edge.data.datasets",
    "vsseg_edge.data.flow",
    "vsseg_edge.data.video",
    "vsseg_edge.zoo",
    "vsseg_edge.zoo.commands",
    "vsseg_edge.engine.builder",
    "vsseg_edge.engine.policy",
    "vsseg_edge.runtime.pipeline",
    "vsseg_edge.runtime.backends.ort",
    "vsseg_edge.runtime.backends.trt",
    "vsseg_edge.bench.runner",
    "vsseg_edge.cli",
]
# these may import onnx / onnxruntime, never torch
NO_TORCH = ["vsseg_edge.calib.pipeline", "vsseg_edge.calib.quantize_ort", "vsseg_edge.engine.fp16"]


def _imports_none_of(module: str, banned: tuple[str, ...]) -> None:
    code = (
        "import sys, importlib; importlib.import_module(%r); "
        "bad = [m for m in %r if m in sys.modules]; "
        "assert not bad, f'imported {bad}'" % (module, banned)
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module", LIGHT)
def test_module_imports_without_torch_onnx_tensorrt(module):
    _imports_none_of(module, ("torch", "tensorrt", "onnx"))


@pytest.mark.parametrize("module", NO_TORCH)
def test_module_imports_without_torch(module):
    _imports_none_of(module, ("torch", "tensorrt"))


def test_help_is_fast_and_torch_free():
    code = (
        "import sys; from typer.testing import CliRunner; from vsseg_edge.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "assert 'torch' not in sys.modules"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    assert time.perf_counter() - t0 < 3.0  # interpreter start included; the goal (<1 s) is measured in benchmarks
