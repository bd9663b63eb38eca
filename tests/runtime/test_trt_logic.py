"""TensorRT backend logic against a TEST DOUBLE of `tensorrt` and `cudart` (TensorRT is not installable here).

The double lets us test OUR code only: which API each TensorRT version gets (tensor names vs bindings),
the name → buffer mapping, shape fixing, the manifest refusals, the copy/execute/sync order and cleanup.
It verifies nothing about TensorRT itself; the real engine path needs a GPU machine with TensorRT.
"""

from __future__ import annotations

import ctypes
import importlib.util
import types

import numpy as np
import pytest

from tests.runtime.conftest import HostMemory, TensorTableEngine
from vsseg_edge.core.errors import MissingDependency, VssegError
from vsseg_edge.core.manifest import write_manifest
from vsseg_edge.core.preprocess import PreprocessSpec
from vsseg_edge.runtime.backends import trt as trt_backend

SPEC = PreprocessSpec(height=4, width=6)


# ---------------------------------------------------------------- test double of tensorrt / cudart ----
def fake_cudart(mem: HostMemory, gpu=b"Fake GPU", cc=(8, 7)):
    """Test double of cuda-python's runtime module (only the calls the backend makes)."""

    def memcpy(dst, src, n, kind, stream):
        mem.calls.append(("memcpy", kind))
        ctypes.memmove(dst, src, n)
        return (0,)

    def record(name, *ret):
        def fn(*args):
            mem.calls.append((name,))
            return (0, *ret)

        return fn

    return types.SimpleNamespace(
        cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h"),
        cudaMallocHost=mem.alloc,
        cudaMalloc=mem.alloc,
        cudaFree=mem.free,
        cudaFreeHost=mem.free,
        cudaMemcpyAsync=memcpy,
        cudaSetDevice=record("set_device"),
        cudaStreamCreate=record("stream_create", 7),
        cudaStreamSynchronize=record("sync"),
        cudaStreamDestroy=record("stream_destroy"),
        cudaGetDeviceProperties=lambda d: (0, types.SimpleNamespace(name=gpu, major=cc[0], minor=cc[1])),
        cudaGetDeviceCount=lambda: (0, 1),
    )


def _as_array(ptr, shape, dtype):
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * n).from_address(ptr), dtype=dtype).reshape(shape)


class _FakeContext:
    """Execution context double: labels = argmax over channels of the input (what an in-graph argmax does)."""

    def __init__(self, engine):
        self.engine, self.addresses, self.shapes, self.executed = engine, {}, {}, []

    # tensor-name API
    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return (1, SPEC.height, SPEC.width) if name == "labels" else self.shapes.get(name)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        self.executed.append(("v3", stream))
        self._run(self.addresses["input"], self.addresses["labels"])
        return True

    def _run(self, in_ptr, out_ptr):
        x = _as_array(in_ptr, SPEC.input_shape(1), np.float32)
        _as_array(out_ptr, (1, SPEC.height, SPEC.width), np.uint8)[...] = x.argmax(1)


class _FakeEngineV3(TensorTableEngine):
    """TensorRT >= 8.5 engine double: the OUTPUT is listed first, the input has dynamic H/W."""

    _io = [("labels", "out", (1, -1, -1), np.uint8), ("input", "in", (1, 3, -1, -1), np.float32)]

    def create_execution_context(self):
        self.context = _FakeContext(self)
        return self.context


def fake_tensorrt(engine, version="10.3.0"):
    """Test double of the `tensorrt` module; `nptype` maps the double's numpy dtypes to themselves."""
    runtime = types.SimpleNamespace(deserialize_cuda_engine=lambda blob: engine)
    return types.SimpleNamespace(
        __version__=version,
        TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Runtime=lambda logger: runtime,
        nptype=lambda dt: dt,
    )


@pytest.fixture
def engine_file(tmp_path):
    path = tmp_path / "tiny.engine"
    path.write_bytes(b"not a real engine: read by the test double only")
    write_manifest(
        path,
        "engine",
        model="tiny",
        classes=["a", "b", "c"],
        preprocess=SPEC,
        output="labels",
        precision="fp16",
        tensorrt={"version": "10.3.0", "gpu": {"index": 0, "name": "Fake GPU", "compute_capability": [8, 7]}},
    )
    return path


# ---------------------------------------------------------------------------------------- tests ----
def test_missing_tensorrt_is_a_one_line_install_hint():
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed on this machine; the missing-package path cannot be exercised")
    with pytest.raises(MissingDependency) as info:
        trt_backend.load_trt_modules()
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("tensorrt is not installed") and "pip install 'vsseg-edge[trt]'" in msg


