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
integer kernels then round their own way. The convolutions it runs as integer kernels also get their
weights as uint8 with zero point 128 (`onnx_graph.unsigned_weights`, exact): with the int8 weights the
u8×s8 kernel of x86 CPUs without VNNI sums pairs of products in int16 and saturates — the zoo's ESPNet
student's TensorRT-flavour file agreed with its exact arithmetic on 95.2 % of pixels that way, and on
98.35 % (the exact figure) with uint8 weights (benchmarks/reports/int8_tc.md, round 6).
`shift_int8=False` loads the file as it is.

On a GPU (onnxruntime's TensorRT or CUDA execution provider, when the installed build has them) the backend
binds its input and output to OrtValues on the device, allocated once per input shape (I/O binding): each frame
is one host-to-device copy into the bound input, the run, and one copy of the output back, with no allocation
per frame and no staging inside onnxruntime. TensorRT's provider keeps the engines it builds and its timing
cache in the user cache (`core.cache`, "ort-tensorrt"), so a process does not rebuild them at every start.
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
_NP = {
    "tensor(float)": np.float32,
    "tensor(uint8)": np.uint8,
    "tensor(int32)": np.int32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
}


def provider_options(name: str) -> dict:
    """The options `ort_session` gives an execution provider: TensorRT's engine and timing caches; others none."""
    if name != "TensorrtExecutionProvider":
        return {}
    from ...core.cache import user_cache_dir

    cache = user_cache_dir("ort-tensorrt")
    cache.mkdir(parents=True, exist_ok=True)
    return {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
    }


def ort_session(
    model,
    *,
    threads: int = 0,
    exact_qdq: bool = False,
    providers=CPU,
    where: str | None = None,
    profile: str | None = None,
):
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
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL if exact_qdq else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
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
        return ort.InferenceSession(
            source, opts, providers=list(providers), provider_options=[provider_options(p) for p in providers]
        )
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
    optimisation; `shift_int8`: shift int8 activation Q/DQ to uint8 in memory on the CPU provider;
    `io_binding`: input and output bound to OrtValues on the provider's device (default: on a GPU provider).
    """

    name = "ort"

    def __init__(
        self,
        model,
        *,
        preprocess_spec: PreprocessSpec,
        output_kind: str = "logits",
        classes=(),
        name: str = "in-memory ONNX",
        providers=None,
        threads: int = 0,
        exact_qdq: bool = False,
        shift_int8: bool = False,
        io_binding: bool | None = None,
    ):
        self.artifact = name
        self.preprocess_spec, self.output_kind, self.classes = preprocess_spec, output_kind, list(classes)
        self.exact_qdq = exact_qdq
        providers = (
            ([providers] if isinstance(providers, str) else list(providers))
            if providers is not None
            else preferred_providers()
        )
        self.shifted = 0  # activation QuantizeLinear nodes shifted from int8 to uint8 (CPU provider only)
        self.unsigned = 0  # integer-kernel convolutions whose weights were re-encoded as uint8 with them
        if shift_int8 and not exact_qdq and providers[:1] == list(CPU):
            model = self._shift_int8(model)
        self._session = ort_session(model, threads=threads, exact_qdq=exact_qdq, providers=providers, where=name)
        self.device = self._session.get_providers()[0].replace("ExecutionProvider", "")
        self._check_io(Path(name).name)
        on_gpu = self.device in ("CUDA", "Tensorrt")
        self.io_binding = on_gpu if io_binding is None else bool(io_binding)
        self._bound: tuple | None = None  # (input shape, binding, input OrtValue, output OrtValue or None)
        self._value_device = "cuda" if on_gpu else "cpu"

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        providers=None,
        threads: int = 0,
        exact_qdq: bool = False,
        shift_int8: bool = True,
        io_binding: bool | None = None,
    ) -> OrtBackend:
        """The backend of an ONNX file and its manifest (an FP32 ONNX or a Q/DQ INT8 ONNX)."""
        path = Path(path)
        man = read_manifest(path, kind=("onnx", "qdq_onnx"), verify=True)
        _check_onnx(path)
        # only Q/DQ artifacts can hold int8 activations: an FP32 ONNX is not parsed a second time
        be = cls(
            path,
            preprocess_spec=manifest_preprocess(man, str(path)),
            output_kind=output_kind_of(man, str(path)),
            classes=man.get("classes", []),
            name=str(path),
            providers=providers,
            threads=threads,
            exact_qdq=exact_qdq,
            shift_int8=shift_int8 and man["kind"] == "qdq_onnx",
            io_binding=io_binding,
        )
        be.palette = man.get("palette")  # a class file's colours, when the model has one
        return be

    def _shift_int8(self, model):
        """The model, or, when it holds int8 activation Q/DQ, the uint8-shifted model in memory."""
        try:
            import onnx

            from ...onnx_graph import int8_activation_quantizers, shift_activations_to_uint8, unsigned_integer_kernels
        except ImportError:  # an edge box may run onnxruntime without the onnx package
            return model
        proto = (
            model
            if hasattr(model, "SerializeToString")
            else (
                onnx.load_from_string(bytes(model)) if isinstance(model, (bytes, bytearray)) else onnx.load(str(model))
            )
        )
        found = int8_activation_quantizers(proto)
        if not found:
            return model
        self.shifted = len(found)
        shifted, convs = unsigned_integer_kernels(shift_activations_to_uint8(proto))
        self.unsigned = len(convs)
        return shifted

    def describe(self) -> str:
        text = super().describe()
        if self.exact_qdq:
            text += ", exact Q/DQ arithmetic (no graph optimisation)"
        if self.shifted:
            text += (
                f", int8 activation Q/DQ shifted to uint8 in memory ({self.shifted} QuantizeLinear; "
                "same Q/DQ arithmetic, onnxruntime's integer kernels)"
            )
        if self.unsigned:
            text += f", uint8 weights on its {self.unsigned} integer-kernel convolution(s) (no int16 saturation)"
        return text

    def _check_io(self, where: str) -> None:
        """The graph's input must be what the preprocessing produces (dtype, layout, static size)."""
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise VssegError(f"{where}: expected one input, the graph has {len(inputs)}")
        inp, spec = inputs[0], self.preprocess_spec
        self._input_name = inp.name
        if inp.type != _DTYPES[spec.dtype]:
            raise VssegError(
                f"{where}: input {inp.name!r} is {inp.type}, the manifest's preprocessing gives {spec.dtype}"
            )
        shape = list(inp.shape)
        expected = list(spec.input_shape(1))
        if len(shape) != 4:
            raise VssegError(f"{where}: input {inp.name!r} has rank {len(shape)}, expected 4 ({spec.layout})")
        for got, want in zip(shape[1:], expected[1:]):
            if isinstance(got, int) and got != want:
                raise VssegError(
                    f"{where}: input shape {shape} does not match the manifest's {spec.layout.upper()} {expected}"
                )
        hw = shape[2:] if spec.layout == "nchw" else shape[1:3]
        self.dynamic_size = not all(isinstance(d, int) for d in hw)
        self.max_batch = shape[0] if isinstance(shape[0], int) else None  # a symbolic batch dim takes any N

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.io_binding:
            return self._session.run(None, {self._input_name: batch})[0]
        if self._bound is None or self._bound[0] != batch.shape:
            self._bind(batch.shape)
        _, binding, inp, out = self._bound
        inp.update_inplace(np.ascontiguousarray(batch))
        self._session.run_with_iobinding(binding)
        result = (out if out is not None else binding.get_outputs()[0]).numpy()
        # a CPU OrtValue's array is a view of the bound buffer, which the next frame overwrites
        return result.copy() if self._value_device == "cpu" else result

    def _bind(self, shape: tuple[int, ...]) -> None:
        """Input (and, when its shape is static, output) OrtValues on the provider's device, made once per shape."""
        import onnxruntime as ort

        dev, sess = self._value_device, self._session
        out = sess.get_outputs()[0]
        inp = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), _NP[sess.get_inputs()[0].type], dev, 0)
        binding = sess.io_binding()
        binding.bind_ortvalue_input(self._input_name, inp)
        out_shape = [shape[0], *out.shape[1:]] if all(isinstance(d, int) for d in out.shape[1:]) else None
        out_value = None
        if out_shape is not None and out.type in _NP:
            out_value = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, _NP[out.type], dev, 0)
            binding.bind_ortvalue_output(out.name, out_value)
        else:  # a size-free graph: onnxruntime allocates the output on the device at each run
            binding.bind_output(out.name, dev)
        for extra in sess.get_outputs()[1:]:
            binding.bind_output(extra.name, dev)
        self._bound = (tuple(shape), binding, inp, out_value)

    def close(self) -> None:
        self._bound = None
        self._session = None
