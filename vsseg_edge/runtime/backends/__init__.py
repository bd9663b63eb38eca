"""Inference backends behind one interface (after Polygraphy's runners): TensorRT, onnxruntime, torch.

A backend is opened from an artifact and its manifest, and gives:

    infer(batch: np.ndarray) -> np.ndarray     batch prepared by core.preprocess with `.preprocess_spec`;
                                               returns logits N×C×H×W or labels N×H×W (`.output_kind`)
    .preprocess_spec  .output_kind  .classes  .name  .device  .artifact
    .max_batch                                 N ≤ max_batch (None: any N); 1 unless the artifact has a dynamic batch
    close() / context manager                  frees sessions, device buffers, streams

The preprocessing always comes from the artifact (manifest or checkpoint), never guessed; `check_spec`
refuses a spec that differs from it (only the input size may differ, and only for size-free artifacts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import VssegError
from ...core.preprocess import PreprocessSpec, labels_from_output

BACKENDS = ("trt", "ort", "torch")
_BY_SUFFIX = {".engine": "trt", ".plan": "trt", ".onnx": "ort", ".pt": "torch", ".pth": "torch"}


class Backend:
    """Common part of every backend; subclasses set the attributes below and implement `infer`/`close`."""

    name = "backend"
    device = "cpu"
    output_kind = "logits"  # "logits" | "labels"
    dynamic_size = False  # True when the artifact takes any input height/width
    max_batch: int | None = 1  # the largest batch `infer` takes (a dynamic-batch artifact: more); None = any
    preprocess_spec: PreprocessSpec
    classes: list[str]
    palette: list | None = None  # RGB per class from the manifest / checkpoint (a class file's colours)
    artifact: str

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check_spec(self, spec: PreprocessSpec | None) -> None:
        """Accept `spec` only if it is the artifact's (a size-free artifact may change height/width only)."""
        if spec is None:
            return
        base = self.preprocess_spec
        if self.dynamic_size:
            base = base.replace(height=spec.height, width=spec.width)
        base.require_same(spec, self.artifact)
        self.preprocess_spec = spec

    def to_labels(self, output: np.ndarray) -> np.ndarray:
        """Backend output → uint8 labels N×H×W (argmax on the host for logits)."""
        return labels_from_output(output, self.output_kind)

    @property
    def label_set(self):
        """The model's classes with their colours (a built-in set, or the artifact's palette)."""
        from ...core.labels import label_set_for

        return label_set_for(self.classes or [str(i) for i in range(255)], self.palette)

    def describe(self) -> str:
        s = self.preprocess_spec
        name = Path(self.artifact).name
        return f"{self.name} on {self.device}: {name}, input {s.height}x{s.width}, {self.output_kind}"


def output_kind_of(man: dict, where: str) -> str:
    """The manifest's output kind ('logits' or 'labels'; a dict with 'kind' is accepted too)."""
    out = man.get("output", "logits")
    kind = out.get("kind") if isinstance(out, dict) else out
    if kind not in ("logits", "labels"):
        raise VssegError(f"{where}: manifest output {kind!r} is neither 'logits' nor 'labels'")
    return kind


def infer_backend_name(model: str | Path) -> str:
    """The backend a file calls for, from its suffix."""
    suffix = Path(model).suffix.lower()
    if suffix not in _BY_SUFFIX:
        raise VssegError(
            f"{model}: unknown model type {suffix!r}; expected .engine/.plan (TensorRT), "
            ".onnx (onnxruntime) or .pt (vsseg-edge checkpoint)"
        )
    return _BY_SUFFIX[suffix]


def is_in_memory_onnx(model) -> bool:
    """True for an ONNX model held in memory (an `onnx.ModelProto` or its serialized bytes), not a file."""
    return isinstance(model, (bytes, bytearray)) or hasattr(model, "SerializeToString")


def open_backend(model, backend: str | None = None, *, spec: PreprocessSpec | None = None, **options) -> Backend:
    """Open the backend for `model` (chosen from its suffix, or `backend` which must fit the file).

    The one factory of runners: `vsseg-edge run`, `bench`, the calibration gate, export parity and the
    benchmark drivers all open artifacts here. `model` is a file (.onnx, .pt, .engine), or an ONNX model in
    memory (`onnx.ModelProto` or bytes: the gate's candidates, a model rewritten for a comparison), which has
    no manifest: then `spec` IS its preprocessing and `output_kind`, `classes`, `name` describe it.

    options: ort → providers, threads, exact_qdq, shift_int8; torch → device, fp16, channels_last, cuda_graph,
    logits; trt → device.
    """
    if backend is not None and backend not in BACKENDS:
        raise VssegError(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
    if is_in_memory_onnx(model):
        if backend not in (None, "ort"):
            raise VssegError(f"--backend {backend}: an in-memory ONNX model runs on onnxruntime only")
        if spec is None:
            raise ValueError("an in-memory ONNX model needs its preprocessing (spec=)")
        from .ort import OrtBackend

        return OrtBackend(model, preprocess_spec=spec, **options)
    model = Path(model)
    if not model.is_file():
        raise VssegError(f"{model}: model file not found")
    wanted = infer_backend_name(model)
    if backend is not None and backend != wanted:
        hint = {
            "trt": "build an engine with `vsseg-edge build-engine`",
            "ort": "export an ONNX with `vsseg-edge export`",
            "torch": "the torch backend runs vsseg-edge checkpoints (.pt)",
        }[backend]
        raise VssegError(
            f"--backend {backend} cannot run {model.name} (a {model.suffix} file needs --backend {wanted}); {hint}"
        )
    if wanted == "ort":
        from .ort import OrtBackend

        be = OrtBackend.open(model, **options)
    elif wanted == "torch":
        from .torch_backend import TorchBackend

        be = TorchBackend.from_checkpoint(model, **options)
    else:
        from .trt import TrtBackend

        be = TrtBackend(model, **options)
    try:
        be.check_spec(spec)
    except Exception:
        be.close()
        raise
    return be
