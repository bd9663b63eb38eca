"""onnxruntime backend: FP32 or Q/DQ INT8 ONNX, on the TensorRT, CUDA or CPU execution provider as installed.

A TensorRT-flavour Q/DQ model (int8 activations, zero point 0) is slow on the CPU provider, which fuses
Q/DQ into integer kernels mainly for uint8 activations. When such a model runs on the CPU provider, its
activation Q/DQ are shifted to uint8 in memory (`calib.zero_point.shift_activations_to_uint8`, exact), the
file is left untouched, and `describe()` says so. The rewrite is exact as Q/DQ arithmetic; onnxruntime's
fused integer kernels then round their own way (measured in benchmarks/reports/int8_ort_cpu_vnni.md: 99.56 %
argmax agreement with exact Q/DQ arithmetic on ESPNet CamVid with VNNI, 98.0 % on AVX2 without it, where the
u8×s8 kernel can saturate). `shift_int8=False` loads the file as it is (to compare, or where that matters).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import VssegError, require
from ...core.manifest import manifest_preprocess, read_manifest
from . import Backend, output_kind_of

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_DTYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}


def _check_onnx(path: Path) -> None:
    """onnx.checker on the file when the onnx package is present (an edge box may run ORT without it)."""
    try:
        import onnx
    except ImportError:
        return
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise VssegError(f"{path}: not a valid ONNX model ({str(exc).splitlines()[0][:160]})") from None


class OrtBackend(Backend):
    """One onnxruntime InferenceSession with ORT_ENABLE_ALL; `threads` sets intra-op threads (0 = ORT's choice);
    `shift_int8` (default on) shifts int8 activation Q/DQ to uint8 in memory on the CPU provider."""

    name = "ort"

    def __init__(self, path: str | Path, *, providers: list[str] | None = None, threads: int = 0,
                 shift_int8: bool = True):
        ort = require("onnxruntime", extra="edge")
        path = Path(path)
        self.artifact = str(path)
        man = read_manifest(path, kind=("onnx", "qdq_onnx"))
        self.preprocess_spec = manifest_preprocess(man, str(path))
        self.output_kind = output_kind_of(man, str(path))
        self.classes, self.palette = list(man.get("classes", [])), man.get("palette")
        _check_onnx(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in PREFERRED_PROVIDERS if p in available]
        missing = [p for p in providers if p not in available]
        if missing:
            raise VssegError(f"{path.name}: execution provider(s) {missing} not in this onnxruntime ({available})")
        self.shifted = 0  # activation QuantizeLinear nodes shifted from int8 to uint8 (CPU provider only)
        # only Q/DQ artifacts can hold int8 activations: an FP32 ONNX is not parsed a second time
        source = self._cpu_source(path, providers) if shift_int8 and man["kind"] == "qdq_onnx" else str(path)
        try:
            self._session = ort.InferenceSession(source, opts, providers=list(providers))
        except Exception as exc:  # ORT raises its own pybind exception types
            raise VssegError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:160]})") from None
        self.device = self._session.get_providers()[0].replace("ExecutionProvider", "")
        self._check_io(path)

    def _cpu_source(self, path: Path, providers: list[str]) -> str | bytes:
        """The file, or, for int8-activation Q/DQ on the CPU provider, the uint8-shifted model as bytes."""
        if not providers or providers[0] != "CPUExecutionProvider":
            return str(path)
        try:
            import onnx

            from ...calib.zero_point import (
                int8_activation_quantizers,
                shift_activations_to_uint8,
            )
        except ImportError:  # an edge box may run onnxruntime without the onnx package
            return str(path)
        model = onnx.load(str(path))
        found = int8_activation_quantizers(model)
        if not found:
            return str(path)
        self.shifted = len(found)
        return shift_activations_to_uint8(model).SerializeToString()

    def describe(self) -> str:
        text = super().describe()
        if self.shifted:
            text += (f", int8 activation Q/DQ shifted to uint8 in memory ({self.shifted} QuantizeLinear; "
                     "same Q/DQ arithmetic, onnxruntime's integer kernels)")
        return text

    def _check_io(self, path: Path) -> None:
        """The graph's input must be what the manifest's preprocessing produces (dtype, layout, static size)."""
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise VssegError(f"{path.name}: expected one input, the graph has {len(inputs)}")
        inp, spec = inputs[0], self.preprocess_spec
        self._input_name = inp.name
        if inp.type != _DTYPES[spec.dtype]:
            raise VssegError(f"{path.name}: input {inp.name!r} is {inp.type}, the manifest's preprocessing "
                             f"gives {spec.dtype}")
        shape = list(inp.shape)
        expected = list(spec.input_shape(1))
        if len(shape) != 4:
            raise VssegError(f"{path.name}: input {inp.name!r} has rank {len(shape)}, expected 4 ({spec.layout})")
        for got, want in zip(shape[1:], expected[1:]):
            if isinstance(got, int) and got != want:
                raise VssegError(f"{path.name}: input shape {shape} does not match the manifest's "
                                 f"{spec.layout.upper()} {expected}")
        hw = shape[2:] if spec.layout == "nchw" else shape[1:3]
        self.dynamic_size = not all(isinstance(d, int) for d in hw)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: batch})[0]

    def close(self) -> None:
        self._session = None
