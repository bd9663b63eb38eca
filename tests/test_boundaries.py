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
    "vsseg_edge.engine.builder",
    "vsseg_edge.engine.policy",
    "vsseg_edge.runtime.pipeline",
    "vsseg_edge.runtime.multi",
    "vsseg_edge.runtime.multi_commands",
    "vsseg_edge.serve.server",
    "vsseg_edge.serve.segmenter",
    "vsseg_edge.serve.client",
    "vsseg_edge.serve.repository",
    "vsseg_edge.serve.commands",
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


# the serve extra (PyTriton, tritonclient) is imported inside the serve commands only
SERVE_LAZY = ["vsseg_edge.cli", "vsseg_edge.serve.commands", "vsseg_edge.serve.server", "vsseg_edge.serve.client",
              "vsseg_edge.serve.repository"]


@pytest.mark.parametrize("module", SERVE_LAZY)
def test_serve_modules_import_without_pytriton_or_tritonclient(module):
    _imports_none_of(module, ("pytriton", "tritonclient", "torch"))


def test_missing_serve_extra_is_a_one_line_install_hint():
    code = (
        "import sys; sys.modules['pytriton'] = None; sys.modules['tritonclient'] = None\n"
        "from vsseg_edge.core.errors import MissingDependency\n"
        "from vsseg_edge.serve import _triton\n"
        "for call in (_triton.pytriton, lambda: _triton.tritonclient('grpc'), _triton.model_config_pb2):\n"
        "    try:\n"
        "        call()\n"
        "    except MissingDependency as exc:\n"
        "        msg = str(exc); assert '\\n' not in msg and \"pip install 'vsseg-edge[serve]'\" in msg, msg\n"
        "    else:\n"
        "        raise AssertionError('no MissingDependency')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
