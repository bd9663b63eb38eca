"""The TensorRT device stage against a TEST DOUBLE of `tensorrt` and cuda-python (TensorRT is not installable here).

What is checked is OUR logic: which stream each copy and execution goes to, that each stream waits for the event
the previous one recorded, that the engine's tensor addresses point at the frame's slot, that a camera-frame
engine gets the frame as it is (no host preprocessing), slot reuse and cleanup. The double runs every call at
once (host memory, memmove), so it says nothing about TensorRT or real overlap; the GPU check does.
"""

from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest

from tests.runtime.conftest import HostMemory, TensorTableEngine, make_frames
from vsseg_edge.core.labels import CITYSCAPES
from vsseg_edge.core.manifest import write_manifest
from vsseg_edge.core.preprocess import PreprocessSpec, labels_to_frame_size
from vsseg_edge.runtime.backends import trt as trt_backend
from vsseg_edge.runtime.hud import bgr_lut
from vsseg_edge.runtime.pipeline import Pipeline
from vsseg_edge.runtime.sinks import MaskSink
from vsseg_edge.runtime.sources import open_source
from vsseg_edge.runtime.stage import open_stage

CAMERA = PreprocessSpec(height=64, width=128, channel_order="bgr", dtype="uint8", layout="nhwc")  # frames as they are
FLOAT = PreprocessSpec(height=32, width=64)  # host preprocessing: resize + normalise
GPU = {"index": 0, "name": "Fake GPU", "compute_capability": [8, 7]}


class Cuda(HostMemory):
    """cuda-python double: memory is host memory, every call runs at once and is logged with its stream."""

    def __init__(self):
        super().__init__()
        self.log = []
        self.kind = types.SimpleNamespace(cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h")
        self._n = 0

    def module(self):
        def ok(name, *ret):
            def fn(*args):
                self.log.append((name, *args))
                return (0, *ret)

            return fn

        def new(kind):
            def fn(*args):  # streams are handles TensorRT takes as int(stream); events are opaque objects
                self._n += 1
                return 0, (1000 + self._n if kind == "stream" else f"event{self._n}")

            return fn

        def memcpy(dst, src, n, kind, stream):
            self.log.append(("memcpy", kind, stream))
            ctypes.memmove(dst, src, n)
            return (0,)

        return types.SimpleNamespace(
            cudaMemcpyKind=self.kind,
            cudaMallocHost=self.alloc,
            cudaMalloc=self.alloc,
            cudaFree=self.free,
            cudaFreeHost=self.free,
            cudaMemcpyAsync=memcpy,
            cudaSetDevice=ok("set_device"),
            cudaStreamCreate=new("stream"),
            cudaStreamSynchronize=ok("sync"),
            cudaStreamDestroy=ok("stream_destroy"),
            cudaEventCreate=new("event"),
            cudaEventDestroy=ok("event_destroy"),
            cudaEventRecord=ok("record"),
            cudaStreamWaitEvent=ok("wait"),
            cudaEventSynchronize=ok("event_sync"),
            cudaEventElapsedTime=lambda a, b: (0, 0.25),
            cudaGetDeviceProperties=lambda d: (0, types.SimpleNamespace(name=b"Fake GPU", major=8, minor=7)),
            cudaGetDeviceCount=lambda: (0, 1),
        )


def _array(ptr, shape, dtype):
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * n).from_address(ptr), dtype=dtype).reshape(shape)


class Engine(TensorTableEngine):
    """Engine double with tensor-name I/O: labels = (channel 2 of the input > threshold), an in-graph 'model'."""

    def __init__(self, spec: PreprocessSpec):
        self.spec = spec
        self._io = [
            ("input", "in", spec.input_shape(1), np.dtype(spec.dtype)),
            ("labels", "out", (1, spec.height, spec.width), np.dtype(np.uint8)),
        ]
        self.inputs_seen: list[np.ndarray] = []

    def create_execution_context(self):
        engine = self

        class Context:
            addresses: dict = {}

            def get_tensor_shape(self, name):
                return engine.get_tensor_shape(name)

            def set_tensor_address(self, name, ptr):
                self.addresses = {**self.addresses, name: ptr}
                return True

            def execute_async_v3(self, stream):
                engine.executed.append((stream, dict(self.addresses)))
                x = _array(self.addresses["input"], engine.spec.input_shape(1), engine.spec.dtype)
                engine.inputs_seen.append(x.copy())
                channel = x[0, ..., 2] if engine.spec.layout == "nhwc" else x[0, 2]
                threshold = 128 if engine.spec.dtype == "uint8" else 0.0
                _array(self.addresses["labels"], (1, engine.spec.height, engine.spec.width), np.uint8)[0] = (
                    channel > threshold
                )
                return True

        self.executed = []
        return Context()


