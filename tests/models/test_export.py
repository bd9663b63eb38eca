"""Every student exports to ONNX (opset 17) with standard ops only, and ONNX Runtime agrees with torch.

This checks exportability of the model code; the export room owns the real exporter and its presets.
"""

from __future__ import annotations

import collections
import io
import warnings

import numpy as np
import pytest
import torch

from vsseg_edge.models import create_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

STUDENTS = ["bisenetv2", "espnet", "mobilenetv2_psp", "pspnet18"]
# ops TensorRT and ONNX Runtime run natively; anything else (AdaptiveAvgPool, ATen fallbacks) fails the test
STANDARD_OPS = {
    "Conv",
    "ConvTranspose",
    "BatchNormalization",
    "Relu",
    "PRelu",
    "Clip",
    "Sigmoid",
    "MaxPool",
    "AveragePool",
    "Add",
    "Mul",
    "MatMul",
    "Concat",
    "Resize",
    "Identity",
    "Shape",
    "Slice",
    "Constant",
    "Gather",
    "Unsqueeze",
    "Cast",
}


def _export(model, x, dynamo: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            return torch.onnx.export(model, (x,), dynamo=True, opset_version=17, verbose=False).model_proto
        buf = io.BytesIO()
        torch.onnx.export(
            model, (x,), buf, dynamo=False, opset_version=17, input_names=["input"], output_names=["logits"]
        )
        return onnx.load_from_string(buf.getvalue())


def _check(name: str, dynamo: bool) -> collections.Counter:
    torch.manual_seed(0)
    model = create_model(name, 19).eval()
    x = torch.randn(1, 3, 64, 128)
    proto = _export(model, x, dynamo)
    onnx.checker.check_model(proto)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert set(ops) <= STANDARD_OPS, f"non-standard ops: {set(ops) - STANDARD_OPS}"
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [1, 19, 64, 128]  # static shapes
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(got - want).max() < 1e-4
    print(f"{name} ({'dynamo' if dynamo else 'legacy'}): {len(proto.graph.node)} nodes {dict(ops)}")
    return ops


@pytest.mark.parametrize("name", STUDENTS)
def test_legacy_export_standard_ops_and_parity(name):
    ops = _check(name, dynamo=False)
    if name in ("pspnet18", "mobilenetv2_psp"):
        assert ops["MatMul"] == 4  # bins 3 and 6 do not divide 8×16: two pooling matrices each
        assert ops["AveragePool"] == 2  # bins 1 and 2 do


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pspnet18", "bisenetv2"])
def test_dynamo_export_standard_ops_and_parity(name):
    _check(name, dynamo=True)
