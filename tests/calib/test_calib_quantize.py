"""Both Q/DQ flavours from the tiny FP32 model, and the structure checks that accept or refuse them."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vsseg_edge.calib.frames import calibration_frames
from vsseg_edge.calib.quantize_ort import FrameReader, chunk_size, final_resize_nodes, quantize_ort
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.manifest import manifest_preprocess, read_manifest
from vsseg_edge.onnx_graph import check_qdq_structure, require_qdq_structure


@pytest.fixture(scope="module")
def reader(cs_root, tiny_onnx):
    spec = manifest_preprocess(read_manifest(tiny_onnx, kind="onnx"), "tiny")
    frames, _ = calibration_frames(cs_root, 6, seed=0)
    return FrameReader(frames.frames, spec, "image")


@pytest.fixture(scope="module")
def quantised(tmp_path_factory, tiny_onnx, reader):
    out = tmp_path_factory.mktemp("q")
    paths = {}
    for target in ("ort", "trt"):
        paths[target] = out / f"tiny.{target}.onnx"
        quantize_ort(
            tiny_onnx, paths[target], target=target, method="entropy", cache_path=out / f"{target}.json", reader=reader
        )
    return paths


def _ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_reader_feeds_the_one_preprocessing(reader):
    from vsseg_edge.core.preprocess import preprocess_batch

    reader.rewind()
    first = reader.get_next()["image"]
    assert first.shape == (1, 3, 64, 128) and first.dtype == np.float32
    np.testing.assert_array_equal(first, preprocess_batch([reader.frames[0].read()], reader.spec))
    reader.set_range(4, 6)
    assert reader.get_next() is not None and reader.get_next() is not None and reader.get_next() is None
    assert chunk_size(6) == 3 and chunk_size(500) == 4 and chunk_size(7) == 1 and chunk_size(11) == 1


def test_trt_flavour_is_symmetric_int8_per_channel(quantised):
    rep = require_qdq_structure(quantised["trt"], "trt")
    assert rep.quantized_convs == 4 and not rep.float_convs
    model = onnx.load(str(quantised["trt"]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zps = [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    assert not any(
        inits[n.input[0]].dtype == np.int32
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits
    )  # biases stay float


def test_ort_flavour_uses_uint8_activations_and_keeps_final_resize_float(quantised, tiny_onnx):
    assert check_qdq_structure(quantised["ort"], "ort").ok
    model = onnx.load(str(quantised["ort"]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    act_zp = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert act_zp and all(z.dtype == np.uint8 for z in act_zp)
    resize = final_resize_nodes(onnx.load(str(tiny_onnx)))
    assert resize == ["/Resize"]
    node = next(n for n in model.graph.node if n.op_type == "Resize")
    assert node.output[0] in {o.name for o in model.graph.output}  # float logits, no Q/DQ after the Resize
    assert not any(node.output[0] in n.input for n in model.graph.node if n.op_type == "QuantizeLinear")
    # the CPU flavour is not a TensorRT model: asymmetric u8 activations and int32 biases are refused
    problems = " ".join(check_qdq_structure(quantised["ort"], "trt").problems)
    assert "uint8" in problems and "int32 DequantizeLinear" in problems


@pytest.mark.parametrize("target", ["ort", "trt"])
def test_quantised_models_stay_close_to_fp32(quantised, tiny_onnx, reader, target):
    from vsseg_edge.runtime.backends.ort import ort_session

    reader.rewind()
    x = reader.get_next()
    f = ort_session(tiny_onnx, threads=1).run(None, x)[0]
    q = ort_session(quantised[target], threads=1).run(None, x)[0]
    assert q.shape == f.shape
    nsr = float(((q - f) ** 2).sum() / (f**2).sum())
    assert nsr < 0.05
    assert (q.argmax(1) == f.argmax(1)).mean() > 0.9


def test_fp32_model_is_not_a_qdq_model(tiny_onnx):
    with pytest.raises(VssegError, match="not a Q/DQ model"):
        require_qdq_structure(tiny_onnx, "trt")


def _hand_built(weight_scale, axis, out_type=TensorProto.FLOAT, bias_int32=False, zp=0):
    """x → Q/DQ → Conv(DQ(w)) → y, with the weight scale/axis/zero point and output type given."""
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.int8), "w_q")
    ws = numpy_helper.from_array(np.asarray(weight_scale, np.float32), "w_s")
    wz = numpy_helper.from_array(np.full(np.shape(weight_scale), zp, np.int8), "w_z")
    xs = numpy_helper.from_array(np.asarray(0.1, np.float32), "x_s")
    xz = numpy_helper.from_array(np.asarray(0, np.int8), "x_z")
    inits = [w, ws, wz, xs, xz]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"], name="qx"),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"], name="dqx"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], name="dqw", axis=axis),
    ]
    conv_in = ["xd", "wd"]
    if bias_int32:
        inits += [
            numpy_helper.from_array(np.zeros(4, np.int32), "b_q"),
            numpy_helper.from_array(np.full(4, 0.01, np.float32), "b_s"),
            numpy_helper.from_array(np.zeros(4, np.int32), "b_z"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["bd"], name="dqb", axis=0))
        conv_in.append("bd")
    nodes.append(helper.make_node("Conv", conv_in, ["y"], name="conv"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", out_type, [1, 4, 4, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"weight_scale": [0.1, 0.1, 0.1, 0.1], "axis": 0}, None),
        ({"weight_scale": 0.1, "axis": 0}, "per tensor"),
        ({"weight_scale": [0.1, 0.1, 0.1, 0.1], "axis": 1}, "on axis 1"),
        ({"weight_scale": [0.1, 0.1, 0.1, 0.1], "axis": 0, "zp": 3}, "not 0"),
        ({"weight_scale": [0.1, 0.1, 0.1, 0.1], "axis": 0, "out_type": TensorProto.INT64}, "INT64"),
        ({"weight_scale": [0.1, 0.1, 0.1, 0.1], "axis": 0, "bias_int32": True}, "int32 DequantizeLinear"),
    ],
)
def test_structure_rules_on_hand_built_models(kwargs, problem):
    rep = check_qdq_structure(_hand_built(**kwargs), "trt")
    if problem is None:
        assert rep.ok, rep.problems
    else:
        assert not rep.ok and any(problem in p for p in rep.problems), rep.problems


@pytest.mark.slow
def test_modelopt_flavour_if_installed(tmp_path, tiny_onnx, reader, quantised):
    """ModelOpt (installed without its [onnx] extra) places Q/DQ for TensorRT, with our cached scales."""
    from vsseg_edge.calib.quantize_trt import (
        modelopt_available,
        quantize_modelopt,
        write_trt_scale_cache,
    )

    cache = tmp_path / "scales.trtcache"
    n = write_trt_scale_cache(quantised["trt"].parent / "trt.json", cache)
    lines = cache.read_text().splitlines()[1:]  # "tensor: <big-endian float32 scale in hex>"
    scales = {
        name: struct.unpack("!f", bytes.fromhex(hexval))[0] for name, hexval in (ln.rsplit(": ", 1) for ln in lines)
    }
    assert n == len(scales) > 0 and all(s > 0 for s in scales.values())
    if not modelopt_available():
        pytest.skip("nvidia-modelopt is not installed (optional; see vsseg_edge/calib/quantize_trt.py)")
    reader.rewind()
    sample = reader.get_next()["image"]
    out = tmp_path / "tiny.mo.onnx"
    info = quantize_modelopt(
        tiny_onnx,
        out,
        trt_cache=cache,
        sample=sample,
        input_name="image",
        method="entropy",
        nodes_to_exclude=["/head/Conv"],
    )
    assert info["quantizer"].startswith("nvidia-modelopt")
    rep = require_qdq_structure(out, "trt")
    assert rep.float_convs == ["/head/Conv"] and rep.quantized_convs == 3
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    used = {n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[1] in inits}
    replaced = [s for s in used if s.removesuffix("_scale") in scales]  # activation Q nodes, not weights
    assert replaced
    assert all(np.isclose(float(inits[s]), scales[s.removesuffix("_scale")], rtol=1e-6) for s in replaced)


def test_reduce_range_is_an_ort_only_setting():
    from vsseg_edge.calib.config import CalibConfig
    from vsseg_edge.calib.quantize_ort import ort_settings

    assert ort_settings("ort", "percentile", 99.9)["extra_options"]["CalibPercentile"] == 99.9
    assert CalibConfig(target="ort", reduce_range="integer_kernels").reduce_range == "integer_kernels"
    with pytest.raises(VssegError, match="reduce_range is for target 'ort'"):
        CalibConfig(target="trt", reduce_range=True)


def _calibrated(model, frames, out, **settings):
    from vsseg_edge.calib.config import CalibConfig
    from vsseg_edge.calib.pipeline import calibrate

    cfg = CalibConfig(**{"num_frames": 6, "gate": False, "tc_gate": False, "speed_runs": 0, **settings})
    return calibrate(model, frames, out, cfg, log=lambda s: None)


def test_small_channel_convolutions_stay_in_float_with_onnxruntimes_quantiser(tmp_path, cs_root, narrow_onnx):
    """Placement `trt` (the default): onnxruntime's quantiser leaves in float the convolutions TensorRT has no
    int8 kernel for, as ModelOpt does; `all` quantises them too."""
    from vsseg_edge.onnx_graph import qdq_candidates, small_channel_convs

    model = narrow_onnx
    twelve = small_channel_convs(onnx.load(str(model)))
    assert len(twelve) == 1  # the 12 → 12 convolution
    for target in ("ort", "trt"):
        out = tmp_path / f"{target}.qdq.onnx"
        man = _calibrated(model, cs_root, out, target=target, quantizer="ort")
        assert man["quantization"]["small_channel_float"] == twelve
        quantised = qdq_candidates(onnx.load(str(out)))
        assert twelve[0] not in quantised and len(quantised) == 5  # stem, down, two of the bottleneck's, head
    _calibrated(model, cs_root, tmp_path / "all.qdq.onnx", target="ort", quantizer="ort", placement="all")
    assert twelve[0] in qdq_candidates(onnx.load(str(tmp_path / "all.qdq.onnx")))
    # `quantizer: auto` takes onnxruntime's quantiser for placement `all`; ModelOpt cannot place it
    man = _calibrated(model, cs_root, tmp_path / "auto.qdq.onnx", target="trt", placement="all")
    assert man["quantization"]["quantizer"].startswith("onnxruntime")
    with pytest.raises(VssegError, match="placement 'all' needs the onnxruntime quantiser"):
        _calibrated(model, cs_root, tmp_path / "x.onnx", target="trt", quantizer="modelopt", placement="all")


def _integer_convs_by_onnxruntime(path, tmp_path) -> list[str]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [n.name for n in onnx.load(so.optimized_model_filepath).graph.node if n.op_type == "QLinearConv"]


def _weight_levels(path) -> dict[str, int]:
    """Conv node → the largest |int8 level| of its weight (an int8 initializer, or a float one quantised in the
    graph by a QuantizeLinear with per-channel scales on axis 0)."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for n in model.graph.node:
        if n.op_type != "Conv" or n.input[1] not in producers:
            continue
        src = producers[n.input[1]].input[0]
        if src in inits:
            levels = inits[src].astype(np.int32)
        else:  # float weight → QuantizeLinear
            q = producers[src]
            w, scale = inits[q.input[0]], inits[q.input[1]]
            levels = np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)), -128, 127)
        out[n.name] = int(np.abs(levels).max())
    return out