def open_trt(tmp_path, spec: PreprocessSpec, cuda: Cuda):
    path = tmp_path / "m.engine"
    path.write_bytes(b"read by the test double only")
    write_manifest(
        path,
        "engine",
        model="m",
        classes=list(CITYSCAPES.classes),
        preprocess=spec,
        output="labels",
        precision="fp16",
        tensorrt={"version": "10.3.0", "gpu": GPU},
    )
    engine = Engine(spec)
    trt = types.SimpleNamespace(
        __version__="10.3.0",
        TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Runtime=lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda blob: engine),
        nptype=lambda dt: dt,
    )
    return trt_backend.TrtBackend(path, modules=(trt, cuda.module())), engine


def test_camera_frame_engine_gets_the_frame_as_it_is_on_three_streams(tmp_path):
    cuda = Cuda()
    be, engine = open_trt(tmp_path, CAMERA, cuda)
    stage = open_stage(be, mode="auto", lut=bgr_lut(CITYSCAPES), alpha=0.5, overlay=True, slots=3)
    assert stage.kind == "device"
    up, compute, down = stage._streams["upload"], stage._streams["compute"], stage._streams["download"]
    frames = make_frames(4)
    cuda.log.clear()
    pending = [stage.submit(f) for f in frames[:3]]  # three in flight: three slots, three buffers
    assert stage.in_flight == 3 and len({p._slot.inp.device for p in pending}) == 3
    results = [p.result() for p in pending] + [stage.submit(frames[3]).result()]
    for frame, seen, res in zip(frames, engine.inputs_seen, results):
        np.testing.assert_array_equal(seen[0], frame)  # no host resize / normalise / channel flip
        np.testing.assert_array_equal(res.labels, (frame[..., 2] > 128).astype(np.uint8))
        assert res.vis.shape == frame.shape and res.times["preprocess_ms"] == 0.0
        assert res.times["infer_ms"] == 0.25 and res.times["upload_ms"] >= 0.25
    # per frame: upload on its stream, compute waits for the upload's event, download waits for the compute's
    per_frame = [c for c in cuda.log if c[0] in ("memcpy", "wait")][:4]
    ev_u1 = pending[0]._slot.ev["u1"]
    assert per_frame == [
        ("memcpy", "h2d", up),
        ("wait", compute, ev_u1, 0),
        ("wait", down, pending[0]._slot.ev["c1"], 0),
        ("memcpy", "d2h", down),
    ]
    assert [stream for stream, _ in engine.executed] == [compute] * 4
    assert [a["input"] for _, a in engine.executed[:3]] == [p._slot.inp.device for p in pending]
    stage.close()
    assert sum(1 for c in cuda.log if c[0] == "event_destroy") == 3 * 6
    blocks = len(cuda.blocks)
    be.infer(np.ascontiguousarray(frames[0][None]))  # the backend's own path still uses its own buffers
    assert len(cuda.blocks) == blocks and engine.executed[-1][1]["input"] == be._buffers["input"].device
    be.close()


def test_other_engines_get_core_preprocess_on_the_host(tmp_path):
    from vsseg_edge.core.preprocess import preprocess

    cuda = Cuda()
    be, engine = open_trt(tmp_path, FLOAT, cuda)
    stage = open_stage(be, mode="device", lut=bgr_lut(CITYSCAPES), alpha=0.5, overlay=False, slots=2)
    frame = make_frames(1)[0]
    res = stage.submit(frame).result()
    np.testing.assert_array_equal(engine.inputs_seen[0], preprocess(frame, FLOAT))
    want = labels_to_frame_size((preprocess(frame, FLOAT)[0, 2] > 0).astype(np.uint8), frame.shape[:2])
    np.testing.assert_array_equal(res.labels, want)
    assert res.vis is None and res.times["preprocess_ms"] > 0
    stage.close()
    be.close()


def test_pipeline_with_the_trt_stage(tmp_path, video_file):
    cuda = Cuda()
    be, engine = open_trt(tmp_path, CAMERA, cuda)
    result = Pipeline(open_source(str(video_file)), be, [MaskSink(tmp_path / "m")], handle_signals=False).run()
    assert result.frames == 12 and len(engine.executed) == 12
    assert all(r["upload_ms"] > 0 and r["infer_ms"] == 0.25 for r in result.records)
    assert sum(1 for c in cuda.log if c[0] == "stream_destroy") == 3  # the pipeline closed the stage
    be.close()


def test_a_failed_slot_allocation_frees_what_was_made(tmp_path):
    cuda = Cuda()
    be, _ = open_trt(tmp_path, CAMERA, cuda)
    calls = {"n": 0}
    real = cuda.alloc

    def alloc(nbytes):
        calls["n"] += 1
        return (
            real(nbytes)
            if calls["n"] <= 3
            else (types.SimpleNamespace(value=2, name="cudaErrorMemoryAllocation"), None)
        )

    be._cudart.cudaMalloc = be._cudart.cudaMallocHost = alloc
    before = set(cuda.blocks)
    with pytest.raises(RuntimeError, match="cudaErrorMemoryAllocation"):
        open_stage(be, mode="device", lut=bgr_lut(CITYSCAPES), alpha=0.5, overlay=False, slots=2)
    made = set(cuda.blocks) - before
    assert len(made) == 3 and made <= set(cuda.freed)  # the slot's input (host, device) and output host half
    assert sum(1 for c in cuda.log if c[0] == "stream_destroy") == 3
