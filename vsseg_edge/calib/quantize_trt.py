"""The TensorRT flavour of the Q/DQ model: NVIDIA ModelOpt's ONNX PTQ, or onnxruntime's TensorRT-style settings.

ModelOpt (`modelopt.onnx.quantization.quantize`) places Q/DQ the way TensorRT fuses them (inputs of
Conv/MatMul/pooling, not residual outputs; weights per channel; int8 zero points 0; no int32 biases). It
runs on a CPU when installed *without* its `[onnx]` extra (which pulls onnxruntime-gpu, clashing with
onnxruntime) plus onnx-graphsurgeon, onnxslim, polygraphy, onnxconverter-common, lief and cppimport.

Ranges: ModelOpt would calibrate through onnxruntime's histogram calibrator with every frame's activations
held in memory at once (tens of GB for 500 frames at 512×1024). So the frames are calibrated once, in
chunks, by `quantize_ort` (TensorRT-style symmetric ranges), turned into a TensorRT calibration cache
(scale = amax / 127 per tensor) and handed to ModelOpt's `calibration_cache_path`, which overrides the
scales of its Q/DQ placement; ModelOpt itself then sees a single frame. The same cache serves every
re-quantisation of the accuracy gate. ModelOpt imports torch and patches onnxruntime's calibrators
globally, so it runs in a child process (`python -m vsseg_edge.calib.quantize_trt job.json`).

Without ModelOpt, the onnxruntime TensorRT-style model (S8/S8 symmetric, per channel, float biases) is the
result, and the manifest says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.signals import temporary_directory
from .quantize_ort import quiet_root_logging

TRT_CACHE_HEADER = "TRT-8501-EntropyCalibration2"
MODELOPT_PACKAGES = (
    "nvidia-modelopt (no extras)",
    "onnx-graphsurgeon",
    "onnxslim",
    "polygraphy",
    "onnxconverter-common",
    "lief",
    "cppimport",
)


def modelopt_available() -> bool:
    """True when `modelopt.onnx.quantization` can be imported (checked without importing torch)."""
    if importlib.util.find_spec("modelopt") is None:
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("onnx_graphsurgeon", "onnxslim", "polygraphy"))


def write_trt_scale_cache(ort_cache: str | Path, out: str | Path) -> int:
    """onnxruntime's JSON range cache → a TensorRT calibration cache (text, big-endian float32 hex scales).

    Returns the number of tensors written. Scales are symmetric: max(|lowest|, |highest|) / 127.
    """
    from .quantize_ort import symmetric_scales

    lines = [TRT_CACHE_HEADER]
    for name, scale in sorted(symmetric_scales(ort_cache).items()):
        lines.append(f"{name}: {struct.pack('!f', scale).hex()}")
    Path(out).write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def exclusion_patterns(node_names: Sequence[str]) -> list[str]:
    """ModelOpt reads `nodes_to_exclude` as regular expressions; match node names exactly."""
    return [f"^{re.escape(n)}$" for n in node_names]


def quantize_modelopt(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    trt_cache: str | Path,
    sample: np.ndarray,
    input_name: str,
    method: str,
    nodes_to_exclude: Sequence[str] = (),
) -> dict:
    """Run ModelOpt's INT8 ONNX PTQ on CPU with the scales of `trt_cache`; returns what it did.

    ModelOpt patches onnxruntime's calibrators globally when it runs, and imports torch, so it runs in a
    child process: this process (and any later onnxruntime quantisation in it) stays unaffected.
    `sample` is one preprocessed model input (ModelOpt's own pass over it is overridden by the cache).
    """
    with temporary_directory("vsseg-modelopt-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "sample.npy", np.ascontiguousarray(sample))
        job = {
            "fp32": str(fp32_path),
            "out": str(tmp / "model.qdq.onnx"),
            "trt_cache": str(trt_cache),
            "sample": str(tmp / "sample.npy"),
            "input_name": input_name,
            "method": method,
            "nodes_to_exclude": list(nodes_to_exclude),
            "info": str(tmp / "info.json"),
        }
        (tmp / "job.json").write_text(json.dumps(job))
        env = dict(os.environ)  # the child imports this package from where this process found it
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
        proc = subprocess.run(
            [sys.executable, "-m", "vsseg_edge.calib.quantize_trt", str(tmp / "job.json")],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0 or not Path(job["out"]).is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"ModelOpt quantisation failed (exit {proc.returncode}): {tail[0]}")
        shutil.copyfile(job["out"], out_path)
        return json.loads(Path(job["info"]).read_text())


def _modelopt_job(job_path: str) -> None:
    """Child-process side of `quantize_modelopt`."""
    import modelopt
    from modelopt.onnx.quantization import quantize as mo_quantize  # imports torch
    from onnxruntime.quantization import CalibrationDataReader

    job = json.loads(Path(job_path).read_text())

    class _One(CalibrationDataReader):
        def __init__(self):
            self.items = [{job["input_name"]: np.load(job["sample"])}]

        def get_next(self):
            return self.items.pop() if self.items else None

        def get_first(self):  # ModelOpt peeks at the first input to infer shapes (e.g. MobileNetV2-PSP)
            return {job["input_name"]: np.load(job["sample"])}

    work = Path(job["out"]).parent
    src = work / "model.onnx"
    shutil.copyfile(job["fp32"], src)
    with quiet_root_logging():
        mo_quantize(
            str(src),
            quantize_mode="int8",
            calibration_data_reader=_One(),
            calibration_method="entropy" if job["method"] == "entropy" else "max",
            calibration_cache_path=job["trt_cache"],
            calibration_eps=["cpu"],
            high_precision_dtype="fp32",
            nodes_to_exclude=exclusion_patterns(job["nodes_to_exclude"]),
            output_path=job["out"],
            log_level="ERROR",
        )
    info = {
        "quantizer": f"nvidia-modelopt {modelopt.__version__} (ONNX INT8 PTQ; scales from the chunked "
        "calibration, as a TensorRT calibration cache)",
        "method": job["method"],
        "nodes_to_exclude": job["nodes_to_exclude"],
        "settings": {
            "high_precision_dtype": "fp32",
            "calibration_eps": ["cpu"],
            "per_channel": True,
            "activations": "int8 symmetric",
            "weights": "int8 symmetric per channel",
        },
    }
    Path(job["info"]).write_text(json.dumps(info))


if __name__ == "__main__":
    _modelopt_job(sys.argv[1])
