"""How much faster the INT8 model is than its FP32 parent on the machine that calibrated it (onnxruntime, CPU).

An INT8 model that is no faster than FP32 costs accuracy and temporal consistency for nothing, so
`calibrate` states the ratio in the manifest (and `bench` shows it). Both models run compute-only (the
session call on one preprocessed frame, batch 1) on onnxruntime's CPU provider with full graph optimisation,
the INT8 model as the runtime's onnxruntime backend runs it (a TensorRT-flavour model with its int8
activation Q/DQ shifted to uint8 in memory), the runs interleaved (FP32, INT8, FP32 …) so that a load change
on a shared machine hits both alike; the ratio is median FP32 / median INT8. The CPU model and its ISA flags
are recorded, because the ratio depends on them (x86 without VNNI has no fast u8×s8 dot product).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np

from ..core.preprocess import PreprocessSpec, preprocess_batch


def measure_speed(
    fp32_model,
    int8_model,
    spec: PreprocessSpec,
    frame: np.ndarray,
    *,
    runs: int,
    threads: int = 0,
    warmup: int = 2,
    output_kind: str = "logits",
    classes=(),
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Interleaved compute-only latency of the FP32 and INT8 models (files or in-memory ONNX) on `frame`."""
    from ..measure.machine import cpu_flags, cpu_model, library_versions
    from ..runtime.backends import open_backend

    batch = preprocess_batch([frame], spec)
    opts = {
        "providers": ["CPUExecutionProvider"],
        "threads": threads,
        "spec": spec,
        "output_kind": output_kind,
        "classes": classes,
    }
    with (
        open_backend(_bytes(fp32_model), name="FP32 model", **opts) as fp32,
        open_backend(_bytes(int8_model), name="INT8 model", shift_int8=True, **opts) as int8,
    ):
        for _ in range(warmup):
            fp32.infer(batch)
            int8.infer(batch)
        t32, t8 = [], []
        for _ in range(runs):
            for runner, out in ((fp32, t32), (int8, t8)):
                t0 = clock()
                runner.infer(batch)
                out.append((clock() - t0) * 1e3)
        shifted = int8.shifted
    m32, m8 = statistics.median(t32), statistics.median(t8)
    return {
        "fp32_ms": round(m32, 4),
        "int8_ms": round(m8, 4),
        "ratio": round(m32 / m8, 3) if m8 > 0 else None,
        "runs": runs,
        "threads": threads or "onnxruntime default",
        "input": [spec.height, spec.width],
        "provider": "CPUExecutionProvider (ORT_ENABLE_ALL)",
        "int8_shifted_to_uint8": shifted,
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "onnxruntime": library_versions().get("onnxruntime"),
    }


def _bytes(model):
    """A path, bytes or ModelProto → what open_backend takes for a model without a manifest (bytes)."""
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    from pathlib import Path

    return Path(model).read_bytes()
