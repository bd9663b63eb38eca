"""TensorRT backend: a serialized engine run through cuda-python, following NVIDIA's documented API.

- TensorRT 8.6 / 10 / 11: tensor-name based I/O (`num_io_tensors`, `get_tensor_name/mode/shape/dtype`,
  `set_input_shape`, `set_tensor_address`, `execute_async_v3(stream_handle)`), which 8.5 introduced and 10
  made the only one. The binding API (`num_bindings`, `binding_is_input`, `execute_async_v2`) exists up to
  8.6 only (removed in 10.0) and is kept as the fallback for an engine object without `num_io_tensors`.
  `set_input_shape` and `set_tensor_address` return False on a bad shape/address: checked, one-line error.
- Pinned host buffers (cudaMallocHost, viewed as bytes then as the tensor's dtype, so FP16 I/O works too) and
  device buffers (cudaMalloc) are allocated ONCE for the largest batch (1, or the max of a dynamic-batch engine's
  profile as its manifest records it, `build-engine --batch`); each `infer` of N frames sets the input shape when
  N changes and does async H2D copy of N items → execute → async D2H copy of N items on one CUDA stream
  (`int(stream)` is the handle TensorRT takes), then one sync.
- The runtime does not call `infer` on CUDA: `device_stage` (trt_stage.py) runs frames through the engine with
  uploads, executions and downloads of consecutive frames on three streams, from slots of its own buffers.
- An engine is loaded only beside a manifest whose TensorRT version and GPU match the installed ones
  (`vsseg_edge.engine.cache.check_engine_manifest`, manifest key `tensorrt: {version, gpu}`).

TensorRT cannot be installed on the machines this project is developed on: this module is checked there
only against a test double of the `tensorrt`/`cudart` modules (tests/runtime/test_trt_logic.py), which tests
OUR logic (API choice per version, name→buffer mapping, manifest refusals) and verifies nothing about
TensorRT itself. All tensorrt / cuda-python imports go through `load_trt_modules`.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import VssegError
from ...core.manifest import manifest_preprocess, read_manifest
from ...engine.cache import check_engine_manifest
from . import Backend, output_kind_of


def load_trt_modules():
    """(tensorrt, cudart) through the engine room's one import helper (one-line errors with the install)."""
    from ...engine.device import cudart, tensorrt_module

    return tensorrt_module(), cudart()


def cuda_call(result):
    """cuda-python returns (err, *values): raise on error, return the value(s)."""
    from ...engine.device import cuda_error_name, cuda_failed

    err, values = result[0], result[1:]
    if cuda_failed(err):
        raise RuntimeError(f"CUDA error {cuda_error_name(err)}")
    return values[0] if len(values) == 1 else (values or None)


def numpy_dtype(trt, trt_dtype, name: str, artifact: str) -> np.dtype:
    """trt.nptype, with a one-line error for the types it has no numpy type for (BF16, FP8, INT4, FP4)."""
    try:
        return np.dtype(trt.nptype(trt_dtype))
    except TypeError:
        raise VssegError(
            f"{artifact}: tensor {name!r} has TensorRT type {trt_dtype}, which has no numpy type; "
            "export the model with FP32/uint8 inputs and FP32/integer outputs"
        ) from None


@dataclass
class IOTensor:
    """One engine input/output: its name, binding index, direction, shape and numpy dtype."""

    name: str
    index: int
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype


def io_tensors(engine, trt, artifact: str = "engine") -> list[IOTensor]:
    """List the engine's I/O with the tensor-name API (TRT >= 8.5) or the binding API (older)."""
    if hasattr(engine, "num_io_tensors"):
        out = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = numpy_dtype(trt, engine.get_tensor_dtype(name), name, artifact)
            out.append(IOTensor(name, i, is_input, tuple(engine.get_tensor_shape(name)), dtype))
        return out
    return [
        IOTensor(
            engine.get_binding_name(i),
            i,
            bool(engine.binding_is_input(i)),
            tuple(engine.get_binding_shape(i)),
            numpy_dtype(trt, engine.get_binding_dtype(i), engine.get_binding_name(i), artifact),
        )
        for i in range(engine.num_bindings)
    ]


