"""TensorRT backend with a dynamic-batch engine, against the TEST DOUBLE of tensorrt/cudart (see test_trt_logic).

What is tested is OUR logic: buffers sized once for the profile's max batch (from the engine manifest), the input
shape set only when the batch size changes, N items copied each way, batches outside 1..max refused. Nothing about
TensorRT itself is verified here.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.test_trt_logic import (
    SPEC,
    HostMemory,
    _as_array,
    _FakeContext,
    _FakeEngineV3,
    fake_cudart,
    fake_tensorrt,
)
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.manifest import write_manifest
from vsseg_edge.runtime.backends import trt as trt_backend


class _BatchContext(_FakeContext):
    """Runs as many items as the input shape set last says; records every shape set."""

    def __init__(self, engine):
        super().__init__(engine)
        self.shape_calls = []

    def set_input_shape(self, name, shape):
        self.shape_calls.append(tuple(shape))
        return super().set_input_shape(name, shape)

    def get_tensor_shape(self, name):
        n = self.shapes["input"][0]
        return (n, SPEC.height, SPEC.width) if name == "labels" else self.shapes.get(name)

    def _run(self, in_ptr, out_ptr):
        n = self.shapes["input"][0]
        x = _as_array(in_ptr, SPEC.input_shape(n), np.float32)
        _as_array(out_ptr, (n, SPEC.height, SPEC.width), np.uint8)[...] = x.argmax(1)


class _BatchEngine(_FakeEngineV3):
    _io = [
        ("labels", "out", (-1, SPEC.height, SPEC.width), np.uint8),
        ("input", "in", (-1, 3, SPEC.height, SPEC.width), np.float32),
    ]

    def create_execution_context(self):
        self.context = _BatchContext(self)
        return self.context


def _engine_file(tmp_path, batch):
    path = tmp_path / "batched.engine"
    path.write_bytes(b"read by the test double only")
    settings = {"precision": "fp16", "batch": batch}
    write_manifest(
        path,
        "engine",
        model="tiny",
        classes=["a", "b", "c"],
        preprocess=SPEC,
        output="labels",
        precision="fp16",
        build={"settings": settings, "plan": {}},
        tensorrt={"version": "10.3.0", "gpu": {"index": 0, "name": "Fake GPU", "compute_capability": [8, 7]}},
    )
    return path


def test_dynamic_batch_engine_runs_any_batch_up_to_the_profile_max(tmp_path):
    mem, engine = HostMemory(), _BatchEngine()
    be = trt_backend.TrtBackend(_engine_file(tmp_path, [1, 2, 4]), modules=(fake_tensorrt(engine), fake_cudart(mem)))
    assert be.max_batch == 4
    rng = np.random.default_rng(0)
    for n in (3, 3, 1, 4):
        x = rng.standard_normal(SPEC.input_shape(n)).astype(np.float32)
        np.testing.assert_array_equal(be.infer(x), x.argmax(1).astype(np.uint8))
    assert len(mem.blocks) == 4  # sized once, for the max batch
    # max (to size the buffers), 1 (the default), then only when the batch size changes
    assert [s[0] for s in engine.context.shape_calls] == [4, 1, 3, 1, 4]
    with pytest.raises(VssegError, match=r"in batches of 1 to 4, got a batch \(5, 3, 4, 6\)"):
        be.infer(np.zeros(SPEC.input_shape(5), np.float32))
    be.close()
    assert sorted(mem.freed) == sorted(mem.blocks)


def test_dynamic_batch_engine_without_a_recorded_profile_takes_batch_one(tmp_path):
    mem, engine = HostMemory(), _BatchEngine()
    be = trt_backend.TrtBackend(_engine_file(tmp_path, None), modules=(fake_tensorrt(engine), fake_cudart(mem)))
    assert be.max_batch == 1
    with pytest.raises(VssegError, match="in batches of 1 to 1"):
        be.infer(np.zeros(SPEC.input_shape(2), np.float32))
    be.close()