def test_infer_maps_buffers_by_name_through_the_tensor_name_api(engine_file):
    mem, engine = HostMemory(), _FakeEngineV3()
    be = trt_backend.TrtBackend(engine_file, modules=(fake_tensorrt(engine), fake_cudart(mem)))
    assert be.output_kind == "labels" and be.device == "cuda:0 (Fake GPU)"
    x = np.random.default_rng(0).standard_normal(SPEC.input_shape(1)).astype(np.float32)
    for _ in range(2):  # buffers are reused: the second call allocates nothing
        np.testing.assert_array_equal(be.infer(x), x.argmax(1).astype(np.uint8))
    assert len(mem.blocks) == 4  # pinned + device for input and output, allocated once
    assert [c[0] for c in engine.context.executed] == ["v3", "v3"] and engine.context.executed[0][1] == 7
    assert engine.context.shapes["input"] == SPEC.input_shape(1)  # dynamic H/W fixed from the manifest
    assert set(engine.context.addresses) == {"input", "labels"}
    kinds = [c[1] if c[0] == "memcpy" else c[0] for c in mem.calls if c[0] in ("memcpy", "sync")]
    assert kinds[-3:] == ["h2d", "d2h", "sync"]
    be.close()
    assert sorted(mem.freed) == sorted(mem.blocks) and ("stream_destroy",) in mem.calls


def test_refuses_engine_from_another_tensorrt_or_gpu(engine_file):
    mem = HostMemory()
    with pytest.raises(VssegError, match=r"built with TensorRT 10.3.0, this machine has 10.7.0"):
        trt_backend.TrtBackend(engine_file, modules=(fake_tensorrt(_FakeEngineV3(), "10.7.0"), fake_cudart(mem)))
    with pytest.raises(VssegError, match=r"built for Fake GPU \(sm_87\), this GPU is Other GPU \(sm_86\)"):
        trt_backend.TrtBackend(
            engine_file, modules=(fake_tensorrt(_FakeEngineV3()), fake_cudart(mem, gpu=b"Other GPU", cc=(8, 6)))
        )


def test_wrong_input_dtype_is_refused_and_buffers_freed(engine_file):
    class Uint8Input(_FakeEngineV3):
        _io = [("labels", "out", (1, -1, -1), np.uint8), ("input", "in", (1, 3, -1, -1), np.uint8)]

    mem = HostMemory()
    with pytest.raises(VssegError, match="input 'input' is uint8, the manifest's preprocessing gives float32"):
        trt_backend.TrtBackend(engine_file, modules=(fake_tensorrt(Uint8Input()), fake_cudart(mem)))
    assert ("stream_destroy",) in mem.calls


def test_pinned_buffer_views_fp16_and_frees_host_when_device_alloc_fails():
    """np.ctypeslib has no ctypes type for float16: the buffer is a byte view, so FP16 I/O works."""
    mem = HostMemory()
    buf = trt_backend.HostDeviceBuffer(fake_cudart(mem), (2, 3), np.dtype(np.float16))
    buf.host[...] = 1.5
    assert buf.nbytes == 12 and buf.host.dtype == np.float16 and float(buf.host.sum()) == 9.0
    buf.free()
    buf.free()  # a second free releases nothing twice
    assert len(mem.freed) == 2
    cudart = fake_cudart(mem)
    cudart.cudaMalloc = lambda n: (types.SimpleNamespace(value=2, name="cudaErrorMemoryAllocation"), None)
    with pytest.raises(RuntimeError, match="cudaErrorMemoryAllocation"):
        trt_backend.HostDeviceBuffer(cudart, (4,), np.dtype(np.float32))
    assert len(mem.freed) == 3  # the pinned host half was released


def test_refused_input_shape_is_a_one_line_error(engine_file):
    class Refusing(_FakeEngineV3):
        def create_execution_context(self):
            ctx = super().create_execution_context()
            ctx.set_input_shape = lambda name, shape: False  # outside the optimisation profile
            return ctx

    mem = HostMemory()
    with pytest.raises(VssegError, match=r"refused input shape \(1, 3, 4, 6\)"):
        trt_backend.TrtBackend(engine_file, modules=(fake_tensorrt(Refusing()), fake_cudart(mem)))
    assert ("stream_destroy",) in mem.calls


def test_tensor_type_without_numpy_type_is_named(engine_file):
    class Bf16Output(_FakeEngineV3):
        _io = [("labels", "out", (1, -1, -1), "BF16"), ("input", "in", (1, 3, -1, -1), np.float32)]

    def nptype(dt):  # trt.nptype raises TypeError for BF16/FP8 (TensorRT 10/11 __init__.py)
        if dt == "BF16":
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return dt

    trt = fake_tensorrt(Bf16Output())
    trt.nptype = nptype
    with pytest.raises(VssegError, match="tensor 'labels' has TensorRT type BF16, which has no numpy type"):
        trt_backend.TrtBackend(engine_file, modules=(trt, fake_cudart(HostMemory())))


def test_cuda_status_from_enum_or_int():
    from vsseg_edge.engine.device import cuda_failed

    assert not cuda_failed(0) and cuda_failed(2)
    assert not cuda_failed(types.SimpleNamespace(value=0)) and cuda_failed(types.SimpleNamespace(value=700))


def test_broken_tensorrt_install_is_a_one_line_error(monkeypatch):
    """A tensorrt wheel whose libraries are missing raises OSError at import, not ImportError."""
    import builtins

    from vsseg_edge.engine.device import tensorrt_module

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "tensorrt":
            raise OSError("libnvinfer.so.10: cannot open shared object file\nmore")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependency) as info:
        tensorrt_module()
    assert "\n" not in str(info.value) and "installed but cannot be imported (OSError: libnvinfer" in str(info.value)
