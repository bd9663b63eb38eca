"""Fixtures of the bench tests: a tiny conv net as a vsseg-edge checkpoint, its ONNX export and a Q/DQ INT8 copy.

The net is registered as "bench-tiny" (19 Cityscapes classes, 64×128 input) so the torch backend can rebuild it
from the checkpoint; the ONNX comes from the same weights (legacy exporter), so torch and onnxruntime run the
same network. The INT8 file is quantised with onnxruntime's static Q/DQ quantiser on a few synthetic frames.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vsseg_edge.core.labels import CITYSCAPES
from vsseg_edge.core.manifest import write_manifest
from vsseg_edge.core.preprocess import PreprocessSpec, preprocess_batch
from vsseg_edge.models import register_model

TINY = "bench-tiny"
SPEC = PreprocessSpec(height=64, width=128)
CLASSES = list(CITYSCAPES.classes)


class BenchTiny(nn.Module):
    """Two 3×3 convs and a 1×1 classifier at full resolution: logits N×19×H×W."""

    def __init__(self, num_classes: int = 19, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 1),
        )

    def forward(self, x):
        return self.body(x)


@register_model(TINY)
def bench_tiny(num_classes: int, **kw) -> BenchTiny:
    return BenchTiny(num_classes, **kw)


def export(model: nn.Module, path: Path, parent: Path | None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            torch.zeros(SPEC.input_shape(1)),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )
    write_manifest(
        path, "onnx", model=TINY, classes=CLASSES, preprocess=SPEC, output="logits", precision="fp32", parent=parent
    )
    return path


def quantize(fp32: Path, out: Path, frames: list[np.ndarray]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"input": preprocess_batch([f], SPEC)} for f in frames])

        def get_next(self):
            return next(self._it, None)

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    write_manifest(
        out, "qdq_onnx", model=TINY, classes=CLASSES, preprocess=SPEC, output="logits", precision="int8", parent=fp32
    )
    return out


def _student(tmp_path_factory, synth_root, folder: str, seed: int, calib_frames: int) -> dict:
    """A seeded tiny student's checkpoint, its ONNX export and INT8 Q/DQ model, all with manifests, in `folder`."""
    from vsseg_edge.data.datasets import open_dataset
    from vsseg_edge.models.checkpoint import save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    out = tmp_path_factory.mktemp(folder)
    model = BenchTiny().eval()
    ckpt = out / "tiny.pt"
    save_checkpoint(ckpt, model, model_name=TINY, classes=CLASSES, preprocess=SPEC)
    onnx_path = export(model, out / "tiny.onnx", parent=ckpt)
    ds = open_dataset(synth_root, "train")
    int8 = quantize(onnx_path, out / "tiny.int8.qdq.onnx", [ds.read_image(r) for r in ds.frames()[:calib_frames]])
    return {"ckpt": ckpt, "onnx": onnx_path, "int8": int8}


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, synth_root):
    """{"ckpt": tiny.pt, "onnx": tiny.onnx (its export), "int8": tiny.int8.qdq.onnx} in one folder."""
    return _student(tmp_path_factory, synth_root, "bench_models", seed=0, calib_frames=4)


@pytest.fixture(scope="session")
def student_b(tmp_path_factory, synth_root):
    """A second student (other weights) in its own folder: {"ckpt", "onnx", "int8"}, same file names as `artifacts`."""
    return _student(tmp_path_factory, synth_root, "student_b", seed=1, calib_frames=2)