def test_onnxruntime_fuses_exactly_the_integer_kernel_convs(tmp_path, cs_root, tiny_onnx):
    """`integer_kernel_convs` names the convolutions onnxruntime fuses into QLinearConv: with every reader
    through Q/DQ (onnxruntime's quantiser, every op type) all four; with only convolutions reading the quantised
    tensors, only the stem (read by `down` alone; Add, Shape and Resize read the others' outputs in float)."""
    from vsseg_edge.onnx_graph import integer_kernel_convs

    for readers, expected in (((), 4), (None, 1)):
        out = tmp_path / f"{expected}.qdq.onnx"
        _calibrated(tiny_onnx, cs_root, out, target="ort", quantizer="ort", quantized_readers=readers, op_types=())
        fused = integer_kernel_convs(onnx.load(str(out)))
        assert len(fused) == expected and sorted(fused) == sorted(_integer_convs_by_onnxruntime(out, tmp_path))


@pytest.mark.parametrize("quantizer", ["ort", "modelopt"])
def test_seven_bit_weights_only_where_onnxruntime_runs_integer_convolutions(quantizer, tmp_path, cs_root, tiny_onnx):
    """`reduce_range: integer_kernels` gives 7-bit weights to exactly the convolutions onnxruntime runs as
    integer kernels (the others keep 8 bits: they run in float), whoever placed the Q/DQ; with ModelOpt the
    onnxruntime flavour is its symmetric int8 Q/DQ with the activations shifted to uint8."""
    from vsseg_edge.onnx_graph import check_qdq_structure, integer_kernel_convs

    if quantizer == "modelopt":
        pytest.importorskip("modelopt.onnx.quantization")
    out = tmp_path / "mixed.qdq.onnx"
    man = _calibrated(tiny_onnx, cs_root, out, target="ort", quantizer=quantizer, reduce_range="integer_kernels")
    fused = integer_kernel_convs(onnx.load(str(out)))
    assert fused == _integer_convs_by_onnxruntime(out, tmp_path)
    # onnxruntime's quantiser: Relu outputs get zero point 0, the Relu folds into the QuantizeLinear and the stem
    # fuses; ModelOpt's symmetric ranges (zero point 128 once shifted) keep the Relu, so nothing fuses
    assert fused == (["/stem/stem.0/Conv"] if quantizer == "ort" else [])
    assert (
        man["quantization"]["seven_bit_weights"] == fused and man["quantization"]["reduce_range"] == "integer_kernels"
    )
    levels = _weight_levels(out)
    assert all(levels.pop(c) in (63, 64) for c in fused) and len(levels) >= 3 and set(levels.values()) == {127}
    rep = check_qdq_structure(onnx.load(str(out)), "ort")
    assert rep.ok, rep.problems
    zero_points = {
        numpy_helper.to_array(i).dtype for i in onnx.load(str(out)).graph.initializer if "zero_point" in i.name
    }
    assert np.dtype(np.uint8) in zero_points  # uint8 activations

    for mode, allowed in ((True, {63, 64}), (False, {127})):
        _calibrated(
            tiny_onnx, cs_root, tmp_path / f"{mode}.qdq.onnx", target="ort", quantizer=quantizer, reduce_range=mode
        )
        assert set(_weight_levels(tmp_path / f"{mode}.qdq.onnx").values()) <= allowed
    with pytest.raises(VssegError, match="reduce_range must be true, false or 'integer_kernels'"):
        _calibrated(tiny_onnx, cs_root, tmp_path / "x.onnx", target="ort", reduce_range="some")


