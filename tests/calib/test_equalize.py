"""Per-channel range equalisation (calib/equalize.py): which tensors it rewrites, that the rewrite keeps the
model's function, that it equalises the channels, that int8 rounding then loses less, and `calibrate` with it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vsseg_edge.calib.equalize import channel_ranges, equalize, find_sites

H = W = 16


def _net(seed: int = 0, spread: float = 100.0, shared_weight: bool = False) -> onnx.ModelProto:
    """A small graph with every case the pass distinguishes:

    x → Conv c0 → BN → PRelu → p ─┬→ Conv c1 (1×1) → z1 ─┬→ Conv c3 → z3 → Add → s
                                  │                      └────────────────→ Add   (z1 read by an Add: not a site)
                                  └→ Conv c2 (3×3, group 2) → z2 → Relu → r → ConvTranspose ct → u
    plus c4, reading `a` = Conv(x) whose weight is shared with c5 when `shared_weight` (not a site then).
    The channels of the BN's output span `spread`: the per-tensor int8 scale of `p` is set by the largest.
    """
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    inits = {
        "W0": w(8, 3, 3, 3),
        "b0": w(8),
        "g": np.geomspace(spread, 1.0, 8).astype(np.float32),  # channel c of the BN output ~ g[c]
        "beta": w(8, scale=0.1),
        "mu": w(8, scale=0.1),
        "var": (rng.uniform(0.5, 2.0, 8)).astype(np.float32),
        "slope": np.full((8, 1, 1), 0.25, np.float32),
        "W1": w(4, 8, 1, 1),
        "W2": w(4, 4, 3, 3),
        "W3": w(4, 4, 1, 1),
        "WT": w(4, 2, 2, 2),
        "Wa": w(4, 3, 1, 1),
        "W4": w(4, 4, 1, 1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W0", "b0"], ["y0"], name="c0", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["y0", "g", "beta", "mu", "var"], ["y1"], name="bn"),
        helper.make_node("PRelu", ["y1", "slope"], ["p"], name="prelu"),
        helper.make_node("Conv", ["p", "W1"], ["z1"], name="c1"),
        helper.make_node("Conv", ["p", "W2"], ["z2"], name="c2", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["z1", "W3"], ["z3"], name="c3"),
        helper.make_node("Add", ["z1", "z3"], ["s"], name="add"),
        helper.make_node("Relu", ["z2"], ["r"], name="relu"),
        helper.make_node("ConvTranspose", ["r", "WT"], ["u"], name="ct", strides=[2, 2]),
        helper.make_node("Conv", ["x", "Wa"], ["a"], name="ca"),
        helper.make_node("Conv", ["a", "W4"], ["z4"], name="c4"),
    ]
    outputs = ["s", "u", "z4"]
    if shared_weight:  # c5 reads `a` too, with c4's weight
        nodes.append(helper.make_node("Conv", ["a", "W4"], ["z5"], name="c5"))
        outputs.append("z5")
    graph = helper.make_graph(
        nodes,
        "eq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(n: int = 4, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, H, W)).astype(np.float32)} for _ in range(n)]


def _run(model: onnx.ModelProto, feed) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def test_sites_are_the_tensors_read_only_by_convolutions_with_a_scalable_producer():
    assert {s.tensor for s in find_sites(_net(), branch=False)} == {"p", "r", "a"}
    sites = {s.tensor: s for s in find_sites(_net(), branch=True)}
    assert set(sites) == {"p", "r", "a", "z1"}
    assert sites["z1"].scaled is None and sites["z1"].readers == ("c3",)  # the Add keeps z1: a Mul for c3 only
    assert sites["p"].scaled == "bn" and sites["p"].via == "prelu" and set(sites["p"].readers) == {"c1", "c2"}
    assert sites["r"].scaled == "c2" and sites["r"].via == "relu" and sites["r"].readers == ("ct",)
    assert sites["a"].scaled == "ca" and sites["a"].via is None
    # z3 is read by the Add only, x is the graph input: neither is a site;
    # a weight shared by two readers is never rewritten
    assert "a" not in {s.tensor for s in find_sites(_net(shared_weight=True))}


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_equalised_model_computes_the_same_function(alpha):
    model = _net()
    feeds = _feeds()
    ranges = channel_ranges(model, find_sites(model, branch=True), feeds, percentile=100.0)
    eq, info = equalize(model, ranges, alpha, branch=True)
    assert {s["tensor"] for s in info["sites"]} == {"p", "r", "a", "z1"}
    ops = {n.name: n for n in eq.graph.node}
    assert ops["c3"].input[0] == "z1_eq" and "z1" in ops["add"].input and ops["z1_eq_mul"].op_type == "Mul"
    for feed in _feeds(2, seed=7):  # frames the ranges were not measured on
        for before, after in zip(_run(model, feed), _run(eq, feed)):
            np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    # the input model is left as it was
    assert np.array_equal(
        numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "g")),
        np.geomspace(100.0, 1.0, 8).astype(np.float32),
    )


def test_alpha_one_gives_every_channel_the_same_range_and_keeps_the_largest():
    model = _net()
    feeds = _feeds()
    before = channel_ranges(model, find_sites(model), feeds, percentile=100.0)
    eq, info = equalize(model, before, 1.0, max_scale=1e4)
    after = channel_ranges(eq, find_sites(eq), feeds, percentile=100.0)
    spread = before["p"].max() / before["p"].min()
    assert spread > 20  # what the fixture builds
    assert after["p"].max() / after["p"].min() < 1.01
    # max_scale bounds how far apart two channels' scales may move
    bounded = channel_ranges(equalize(model, before, 1.0, max_scale=4.0)[0], find_sites(eq), feeds, percentile=100.0)
    assert bounded["p"].max() / bounded["p"].min() >= 0.99 * spread / 4
    assert after["p"].max() == pytest.approx(before["p"].max(), rel=1e-3)
    site = next(s for s in info["sites"] if s["tensor"] == "p")
    assert site["spread_before"] > 5 and site["spread_after"] == pytest.approx(1.0, abs=0.01)


def _int8_error(model: onnx.ModelProto, feeds) -> float:
    """Relative error of c1's output when its input `p` is quantised per tensor, symmetric int8 (what one
    Q/DQ pair does), against the float output."""
    ranges = channel_ranges(model, find_sites(model), feeds, percentile=100.0)
    scale = float(ranges["p"].max()) / 127
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, None))
    w1 = numpy_helper.to_array(next(i for i in probe.graph.initializer if i.name == "W1"))[:, :, 0, 0]
    err = ref = 0.0
    for feed in feeds:
        p = _run(probe, feed)[-1][0]
        q = np.clip(np.round(p / scale), -127, 127) * scale
        exact, rounded = np.einsum("oc,chw->ohw", w1, p), np.einsum("oc,chw->ohw", w1, q)
        err += float(np.sum((rounded - exact) ** 2))
        ref += float(np.sum(exact**2))
    return (err / ref) ** 0.5


def test_equalisation_lowers_the_int8_rounding_error_of_a_spread_tensor():
    model = _net(spread=300.0)
    feeds = _feeds(6)
    ranges = channel_ranges(model, find_sites(model), feeds, percentile=100.0)
    plain = _int8_error(model, feeds)
    for alpha in (0.5, 1.0):
        assert _int8_error(equalize(model, ranges, alpha)[0], feeds) < 0.7 * plain


def test_bad_alpha_and_no_frames_are_refused():
    model = _net()
    with pytest.raises(ValueError, match="alpha"):
        equalize(model, {}, 0.0)
    with pytest.raises(ValueError, match="no frames"):
        channel_ranges(model, find_sites(model), [])


def test_calibrate_with_equalisation_records_it_and_passes_the_gate(tmp_path, cs_root, tiny_onnx):
    from vsseg_edge.calib.config import CalibConfig
    from vsseg_edge.calib.pipeline import calibrate

    out = tmp_path / "tiny.int8.qdq.onnx"
    cfg = CalibConfig(target="trt", quantizer="ort", num_frames=6, eval_frames=4, sensitivity_frames=2, equalize=0.5)
    man = calibrate(tiny_onnx, cs_root, out, cfg, log=lambda s: None)
    eq = man["quantization"]["equalization"]
    assert eq["alpha"] == 0.5 and len(eq["sites"]) >= 1  # the stem's ReLU output, read by one convolution only
    assert man["config"]["equalize"] == 0.5 and man["gate"]["result"]["passed"]
    assert not list(tmp_path.glob("*equalized*"))  # the equalised FP32 copy is a working file, not an output


def test_with_outputs_exposes_intermediate_tensors_once_and_leaves_the_model():
    from vsseg_edge.onnx_graph import with_outputs

    model = _net()
    probe = with_outputs(model, ["p", "z1", "p", "u"])  # "u" is already a graph output
    assert [o.name for o in probe.graph.output] == ["s", "u", "z4", "p", "z1"]
    assert [o.name for o in model.graph.output] == ["s", "u", "z4"]
    out = dict(zip([o.name for o in probe.graph.output], _run(probe, _feeds(1)[0])))
    assert out["p"].shape == (1, 8, H, W) and out["z1"].shape == (1, 4, H, W)
