"""The one place that imports TensorRT and cuda-python, and the CUDA device an engine is built for or runs on.

The engine builder, the TensorRT runtime backend and `vsseg-edge doctor` all import through `tensorrt_module`
and `cudart`, which raise a one-line MissingDependency naming the package and how to install it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import MissingDependency, VssegError

TRT_INSTALL = "pip install 'vsseg-edge[trt]' (desktop) or the JetPack python3-libnvinfer package (Jetson)"


def tensorrt_module():
    """`import tensorrt`, or a one-line MissingDependency with the install hint."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependency(f"tensorrt is not installed ({exc}); install it with: {TRT_INSTALL}") from None
    except Exception as exc:  # e.g. OSError: the wheel is there but libnvinfer (tensorrt_libs) is missing
        first = (str(exc).splitlines() or [""])[0][:160]
        raise MissingDependency(
            f"tensorrt is installed but cannot be imported ({type(exc).__name__}: {first}); reinstall it: {TRT_INSTALL}"
        ) from None
    return tensorrt


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "compute_capability": list(self.compute_capability)}


def cudart():
    """cuda-python's runtime module (`cuda.bindings.runtime` on 12.6+, `cuda.cudart` before)."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as runtime

        return runtime
    except ImportError:
        raise MissingDependency(
            "cuda-python is not installed; install it with: pip install 'vsseg-edge[trt]' "
            "(JetPack: the cuda-python matching its CUDA version)"
        ) from None


def cuda_failed(err) -> bool:
    """True when a cuda-python status is not cudaSuccess (an enum with `.value` in cuda-python 11-13, or an int)."""
    return int(getattr(err, "value", err)) != 0


def cuda_error_name(err) -> str:
    return str(getattr(err, "name", err))


def use_device(index: int, rt=None) -> None:
    """cudaSetDevice(index): TensorRT builds and runs on the runtime API's current device. `rt` is the CUDA
    runtime module (default: cuda-python's; the TensorRT backend passes the one it was opened with)."""
    (err,) = (rt or cudart()).cudaSetDevice(index)
    if cuda_failed(err):
        raise VssegError(f"--device {index}: cudaSetDevice failed ({cuda_error_name(err)})")


def gpu_info(index: int = 0, rt=None) -> GpuInfo:
    """Name and compute capability of CUDA device `index` (one-line errors for no or another device)."""
    rt = rt or cudart()
    err, count = rt.cudaGetDeviceCount()
    if cuda_failed(err) or count == 0:
        raise VssegError(f"no CUDA device is visible ({cuda_error_name(err)}); TensorRT needs an NVIDIA GPU")
    if not 0 <= index < count:
        raise VssegError(f"--device {index}: this machine has CUDA devices 0..{count - 1}")
    err, prop = rt.cudaGetDeviceProperties(index)
    if cuda_failed(err):
        raise VssegError(f"cudaGetDeviceProperties({index}) failed: {cuda_error_name(err)}")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(index, name.strip("\x00").strip(), (int(prop.major), int(prop.minor)))


class DeviceBuffer:
    """One device allocation reused for every upload (the legacy calibrator's input), freed on delete."""

    def __init__(self, nbytes: int):
        self.rt = cudart()
        self.ptr = None
        err, ptr = self.rt.cudaMalloc(nbytes)
        if cuda_failed(err):
            raise VssegError(f"cudaMalloc({nbytes}) failed: {cuda_error_name(err)}")
        self.ptr = ptr
        self.nbytes = nbytes

    def upload(self, host) -> int:
        """Copy a contiguous host array into the buffer; return the device address."""
        if host.nbytes > self.nbytes:
            raise ValueError(f"batch of {host.nbytes} bytes does not fit the {self.nbytes}-byte device buffer")
        (err,) = self.rt.cudaMemcpy(
            self.ptr, host.ctypes.data, host.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        )
        if cuda_failed(err):
            raise VssegError(f"cudaMemcpy to the calibration buffer failed: {cuda_error_name(err)}")
        return int(self.ptr)

    def __del__(self):
        ptr = getattr(self, "ptr", None)
        if ptr is not None:
            self.ptr = None
            self.rt.cudaFree(ptr)