def test_narrowed_weights_and_requantised_biases_compute_what_they_did(tmp_path, cs_root, tiny_onnx):
    """`narrow_weights` on every convolution of onnxruntime's Q/DQ (int8 weights, int32 biases): the logits
    move by about a 7-bit weight step, not more, and onnxruntime still runs every convolution as an integer
    kernel."""
    import onnxruntime as ort

    from vsseg_edge.onnx_graph import narrow_weights, quantized_convs

    # every reader through Q/DQ: every convolution runs as QLinearConv, the head with its int32 bias
    out = tmp_path / "w8.qdq.onnx"
    _calibrated(tiny_onnx, cs_root, out, target="ort", quantizer="ort", reduce_range=False, quantized_readers=())
    model = onnx.load(str(out))
    assert any(n.op_type == "DequantizeLinear" and n.output[0] == "head.bias" for n in model.graph.node)
    narrowed = narrow_weights(model, quantized_convs(model))
    x = np.random.default_rng(0).uniform(-2, 2, (1, 3, 64, 128)).astype(np.float32)

    def run(m, level):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess.run(None, {"image": x})[0]

    exact = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    before, after = run(model, exact), run(narrowed, exact)
    assert set(_weight_levels_of(narrowed).values()) <= {63, 64} and set(_weight_levels_of(model).values()) == {127}
    spread = float(before.max() - before.min())
    assert 0 < float(np.abs(after - before).max()) < 0.1 * spread
    assert (after.argmax(1) == before.argmax(1)).mean() > 0.9
    # the biases at the new scales keep every convolution an integer kernel (onnxruntime runs a convolution whose
    # int32 bias scale is not input × weight scale in float), and the kernels compute what the graph says
    path = tmp_path / "narrowed.qdq.onnx"
    onnx.save(narrowed, str(path))
    assert len(_integer_convs_by_onnxruntime(path, tmp_path)) == 4
    kernels = run(narrowed, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert float(np.abs(kernels - after).max()) < 0.02 * spread


def _weight_levels_of(model) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, str(Path(tmp) / "m.onnx"))
        return _weight_levels(Path(tmp) / "m.onnx")


