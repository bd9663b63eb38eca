"""The onnxruntime backend runs a TensorRT-flavour Q/DQ model on the CPU with its activations shifted to uint8.

The caller opens the file as usual; the backend shifts in memory (exact), says so in `describe()`, and the
file on disk is unchanged. A model without int8 activations (FP32, or the onnxruntime u8 flavour) is not.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest

from vsseg_edge.calib.frames import SampledFrame
from vsseg_edge.calib.quantize_ort import FrameReader, quantize_ort
from vsseg_edge.core.manifest import manifest_preprocess, read_manifest, write_manifest
from vsseg_edge.core.preprocess import preprocess_batch
from vsseg_edge.runtime.backends import open_backend

from .conftest import make_frames


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _quantised(tmp_path, onnx_model, target: str):
    man = read_manifest(onnx_model, kind="onnx")
    spec = manifest_preprocess(man, str(onnx_model))
    frames = [SampledFrame(f"f{i}", (lambda img=img: img)) for i, img in enumerate(make_frames(4))]
    out = tmp_path / f"tiny.{target}.qdq.onnx"
    quantize_ort(
        onnx_model,
        out,
        target=target,
        method="minmax",
        cache_path=tmp_path / f"{target}.json",
        reader=FrameReader(frames, spec, "input"),
    )
    write_manifest(
        out,
        "qdq_onnx",
        model="tiny",
        classes=man["classes"],
        preprocess=spec,
        precision="int8",
        parent=onnx_model,
        target=target,
    )
    return out, spec


def test_trt_flavour_is_shifted_in_memory_on_cpu(tmp_path, onnx_model):
    path, spec = _quantised(tmp_path, onnx_model, "trt")
    before = _sha(path)
    x = preprocess_batch(make_frames(2)[1:], spec)
    with open_backend(path, providers=["CPUExecutionProvider"], threads=1) as be:
        assert be.shifted >= 2 and "shifted to uint8 in memory" in be.describe()
        y = be.infer(x)
    assert _sha(path) == before  # the file is never rewritten
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # exact Q/DQ arithmetic
    ref = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert y.shape == ref.shape
    assert (y.argmax(1) == ref.argmax(1)).mean() > 0.99
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("kind", ["fp32", "ort"])
def test_models_without_int8_activations_are_loaded_as_they_are(tmp_path, onnx_model, kind):
    path = onnx_model if kind == "fp32" else _quantised(tmp_path, onnx_model, "ort")[0]
    if kind == "ort":  # u8 activations: nothing to shift
        zps = [i for i in onnx.load(str(path)).graph.initializer if i.name.endswith("zero_point")]
        assert any(z.data_type == onnx.TensorProto.UINT8 for z in zps)
    with open_backend(path, providers=["CPUExecutionProvider"], threads=1) as be:
        assert be.shifted == 0 and "shifted" not in be.describe()


def test_shift_can_be_turned_off_and_then_runs_the_file_as_it_is(tmp_path, onnx_model):
    """`shift_int8=False`: no rewrite; the outputs are those of a plain ORT_ENABLE_ALL session on the file."""
    import onnxruntime as ort

    path, spec = _quantised(tmp_path, onnx_model, "trt")
    x = preprocess_batch(make_frames(2)[1:], spec)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    plain = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with open_backend(path, providers=["CPUExecutionProvider"], threads=1, shift_int8=False) as be:
        assert be.shifted == 0 and "shifted" not in be.describe()
        assert np.array_equal(be.infer(x), plain)
    with open_backend(path, providers=["CPUExecutionProvider"], threads=1) as be:
        assert be.shifted >= 2


def test_integer_convolutions_get_uint8_weights_with_the_shift(tmp_path):
    """The convolutions onnxruntime runs as integer kernels once shifted (here the first, read by the second
    alone) read uint8 weights (exact), so the u8×s8 kernel's int16 saturation on x86 without VNNI cannot touch
    a TensorRT-flavour file run on the CPU; the outputs stay those of the exact Q/DQ arithmetic."""
    import onnxruntime as ort
    import torch
    from torch import nn

    from vsseg_edge.onnx_graph import integer_kernel_convs, shift_activations_to_uint8

    from .conftest import export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 19, 1)).eval()
    path, spec = _quantised(tmp_path, export_onnx(net, tmp_path / "two_convs.onnx"), "trt")
    assert len(integer_kernel_convs(shift_activations_to_uint8(onnx.load(str(path))))) == 1
    x = preprocess_batch(make_frames(2)[1:], spec)
    with open_backend(path, providers=["CPUExecutionProvider"], threads=1) as be:
        assert be.unsigned == 1 and "uint8 weights on its 1 integer-kernel convolution" in be.describe()
        y = be.infer(x)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert (y.argmax(1) == ref.argmax(1)).mean() > 0.99 and np.abs(y - ref).max() < 0.05 * np.abs(ref).max()
