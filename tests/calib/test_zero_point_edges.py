"""Edge cases of the exact S8 → U8 activation shift (onnx_graph.shift_activations_to_uint8) on hand-built Q/DQ graphs.

Each graph is a few nodes; every check is bit-exact against the unshifted graph with onnxruntime's graph
optimisation disabled (plain QuantizeLinear/DequantizeLinear arithmetic), and the shifted model must pass
onnx's full checker (types of Q outputs recorded in value_info included).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vsseg_edge.onnx_graph import (
    int8_activation_quantizers,
    shift_activations_to_uint8,
)

SCALE = 0.05


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def _model(nodes, inits, outputs=("y",), opset=17, out_shape=(1, 3, 4, 4)):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [
            helper.make_tensor_value_info(
                o, TensorProto.FLOAT if o == "y" else TensorProto.INT8, list(out_shape) if o == "y" else [1, 2, 4, 4]
            )
            for o in outputs
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 21 else 10
    return onnx.shape_inference.infer_shapes(model)  # value_info records the Q outputs as int8


def _conv_net(zp_act="zpa", zp_w="zpw", extra_nodes=(), extra_inits=(), act_zp=0, shared=False):
    """x → Q(int8, act_zp) → DQ → Conv(DQ(int8 per-channel weights)) → y."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (3, 2, 3, 3)).astype(np.int8)
    inits = [_init("s", np.float32(SCALE)), _init("w", w), _init("b", rng.standard_normal(3).astype(np.float32))]
    if shared:  # one int8 zero-point tensor used by the activation Q/DQ and the weights' DQ (both 0)
        inits.append(_init(zp_act, np.int8(0)))
        w_zp, w_axis = zp_act, []
    else:
        inits += [
            _init(zp_act, np.int8(act_zp)),
            _init(zp_w, np.zeros(3, np.int8)),
            _init("ws", np.full(3, 0.01, np.float32)),
        ]
        w_zp, w_axis = zp_w, [helper.make_attribute("axis", 0)]
    wdq = helper.make_node("DequantizeLinear", ["w", "ws" if not shared else "s", w_zp], ["wf"], name="wdq")
    wdq.attribute.extend(w_axis)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", zp_act], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", zp_act], ["xd"], name="dq"),
        wdq,
        helper.make_node("Conv", ["xd", "wf", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        *extra_nodes,
    ]
    return _model(nodes, inits + list(extra_inits))


def _run(model, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _x():
    """Values far beyond the int8 range at this scale (±6.4), so both clamps are exercised."""
    return np.random.default_rng(1).uniform(-12, 12, (1, 2, 4, 4)).astype(np.float32)


def _exact(model):
    shifted = shift_activations_to_uint8(model)
    onnx.checker.check_model(shifted, full_check=True)
    for a, b in zip(_run(model, _x()), _run(shifted, _x())):
        assert np.array_equal(a, b)
    return shifted


def _zp_of(model, node_name, index=2):
    node = next(n for n in model.graph.node if n.name == node_name)
    inits = {i.name: i for i in model.graph.initializer}
    return inits[node.input[index]]


@pytest.mark.parametrize("z", [-128, -7, 0, 127])
def test_any_int8_zero_point_becomes_z_plus_128_and_stays_exact(z):
    model = _conv_net(act_zp=z)
    shifted = _exact(model)
    for name in ("q", "dq"):
        zp = _zp_of(shifted, name)
        assert zp.data_type == TensorProto.UINT8 and int(numpy_helper.to_array(zp)) == z + 128
    assert _zp_of(shifted, "wdq").data_type == TensorProto.INT8  # weights stay int8
    assert not int8_activation_quantizers(shifted)  # nothing left to shift: the rewrite is idempotent


def test_a_zero_point_shared_by_weights_and_activations_is_split():
    shifted = _exact(_conv_net(shared=True))
    assert _zp_of(shifted, "q").data_type == TensorProto.UINT8
    assert _zp_of(shifted, "wdq").data_type == TensorProto.INT8 and _zp_of(shifted, "wdq").name == "zpa"


def test_constant_node_zero_points_and_fan_out_are_shifted():
    """A Constant-node zero point, and one Q feeding two DQ (the case onnxruntime's own S8→U8 pass skips)."""
    zc = helper.make_node("Constant", [], ["zc"], value=numpy_helper.from_array(np.int8(3), "zc"))
    nodes = [
        zc,
        helper.make_node("QuantizeLinear", ["x", "s", "zc"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zc"], ["a"], name="dq1"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zc"], ["b"], name="dq2"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    model = _model(nodes, [_init("s", np.float32(SCALE))], out_shape=(1, 2, 4, 4))
    shifted = _exact(model)
    for name in ("q", "dq1", "dq2"):
        assert int(numpy_helper.to_array(_zp_of(shifted, name))) == 131


def test_a_dq_with_its_own_zero_point_tensor_is_shifted_with_its_q():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z1"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z2"], ["y"], name="dq"),
    ]
    model = _model(
        nodes,
        [_init("s", np.float32(SCALE)), _init("z1", np.int8(-2)), _init("z2", np.int8(-2))],
        out_shape=(1, 2, 4, 4),
    )
    shifted = _exact(model)
    assert [int(numpy_helper.to_array(_zp_of(shifted, n))) for n in ("q", "dq")] == [126, 126]


def test_quantisers_with_other_consumers_or_graph_outputs_are_left_alone():
    """A Q whose int8 output is a graph output, or also feeds a non-DQ node, must keep its type."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"], name="dq"),
    ]
    as_output = _model(
        nodes, [_init("s", np.float32(SCALE)), _init("z", np.int8(0))], outputs=("y", "xq"), out_shape=(1, 2, 4, 4)
    )
    assert not int8_activation_quantizers(as_output)
    nodes2 = nodes + [helper.make_node("Identity", ["xq"], ["xq_id"], name="id")]
    other_user = _model(
        nodes2, [_init("s", np.float32(SCALE)), _init("z", np.int8(0))], outputs=("y", "xq_id"), out_shape=(1, 2, 4, 4)
    )
    assert not int8_activation_quantizers(other_user)
    for model in (as_output, other_user):
        assert shift_activations_to_uint8(model).SerializeToString() == model.SerializeToString()


def test_opset_21_output_dtype_attribute_follows_the_zero_point():
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q", output_dtype=TensorProto.INT8)
    nodes = [q, helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"], name="dq")]
    model = _model(nodes, [_init("s", np.float32(SCALE)), _init("z", np.int8(5))], opset=21, out_shape=(1, 2, 4, 4))
    shifted = _exact(model)
    attr = next(n for n in shifted.graph.node if n.name == "q").attribute[0]
    assert attr.name == "output_dtype" and attr.i == TensorProto.UINT8
    vi = {v.name: v for v in shifted.graph.value_info}
    assert vi["xq"].type.tensor_type.elem_type == TensorProto.UINT8


def test_no_zero_point_is_left_unused_after_the_shift():
    """The int8 zero points only the shifted nodes read are removed (onnxruntime warns about each one left);
    a Constant-node zero point stays a node, and one still read by the weights stays."""
    for shared, extra in ((False, 0), (True, 1)):  # the int8 one replaced by its uint8 twin, or both kept
        model = _conv_net(act_zp=-3 if not shared else 0, shared=shared)
        shifted = shift_activations_to_uint8(model)
        used = {i for n in shifted.graph.node for i in n.input}
        assert all(i.name in used for i in shifted.graph.initializer)
        assert len(shifted.graph.initializer) == len(model.graph.initializer) + extra
        assert ("zpa" in {i.name for i in shifted.graph.initializer}) == shared