@pytest.mark.parametrize("quantizer", ["ort", "modelopt"])
def test_an_excluded_convolution_reads_float_even_where_its_input_is_quantised_for_another_node(
    quantizer, tmp_path, cs_root, tiny_onnx
):
    """`down`'s output is read by the residual branch `res` and the Add; with every reader through Q/DQ it is
    quantised for the Add, and onnxruntime's quantiser would hand `res` the same Q/DQ although excluded."""
    from vsseg_edge.onnx_graph import qdq_candidates

    if quantizer == "modelopt":
        pytest.importorskip("modelopt.onnx.quantization")
    out = tmp_path / "x.qdq.onnx"
    _calibrated(
        tiny_onnx, cs_root, out, quantizer=quantizer, exclude=("/res/res.0/Conv",), quantized_readers=(), op_types=()
    )
    quantised = qdq_candidates(onnx.load(str(out)))
    assert "/res/res.0/Conv" not in quantised and "/down/down.0/Conv" in quantised


def test_a_model_of_small_channel_convolutions_only_is_refused_with_the_reason(tmp_path, cs_root, thin_onnx):
    """Nothing TensorRT would run in int8: one line that says so and how to quantise them anyway."""
    path = thin_onnx
    for target in ("ort", "trt"):
        with pytest.raises(VssegError, match="nothing to quantise: its 2 convolution") as err:
            _calibrated(path, cs_root, tmp_path / "x.onnx", target=target)
        assert "\n" not in str(err.value) and "--override placement=all quantises them" in str(err.value)
    _calibrated(path, cs_root, tmp_path / "all.onnx", target="ort", placement="all", quantizer="ort")
    assert (tmp_path / "all.onnx").is_file()


