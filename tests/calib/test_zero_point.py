"""The exact S8 → U8 activation shift (onnx_graph.shift_activations_to_uint8) on the tiny conv/residual net's
TensorRT flavour."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.calib.conftest import qdq_session
from vsseg_edge.calib.frames import calibration_frames
from vsseg_edge.calib.quantize_ort import FrameReader, quantize_ort
from vsseg_edge.core.manifest import manifest_preprocess, read_manifest
from vsseg_edge.core.preprocess import preprocess_batch
from vsseg_edge.onnx_graph import (
    check_qdq_structure,
    int8_activation_quantizers,
    shift_activations_to_uint8,
)

INTEGER_OPS = (
    "QLinearConv",
    "ConvInteger",
    "QLinearAdd",
    "QLinearConcat",
    "QLinearMul",
    "QLinearMatMul",
    "MatMulInteger",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearLeakyRelu",
    "QLinearSigmoid",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
)


@pytest.fixture(scope="module")
def trt_qdq(tmp_path_factory, cs_root, tiny_onnx):
    """(TensorRT-flavour Q/DQ model of the tiny net, 4 preprocessed frames)."""
    spec = manifest_preprocess(read_manifest(tiny_onnx, kind="onnx"), "tiny")
    frames, _ = calibration_frames(cs_root, 4, seed=0)
    out = tmp_path_factory.mktemp("zp")
    path = out / "tiny.trt.onnx"
    quantize_ort(
        tiny_onnx,
        path,
        target="trt",
        method="minmax",
        cache_path=out / "r.json",
        reader=FrameReader(frames.frames, spec, "image"),
        op_types=("Conv", "Add"),
    )
    return onnx.load(str(path)), [preprocess_batch([f.read()], spec) for f in frames.frames]


def _zero_points(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.name: inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}


def test_shift_rewrites_activations_only_and_leaves_the_input_model_alone(trt_qdq):
    model, _ = trt_qdq
    before = model.SerializeToString()
    shifted = shift_activations_to_uint8(model)
    assert model.SerializeToString() == before  # in memory, the original untouched
    onnx.checker.check_model(shifted, full_check=True)
    acts = {q.name for q in int8_activation_quantizers(model)}
    assert len(acts) >= 4 and not int8_activation_quantizers(shifted)
    old, new = _zero_points(model), _zero_points(shifted)
    fed = {
        n.name
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and any(n.input[0] == q.output[0] for q in int8_activation_quantizers(model))
    }
    assert len(fed) == len(acts)  # onnxruntime's Q/DQ: one DequantizeLinear per QuantizeLinear here
    for name, zp in new.items():
        if name in acts | fed:
            assert zp.dtype == np.uint8 and np.array_equal(zp.astype(int), old[name].astype(int) + 128), name
        else:  # weights stay int8 with their zero point
            assert zp.dtype == np.int8 and np.array_equal(zp, old[name]), name
    assert check_qdq_structure(shifted, "ort").ok  # u8 activations, s8 per-channel weights
    assert not check_qdq_structure(shifted, "trt").ok  # no longer a TensorRT model


def test_shift_is_exact_under_exact_qdq_arithmetic(trt_qdq):
    model, xs = trt_qdq
    a, b = qdq_session(model, exact=True), qdq_session(shift_activations_to_uint8(model), exact=True)
    for x in xs:
        ya, yb = a.run(None, {"image": x})[0], b.run(None, {"image": x})[0]
        assert np.array_equal(ya, yb)  # bit-identical, not merely close
    assert (
        shift_activations_to_uint8(shift_activations_to_uint8(model)).SerializeToString()
        == shift_activations_to_uint8(model).SerializeToString()
    )  # nothing left to shift


def test_optimised_shifted_graph_runs_more_integer_kernels(trt_qdq, tmp_path):
    model, xs = trt_qdq
    counts = {}
    for name, m in (("s8", model), ("u8", shift_activations_to_uint8(model))):
        opt = tmp_path / f"{name}.opt.onnx"
        qdq_session(m, exact=False, optimized_path=opt).run(None, {"image": xs[0]})
        ops = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
        counts[name] = sum(ops[o] for o in INTEGER_OPS)
    assert counts["u8"] > counts["s8"], counts


def test_weights_and_constants_are_never_shifted():
    """A graph with only weight Q/DQ (float constant → Q → DQ, int8 constant → DQ) is returned unchanged."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
    wq = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.int8), "wq")
    s, z = numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s", "z"], ["w_q"]),
        helper.make_node("DequantizeLinear", ["w_q", "s", "z"], ["w_dq"]),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wq_dq"]),
        helper.make_node("Add", ["w_dq", "wq_dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, wq, s, z]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert not int8_activation_quantizers(model)
    assert shift_activations_to_uint8(model).SerializeToString() == model.SerializeToString()
