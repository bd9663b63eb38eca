"""The measurement core: run an artifact on frames, compare it with a reference, time it, score it.

After Polygraphy's split of runners and comparators, in three layers that every measuring client shares —
the calibration gate, export parity, `vsseg-edge bench`, the trainer's validation and the drivers in
`benchmarks/`:

- runners: `runtime.backends.open_backend(artifact | onnx.ModelProto, ...)` opens anything that infers
  (onnxruntime, torch, TensorRT); `runtime.backends.ort.ort_session` is the one onnxruntime session;
- running (`prediction`: `predict`, `end_to_end`): a runner over BGR frames through the one preprocessing → raw
  outputs and label maps (`core.preprocess.labels_from_output`, the one logits → labels), at model or frame
  resolution;
- comparing (`compare`): label agreement and output error against a reference, as typed records;
- timing (`timing`) and scoring (`accuracy`: mIoU and TC through `metrics.evaluate`), as typed records;
- where a figure was measured (`machine`: `environment`): CPU model and ISA flags, GPUs, library versions, load;
- `overhead`: what the threaded runtime pipeline costs on top of the runner (frame interval vs pure infer).

No submodule is named after a function it exports (`predict` lives in `prediction`, `environment` in `machine`):
once imported, a submodule is an attribute of the package and would shadow the function of the same name.

Nothing here imports torch, onnx or TensorRT; a runner brings its own library when it is opened.
"""

import importlib

_EXPORTS = {
    "open_backend": "..runtime.backends",
    "run_frame": ".prediction",
    "end_to_end": ".prediction",
    "predict": ".prediction",
    "Predictions": ".prediction",
    "Agreement": ".compare",
    "agreement": ".compare",
    "agreement_breakdown": ".compare",
    "OutputComparison": ".compare",
    "compare_outputs": ".compare",
    "TimingConfig": ".timing",
    "LatencyStats": ".timing",
    "Latency": ".timing",
    "time_calls": ".timing",
    "measure_latency": ".timing",
    "Accuracy": ".accuracy",
    "evaluate_runner": ".accuracy",
    "check_classes": ".accuracy",
    "environment": ".machine",
    "cpu_model": ".machine",
    "cpu_flags": ".machine",
    "measure_overhead": ".overhead",
    "PipelineOverhead": ".overhead",
    "synthetic_video": ".overhead",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
