"""uint8 weights for onnxruntime's integer convolutions (onnx_graph.unsigned_weights): the same dequantised values
(exact), the same integer kernels, and no int16 saturation — on both weight layouts, in `calibrate --target ort`
(`integer_weights: uint8`) and in the runtime's in-memory shift of a TensorRT-flavour file."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.calib.conftest import qdq_session
from vsseg_edge.core.errors import VssegError
from vsseg_edge.onnx_graph import check_qdq_structure, integer_kernel_convs, quantized_convs, unsigned_weights


def _qlinear_convs(model: onnx.ModelProto, tmp_path) -> int:
    path = tmp_path / "optimised.onnx"
    qdq_session(model, exact=False, optimized_path=path)
    return sum(n.op_type == "QLinearConv" for n in onnx.load(str(path)).graph.node)


def _weight_zero_points(model: onnx.ModelProto) -> list[np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    return [values[producers[n.input[1]].input[2]] for n in model.graph.node if n.op_type == "Conv"]


def _conv_pair(cin: int = 64, cout: int = 64, seed: int = 0) -> onnx.ModelProto:
    """u8 x → Q/DQ → Conv 3×3 (float weight → Q → DQ, symmetric int8 per channel, ModelOpt's layout) → Q/DQ →
    the same again: two convolutions onnxruntime runs as integer kernels. Large weights and inputs spread over the
    whole u8 range make the u8×s8 kernel's int16 pair sums saturate on x86 without VNNI."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_s"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_d"]),
    ]
    src, channels = "x_d", cin
    for i in range(2):
        w = rng.normal(0, 1, (cout, channels, 3, 3)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array((np.abs(w).max(axis=(1, 2, 3)) / 127).astype(np.float32), f"w{i}_s"),
            numpy_helper.from_array(np.zeros(cout, np.int8), f"w{i}_z"),
            numpy_helper.from_array(np.array(0.5, np.float32), f"y{i}_s"),
            numpy_helper.from_array(np.array(128, np.uint8), f"y{i}_z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", [f"w{i}", f"w{i}_s", f"w{i}_z"], [f"w{i}_q"], axis=0),
            helper.make_node("DequantizeLinear", [f"w{i}_q", f"w{i}_s", f"w{i}_z"], [f"w{i}_d"], axis=0),
            helper.make_node("Conv", [src, f"w{i}_d"], [f"y{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
            helper.make_node("QuantizeLinear", [f"y{i}", f"y{i}_s", f"y{i}_z"], [f"y{i}_q"]),
            helper.make_node("DequantizeLinear", [f"y{i}_q", f"y{i}_s", f"y{i}_z"], [f"y{i}_d"]),
        ]
        src, channels = f"y{i}_d", cout
    graph = helper.make_graph(
        nodes,
        "pair",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 16, 16])],
        [helper.make_tensor_value_info(src, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_uint8_weights_compute_what_the_graph_says_on_onnxruntimes_integer_kernels(tmp_path):
    model = _conv_pair()
    convs = integer_kernel_convs(model)
    assert convs == ["conv0", "conv1"]
    before = model.SerializeToString()
    unsigned = unsigned_weights(model, convs)
    assert model.SerializeToString() == before  # a copy; the input model is not touched
    assert all(z.dtype == np.uint8 and np.all(z == 128) for z in _weight_zero_points(unsigned))
    assert check_qdq_structure(unsigned, "ort").ok
    x = np.random.default_rng(1).uniform(-6.4, 6.35, (1, 64, 16, 16)).astype(np.float32)
    exact = qdq_session(model, exact=True).run(None, {"x": x})[0]
    assert np.array_equal(qdq_session(unsigned, exact=True).run(None, {"x": x})[0], exact)  # the same values
    assert _qlinear_convs(unsigned, tmp_path) == 2  # still onnxruntime's integer kernels
    step = 0.5  # the output quantisation step: the kernels may round differently, by one step
    # (the int8 weights on the same kernels, on this AVX2 CPU without VNNI: off by 127.5, a saturated sum)
    assert np.abs(qdq_session(unsigned, exact=False).run(None, {"x": x})[0] - exact).max() <= step + 1e-6


def test_onnxruntimes_weight_layout_and_structure_rules():
    """An int8 weight initializer → DequantizeLinear (onnxruntime's quantiser) becomes a uint8 one; the `ort`
    structure check accepts uint8 weights only symmetric around 128."""
    model = _conv_pair()
    graph = model.graph  # fold the weights' QuantizeLinear: int8 initializers, as onnxruntime's quantiser writes
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for i in range(2):
        q = next(n for n in graph.node if n.output[0] == f"w{i}_q")
        levels = np.clip(np.round(values[f"w{i}"] / values[f"w{i}_s"].reshape(-1, 1, 1, 1)), -127, 127)
        graph.initializer.append(numpy_helper.from_array(levels.astype(np.int8), f"w{i}_q"))
        graph.node.remove(q)
    x = np.random.default_rng(2).uniform(-6, 6, (1, 64, 16, 16)).astype(np.float32)
    unsigned = unsigned_weights(model, ["conv0", "conv1"])
    stored = {i.name: numpy_helper.to_array(i) for i in unsigned.graph.initializer}
    assert {stored[n].dtype for n in stored if n.startswith(("w0_q", "w1_q"))} == {np.dtype(np.uint8)}
    assert "w0_q" not in stored and "w0_z" not in stored  # the int8 originals nobody reads are gone
    assert np.array_equal(
        qdq_session(unsigned, exact=True).run(None, {"x": x})[0], qdq_session(model, exact=True).run(None, {"x": x})[0]
    )
    zp = next(i for i in unsigned.graph.initializer if numpy_helper.to_array(i).dtype == np.uint8 and i.dims == [64])
    zp.CopyFrom(numpy_helper.from_array(np.full(64, 100, np.uint8), zp.name))
    rep = check_qdq_structure(unsigned, "ort")
    assert any("is not 128" in p for p in rep.problems), rep.problems
    assert not check_qdq_structure(unsigned_weights(_conv_pair(), ["conv0"]), "trt").ok  # TensorRT: int8 only


def test_a_convolution_without_quantised_weights_is_left_alone():
    model = _conv_pair()
    for node in model.graph.node:
        if node.name == "conv1":
            node.input[1] = "w1"  # the float weight itself
    out = unsigned_weights(model, ["conv1"])
    assert out.SerializeToString() == model.SerializeToString()
    assert quantized_convs(out) == ["conv0"]


def _calibrated(model, frames, out, **settings):
    from vsseg_edge.calib.config import CalibConfig
    from vsseg_edge.calib.pipeline import calibrate

    cfg = CalibConfig(**{"num_frames": 6, "gate": False, "tc_gate": False, "speed_runs": 0, **settings})
    return calibrate(model, frames, out, cfg, log=lambda s: None)


def test_calibrate_writes_uint8_weights_on_its_integer_convolutions(tmp_path, cs_root, tiny_onnx):
    """`integer_weights: uint8` (the onnxruntime preset's): every reader through Q/DQ makes all four convolutions
    integer kernels; each reads uint8 weights, 8 bits, and its int32 bias still fuses."""
    out = tmp_path / "u8.qdq.onnx"
    man = _calibrated(
        tiny_onnx, cs_root, out, target="ort", quantizer="ort", quantized_readers=(), integer_weights="uint8"
    )
    model = onnx.load(str(out))
    assert len(man["quantization"]["uint8_weights"]) == 4 == len(integer_kernel_convs(model))
    assert all(z.dtype == np.uint8 and np.all(z == 128) for z in _weight_zero_points(model))
    assert check_qdq_structure(model, "ort").ok
    assert _qlinear_convs(model, tmp_path) == 4
    with pytest.raises(VssegError, match="integer_weights: uint8 and reduce_range"):
        _calibrated(tiny_onnx, cs_root, tmp_path / "x.onnx", target="ort", integer_weights="uint8", reduce_range=True)
    with pytest.raises(VssegError, match="integer_weights is for target 'ort'"):
        _calibrated(tiny_onnx, cs_root, tmp_path / "y.onnx", target="trt", integer_weights="uint8")