def test_the_quantiser_writes_nothing_beside_the_model(tmp_path, tiny_onnx, reader, monkeypatch):
    """onnxruntime's calibrator and quantize_static save a shape-inferred copy beside the model they read; they read
    a copy in a temporary folder, so a read-only model folder works and two calibrations of one model do not delete
    each other's copy (seen: FileNotFoundError on MODEL-inferred.onnx)."""
    import shutil

    import onnx.shape_inference

    model_dir = tmp_path / "models"
    model_dir.mkdir()
    model = model_dir / "tiny.onnx"
    shutil.copyfile(tiny_onnx, model)
    written = []
    infer = onnx.shape_inference.infer_shapes_path
    monkeypatch.setattr(
        onnx.shape_inference, "infer_shapes_path", lambda src, dst="", *a, **k: written.append(dst) or infer(src, dst)
    )
    out = tmp_path / "q.onnx"
    quantize_ort(model, out, target="trt", method="minmax", cache_path=tmp_path / "r.json", reader=reader)
    assert written and not [w for w in written if Path(w).parent == model_dir], written
    assert sorted(p.name for p in model_dir.iterdir()) == ["tiny.onnx"] and out.is_file()


@pytest.mark.parametrize("quantizer", ["ort", "modelopt"])
def test_integer_outputs_let_onnxruntime_run_the_quantised_convolutions_in_integer(
    quantizer, tmp_path, cs_root, tiny_onnx, reader
):
    """`integer_outputs`: the quantised convolutions whose outputs were read in float get a quantised output, so
    onnxruntime fuses them into QLinearConv (checked against its own optimised graph); one more rounding each, so
    close to the model without it, not equal; the structure stays a valid onnxruntime-flavour model."""
    import onnxruntime as ort

    from vsseg_edge.calib.config import CalibConfig
    from vsseg_edge.onnx_graph import integer_kernel_convs

    if quantizer == "modelopt":
        pytest.importorskip("modelopt.onnx.quantization")
    plain, fast = tmp_path / "plain.qdq.onnx", tmp_path / "fast.qdq.onnx"
    _calibrated(tiny_onnx, cs_root, plain, target="ort", quantizer=quantizer)
    man = _calibrated(tiny_onnx, cs_root, fast, target="ort", quantizer=quantizer, integer_outputs=True)
    before = integer_kernel_convs(onnx.load(str(plain)))
    fused = _integer_convs_by_onnxruntime(fast, tmp_path)
    added = man["quantization"]["integer_outputs"]
    assert added and not set(added) & set(before)
    assert sorted(fused) == sorted(integer_kernel_convs(onnx.load(str(fast)))) == sorted([*before, *added])
    assert check_qdq_structure(onnx.load(str(fast)), "ort").ok

    reader.rewind()
    x = reader.get_next()["image"]
    outs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
        for p in (plain, fast)
    ]
    agree = float(np.mean(outs[0].argmax(1) == outs[1].argmax(1)))
    assert 0.9 < agree and not np.array_equal(outs[0], outs[1])  # one more rounding per convolution
    with pytest.raises(VssegError, match="integer_outputs is for target 'ort'"):
        CalibConfig(target="trt", integer_outputs=True)