class HostDeviceBuffer:
    """A pinned host array and a device allocation of the same size, made once and freed in `free`."""

    def __init__(self, cudart, shape: tuple[int, ...], dtype: np.dtype):
        self._cudart = cudart
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self._host_ptr = self.device = None
        self._host_ptr = cuda_call(cudart.cudaMallocHost(self.nbytes))
        # a byte view first: np.ctypeslib has no ctypes type for float16, so view the bytes as the dtype
        raw = ctypes.cast(ctypes.c_void_p(self._host_ptr), ctypes.POINTER(ctypes.c_ubyte))
        self.host = np.ctypeslib.as_array(raw, (self.nbytes,)).view(dtype).reshape(shape)
        try:
            self.device = cuda_call(cudart.cudaMalloc(self.nbytes))
        except Exception:
            self.free()
            raise

    def free(self) -> None:
        """Release both allocations (each once; safe to call again)."""
        device, host = self.device, self._host_ptr
        self.device = self._host_ptr = None
        if device is not None:
            cuda_call(self._cudart.cudaFree(device))
        if host is not None:
            cuda_call(self._cudart.cudaFreeHost(host))


class TrtBackend(Backend):
    """Deserialize an engine (after the manifest check) and run inference of up to `max_batch` frames on one
    CUDA stream."""

    name = "trt"

    def __init__(self, path: str | Path, *, device: int = 0, modules=None):
        path = Path(path)
        self.artifact = str(path)
        man = read_manifest(path, kind="engine", verify=True)
        self.preprocess_spec = manifest_preprocess(man, str(path))
        self.output_kind = output_kind_of(man, str(path))
        self.classes, self.palette = list(man.get("classes", [])), man.get("palette")
        self._profile = ((man.get("build") or {}).get("settings") or {}).get("batch")  # [min, opt, max] or None
        trt, cudart = modules or load_trt_modules()
        self._trt, self._cudart = trt, cudart
        from ...engine.device import gpu_info, use_device

        gpu = gpu_info(device, cudart)
        use_device(device, cudart)
        self.device = f"cuda:{device} ({gpu.name})"
        # the engine room's check (one rule for builder, cache and runtime): same TensorRT, same GPU model
        here = {"name": gpu.name, "compute_capability": gpu.compute_capability}
        check_engine_manifest(man, trt.__version__, here, str(path))
        self._buffers: dict[str, HostDeviceBuffer] = {}
        self._stream = None
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise VssegError(f"{path}: TensorRT could not deserialize this engine (see the TensorRT log above)")
        self._context = self._engine.create_execution_context()
        if self._context is None:  # TensorRT returns None when it cannot allocate the activation memory
            raise VssegError(f"{path}: TensorRT could not create an execution context (GPU memory?)")
        self._stream = cuda_call(cudart.cudaStreamCreate())
        try:
            self._setup_io(path)
        except Exception:
            self.close()
            raise

    def _setup_io(self, path: Path) -> None:
        """Fix the input shape to the largest batch of the manifest's spec, allocate every buffer once for it,
        then fix batch 1 (an `infer` of another batch size changes it)."""
        tensors = io_tensors(self._engine, self._trt, path.name)
        inputs = [t for t in tensors if t.is_input]
        outputs = [t for t in tensors if not t.is_input]
        if len(inputs) != 1 or not outputs:
            raise VssegError(
                f"{path.name}: expected one input and at least one output, got "
                f"{[t.name for t in inputs]} / {[t.name for t in outputs]}"
            )
        self._input, self._output = inputs[0], outputs[0]
        want = self.preprocess_spec.input_shape(1)
        if self._input.dtype != np.dtype(self.preprocess_spec.dtype):
            raise VssegError(
                f"{path.name}: input {self._input.name!r} is {self._input.dtype}, the manifest's "
                f"preprocessing gives {self.preprocess_spec.dtype}"
            )
        if any(d not in (-1, w) for d, w in zip(self._input.shape, want)) or len(self._input.shape) != 4:
            raise VssegError(f"{path.name}: input shape {self._input.shape} does not fit the manifest's {want}")
        v3 = hasattr(self._engine, "num_io_tensors")
        self._v3, self._batch = v3, None
        self.max_batch = int(self._profile[2]) if self._input.shape[0] == -1 and self._profile else 1
        full = (self.max_batch, *want[1:])
        if -1 in self._input.shape:
            self._set_batch(self.max_batch)
        shapes = {t.name: (full if t.is_input else self._out_shape(t, v3)) for t in tensors}
        for t in tensors:
            self._buffers[t.name] = HostDeviceBuffer(self._cudart, tuple(shapes[t.name]), t.dtype)
            if v3 and self._context.set_tensor_address(t.name, int(self._buffers[t.name].device)) is False:
                raise VssegError(f"{path.name}: TensorRT refused the device address of {t.name!r}")
        self._bindings = [int(self._buffers[t.name].device) for t in sorted(tensors, key=lambda t: t.index)]
        if -1 in self._input.shape:
            self._set_batch(1)

    def _set_batch(self, n: int) -> None:
        """Set the input shape for a batch of `n` (only for an input with dynamic dimensions)."""
        shape = (n, *self.preprocess_spec.input_shape(1)[1:])
        ok = (
            self._context.set_input_shape(self._input.name, shape)
            if self._v3
            else self._context.set_binding_shape(self._input.index, shape)
        )
        if ok is False:  # TensorRT returns False for a shape outside the engine's optimisation profile
            raise VssegError(
                f"{Path(self.artifact).name}: TensorRT refused input shape {shape} for "
                f"{self._input.name!r} (outside the engine's optimisation profile?); rebuild with "
                f"--batch covering {n}"
            )
        self._batch = n

    def _out_shape(self, t: IOTensor, v3: bool) -> tuple[int, ...]:
        shape = tuple(self._context.get_tensor_shape(t.name) if v3 else self._context.get_binding_shape(t.index))
        if any(d < 0 for d in shape):
            raise VssegError(f"{self.artifact}: output {t.name!r} shape {shape} is unresolved after fixing the input")
        return shape

    def io_buffers(self) -> tuple[tuple, tuple]:
        """(name, shape, dtype) of the input and of the first output for ONE frame: what a device stage allocates
        per slot (this backend's own buffers hold up to `max_batch` frames)."""
        inp, out = self._buffers[self._input.name], self._buffers[self._output.name]
        one = lambda shape: (1, *shape[1:])  # noqa: E731
        return (
            (self._input.name, one(inp.host.shape), inp.host.dtype),
            (self._output.name, one(out.host.shape), out.host.dtype),
        )

    def execute_on(self, stream, addresses: dict[str, int] | None = None) -> None:
        """Enqueue one execution on `stream`: the named tensors at `addresses`, the others in this backend's buffers."""
        own = {name: int(buf.device) for name, buf in self._buffers.items()}
        where = {**own, **{k: int(v) for k, v in (addresses or {}).items()}}
        if self._v3:
            for name, ptr in where.items():
                if self._context.set_tensor_address(name, ptr) is False:
                    raise VssegError(f"{self.artifact}: TensorRT refused the device address of {name!r}")
            ok = self._context.execute_async_v3(int(stream))
        else:
            names = {t.index: t.name for t in io_tensors(self._engine, self._trt, self.artifact)}
            ok = self._context.execute_async_v2([where[names[i]] for i in sorted(names)], int(stream))
        if not ok:
            raise RuntimeError(f"{self.artifact}: TensorRT execution failed")

    def device_stage(self, *, lut, alpha: float, overlay: bool, slots: int, required: bool = False):
        """Frames through the engine on upload / compute / download streams (trt_stage.py)."""
        from .trt_stage import TrtDeviceStage

        if self._batch != 1 and -1 in self._input.shape:
            self._set_batch(1)  # the stage runs one frame per execution
        return TrtDeviceStage(self, lut=lut, alpha=alpha, overlay=overlay, slots=slots)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        cudart, stream = self._cudart, self._stream
        inp, out = self._buffers[self._input.name], self._buffers[self._output.name]
        n = batch.shape[0] if batch.ndim == inp.host.ndim else 0
        if batch.shape[1:] != inp.host.shape[1:] or not 1 <= n <= self.max_batch:
            raise VssegError(
                f"{self.artifact}: engine input is {inp.host.shape[1:]} in batches of 1 to "
                f"{self.max_batch}, got a batch {batch.shape}"
            )
        if n != self._batch and -1 in self._input.shape:
            self._set_batch(n)
        np.copyto(inp.host[:n], batch)
        n_in, n_out = inp.nbytes // self.max_batch * n, out.nbytes // self.max_batch * n  # batch is the first dim
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(cudart.cudaMemcpyAsync(inp.device, inp.host.ctypes.data, n_in, h2d, stream))
        self.execute_on(stream)  # this backend's own buffers (a device stage points the context at its slots)
        cuda_call(cudart.cudaMemcpyAsync(out.host.ctypes.data, out.device, n_out, d2h, stream))
        cuda_call(cudart.cudaStreamSynchronize(stream))
        return out.host[:n].copy()

    def close(self) -> None:
        if self._stream is not None and self._buffers:
            try:  # a failed infer may leave copies queued: let them finish before their memory goes
                cuda_call(self._cudart.cudaStreamSynchronize(self._stream))
            except RuntimeError:
                pass
        for buf in self._buffers.values():
            buf.free()
        self._buffers = {}
        if self._stream is not None:
            cuda_call(self._cudart.cudaStreamDestroy(self._stream))
            self._stream = None
        self._context = self._engine = self._runtime = None
