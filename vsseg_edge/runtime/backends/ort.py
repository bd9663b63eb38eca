"""onnxruntime backend: FP32 or Q/DQ INT8 ONNX, on the TensorRT, CUDA or CPU execution provider as installed.

`ort_session` is the project's one constructor of onnxruntime sessions (runtime, accuracy gate, export
parity and the benchmark drivers all come through it), so graph optimisation, threads and providers are
decided in one place:

- default: full graph optimisation (ORT_ENABLE_ALL), which is what a deployment runs: onnxruntime fuses
  Q/DQ pairs into its integer kernels;
- `exact_qdq`: no graph optimisation, so Q/DQ nodes are computed as written (float arithmetic on
  quantised values). TensorRT accumulates int8 products in int32, while onnxruntime's u8×s8 kernels on
  x86 without VNNI sum pairs of products in int16 and can saturate; a TensorRT-flavour model is judged
  this way.

A TensorRT-flavour Q/DQ model (int8 activations, zero point 0) is slow on the CPU provider, which fuses
Q/DQ into integer kernels mainly for uint8 activations. When such a model runs on the CPU provider with
optimisation, its activation Q/DQ are shifted to uint8 in memory (`onnx_graph.shift_activations_to_uint8`,
exact as Q/DQ arithmetic), the file is left untouched, and `describe()` says so; onnxruntime's fused
integer kernels then round their own way. `shift_int8=False` loads the file as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import VssegError, require
from ...core.manifest import manifest_preprocess, read_manifest
from ...core.preprocess import PreprocessSpec
from . import Backend, output_kind_of

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU = ("CPUExecutionProvider",)
_DTYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}


def ort_session(model, *, threads: int = 0, exact_qdq: bool = False, providers=CPU, where: str | None = None,
                profile: str | None = None):
    """An onnxruntime InferenceSession for `model` (a path, an `onnx.ModelProto` or serialized bytes).

    `threads` sets intra-op threads (0: onnxruntime's choice); `exact_qdq` turns graph optimisation off (see
    the module docstring); `providers` defaults to the CPU provider; `profile` (a file prefix) switches
    onnxruntime's profiler on (`session.end_profiling()` returns the JSON's path). Failures are one-line
    VssegErrors that start with `where` (default: the path, or "in-memory ONNX model").
    """
    ort = require("onnxruntime", pip_name="onnxruntime")
    opts = ort.SessionOptions()
    if profile:
        opts.enable_profiling, opts.profile_file_prefix = True, str(profile)
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if exact_qdq
                                     else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    source = bytes(source) if isinstance(source, (bytes, bytearray)) else str(source)
    where = where or ("in-memory ONNX model" if isinstance(source, bytes) else source)
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise VssegError(f"{where}: execution provider(s) {missing} not in this onnxruntime ({available})")
    try:
        return ort.InferenceSession(source, opts, providers=list(providers))
    except Exception as exc:  # ORT raises its own pybind exception types
        raise VssegError(f"{where}: onnxruntime cannot load it ({str(exc).splitlines()[0][:160]})") from None


def preferred_providers() -> list[str]:
    """The execution providers of this onnxruntime, best first (TensorRT, CUDA, CPU)."""
    ort = require("onnxruntime", pip_name="onnxruntime")
    available = ort.get_available_providers()
    return [p for p in PREFERRED_PROVIDERS if p in available]


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
    """One onnxruntime session over an ONNX model whose preprocessing, output kind and classes are known.

    `OrtBackend.open(path)` reads them from the file's manifest; the constructor takes them directly for a
    model held in memory. `threads`: intra-op threads (0: onnxruntime's choice); `exact_qdq`: no graph
    optimisation; `shift_int8`: shift int8 activation Q/DQ to uint8 in memory on the CPU provider.
    """

    name = "ort"

    def __init__(self, model, *, preprocess_spec: PreprocessSpec, output_kind: str = "logits",
                 classes=(), name: str = "in-memory ONNX", providers=None, threads: int = 0,
                 exact_qdq: bool = False, shift_int8: bool = False):
        self.artifact = name
        self.preprocess_spec, self.output_kind, self.classes = preprocess_spec, output_kind, list(classes)
        self.exact_qdq = exact_qdq
        providers = list(providers) if providers is not None else preferred_providers()
        self.shifted = 0  # activation QuantizeLinear nodes shifted from int8 to uint8 (CPU provider only)
        if shift_int8 and not exact_qdq and providers[:1] == list(CPU):
            model = self._shift_int8(model)
        self._session = ort_session(model, threads=threads, exact_qdq=exact_qdq, providers=providers, where=name)
        self.device = self._session.get_providers()[0].replace("ExecutionProvider", "")
        self._check_io(Path(name).name)

    @classmethod
    def open(cls, path: str | Path, *, providers=None, threads: int = 0, exact_qdq: bool = False,
             shift_int8: bool = True) -> "OrtBackend":
        """The backend of an ONNX file and its manifest (an FP32 ONNX or a Q/DQ INT8 ONNX)."""
        path = Path(path)
        man = read_manifest(path, kind=("onnx", "qdq_onnx"))
        _check_onnx(path)
        # only Q/DQ artifacts can hold int8 activations: an FP32 ONNX is not parsed a second time
        return cls(path, preprocess_spec=manifest_preprocess(man, str(path)),
                   output_kind=output_kind_of(man, str(path)), classes=man.get("classes", []), name=str(path),
                   providers=providers, threads=threads, exact_qdq=exact_qdq,
                   shift_int8=shift_int8 and man["kind"] == "qdq_onnx")

    def _shift_int8(self, model):
        """The model, or, when it holds int8 activation Q/DQ, the uint8-shifted model in memory."""
        try:
            import onnx

            from ...onnx_graph import int8_activation_quantizers, shift_activations_to_uint8
        except ImportError:  # an edge box may run onnxruntime without the onnx package
            return model
        proto = model if hasattr(model, "SerializeToString") else (
            onnx.load_from_string(bytes(model)) if isinstance(model, (bytes, bytearray)) else onnx.load(str(model)))
        found = int8_activation_quantizers(proto)
        if not found:
            return model
        self.shifted = len(found)
        return shift_activations_to_uint8(proto)

    def describe(self) -> str:
        text = super().describe()
        if self.exact_qdq:
            text += ", exact Q/DQ arithmetic (no graph optimisation)"
        if self.shifted:
            text += (f", int8 activation Q/DQ shifted to uint8 in memory ({self.shifted} QuantizeLinear; "
                     "same Q/DQ arithmetic, onnxruntime's integer kernels)")
        return text

    def _check_io(self, where: str) -> None:
        """The graph's input must be what the preprocessing produces (dtype, layout, static size)."""
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise VssegError(f"{where}: expected one input, the graph has {len(inputs)}")
        inp, spec = inputs[0], self.preprocess_spec
        self._input_name = inp.name
        if inp.type != _DTYPES[spec.dtype]:
            raise VssegError(f"{where}: input {inp.name!r} is {inp.type}, the manifest's preprocessing "
                             f"gives {spec.dtype}")
        shape = list(inp.shape)
        expected = list(spec.input_shape(1))
        if len(shape) != 4:
            raise VssegError(f"{where}: input {inp.name!r} has rank {len(shape)}, expected 4 ({spec.layout})")
        for got, want in zip(shape[1:], expected[1:]):
            if isinstance(got, int) and got != want:
                raise VssegError(f"{where}: input shape {shape} does not match the manifest's "
                                 f"{spec.layout.upper()} {expected}")
        hw = shape[2:] if spec.layout == "nchw" else shape[1:3]
        self.dynamic_size = not all(isinstance(d, int) for d in hw)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: batch})[0]

    def close(self) -> None:
        self._session = None