def test_a_convolution_output_a_reader_already_quantises_reuses_that_quantiser():
    """`quantize_conv_outputs`: where another convolution already reads the output through a QuantizeLinear, the float
    readers get a DequantizeLinear of that one (no new quantiser, no orphan zero point); a graph output is left."""
    from vsseg_edge.onnx_graph import quantize_conv_outputs

    f32 = TensorProto.FLOAT
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.int8), "w8"),
        numpy_helper.from_array(np.array([0.5], np.float32), "ws"),
        numpy_helper.from_array(np.zeros(1, np.int8), "wz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w8", "ws", "wz"], ["w"], axis=0),
        helper.make_node("Conv", ["xd", "w"], ["y"], name="conv1"),
        helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["yd"]),
        helper.make_node("Conv", ["yd", "w"], ["c2"], name="conv2"),
        helper.make_node("Add", ["y", "c2"], ["out"], name="add"),
        helper.make_node("Conv", ["yd", "w"], ["out2"], name="conv3"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", f32, [1, 1, 4, 4])],
        [helper.make_tensor_value_info(n, f32, [1, 1, 4, 4]) for n in ("out", "out2")],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out, changed = quantize_conv_outputs(model, {"c2": 0.2})
    onnx.checker.check_model(out)
    g = out.graph
    add = next(n for n in g.node if n.name == "add")
    assert changed == ["conv1", "conv2"] and add.input[0] != "y" and add.input[1] != "c2"
    readers_of = {t: [n.op_type for n in g.node if t in n.input] for t in ("y", "c2")}
    assert readers_of == {"y": ["QuantizeLinear"], "c2": ["QuantizeLinear"]}
    assert sum(n.op_type == "QuantizeLinear" for n in g.node) == 3  # x, y (reused), c2 (new)
    inits_read = {t for n in g.node for t in n.input}
    assert all(i.name in inits_read for i in g.initializer)  # the new zero point only because c2's quantiser is new
    out, changed = quantize_conv_outputs(model, {})  # no scale for c2: only conv1, which reuses y's quantiser
    assert changed == ["conv1"] and all(
        i.name in {t for n in out.graph.node for t in n.input} for i in out.graph.initializer
    )
