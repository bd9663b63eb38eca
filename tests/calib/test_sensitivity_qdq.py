"""The sensitivity search on the Q/DQ graph: candidates, keeping nodes in float, and the leave-one-out ranking."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from vsseg_edge.calib.frames import calibration_frames, evaluation_frames
from vsseg_edge.calib.gate import Evaluator
from vsseg_edge.calib.quantize_ort import FrameReader, quantize_ort
from vsseg_edge.calib.sensitivity import rank_qdq_nodes
from vsseg_edge.core.manifest import manifest_preprocess, read_manifest
from vsseg_edge.onnx_graph import keep_in_float, qdq_candidates
from vsseg_edge.runtime.backends.ort import ort_session

CONVS = ["/stem/stem.0/Conv", "/down/down.0/Conv", "/res/res.0/Conv", "/head/Conv"]


@pytest.fixture(scope="module")
def setting(tmp_path_factory, cs_root, tiny_onnx):
    """(TensorRT-flavour and onnxruntime-flavour Q/DQ models of the tiny net, an Evaluator on 2 val frames)."""
    man = read_manifest(tiny_onnx, kind="onnx")
    spec = manifest_preprocess(man, "tiny")
    calib, _ = calibration_frames(cs_root, 4, seed=0)
    out, models = tmp_path_factory.mktemp("sens"), {}
    for target in ("trt", "ort"):
        path = out / f"{target}.onnx"
        quantize_ort(
            tiny_onnx,
            path,
            target=target,
            method="minmax",
            cache_path=out / f"{target}.json",
            reader=FrameReader(calib.frames, spec, "image"),
            op_types=("Conv", "Add"),
        )
        models[target] = onnx.load(str(path))
    held = evaluation_frames(cs_root, 2, 0, "val")
    ev = Evaluator(tiny_onnx, held.frames, spec, man["classes"], threads=1, error_frames=2, exact_qdq=True)
    return models, ev


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _badly_scale(model: onnx.ModelProto, node_name: str, factor: float) -> onnx.ModelProto:
    """A copy where the activation Q/DQ pair feeding `node_name` gets its own scale × `factor`."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    prod = _producers(out)
    node = next(n for n in out.graph.node if n.name == node_name)
    dq = prod[node.input[0]]
    q = prod[dq.input[0]]
    scale = next(i for i in out.graph.initializer if i.name == q.input[1])
    bad = (numpy_helper.to_array(scale) * factor).astype(np.float32)
    out.graph.initializer.append(numpy_helper.from_array(bad, "bad_scale"))
    q.input[1] = dq.input[1] = "bad_scale"
    return out


def test_candidates_are_every_node_behind_activation_qdq(setting):
    models, _ = setting
    cands = qdq_candidates(models["trt"])
    assert set(CONVS) <= set(cands) and "/Add" in cands
    assert not any(
        n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in models["trt"].graph.node if n.name in cands
    )


def test_keep_in_float_feeds_float_inputs_and_drops_orphan_qdq(setting, tiny_onnx):
    models, _ = setting
    trt = models["trt"]
    kept = keep_in_float(trt, ["/head/Conv"])
    onnx.checker.check_model(kept)
    head = next(n for n in kept.graph.node if n.name == "/head/Conv")
    fp32 = next(n for n in onnx.load(str(tiny_onnx)).graph.node if n.name == "/head/Conv")
    assert list(head.input) == list(fp32.input)  # activation and weights straight from the float tensors

    def count(m):
        return sum(n.op_type == "QuantizeLinear" for n in m.graph.node)

    assert count(kept) == count(trt) - 2  # the activation pair and the weight pair are gone
    assert len(trt.graph.node) - len(kept.graph.node) == 4
    # onnxruntime's flavour stores int8 weights: the conv gets their dequantised value as a float initializer
    ort = keep_in_float(models["ort"], ["/head/Conv"])
    head = next(n for n in ort.graph.node if n.name == "/head/Conv")
    prod = _producers(ort)
    assert not any(i in prod and prod[i].op_type == "DequantizeLinear" for i in head.input)
    w = next(i for i in ort.graph.initializer if i.name == head.input[1])
    assert w.data_type == onnx.TensorProto.FLOAT
    with pytest.raises(ValueError, match="no node"):
        keep_in_float(trt, ["/nope"])


def test_badly_scaled_tensor_is_ranked_first(setting):
    models, ev = setting
    for victim in ("/head/Conv", "/down/down.0/Conv"):
        bad = _badly_scale(models["trt"], victim, 40.0)

        def error(m):
            return ev.output_error(m, 2)

        base, ranked = rank_qdq_nodes(bad, qdq_candidates(bad), error)
        assert ranked[0][0] == victim, ranked[:3]
        assert ranked[0][1] > 0.5 * base and ranked[0][1] > 5 * max(ranked[1][1], 1e-12)
        assert base > 3 * error(models["trt"])  # the bad scale really hurts the model


def test_ranking_models_run_in_memory(setting):
    models, ev = setting
    sess = ort_session(models["trt"], threads=1, exact_qdq=True)
    assert sess.get_inputs()[0].name == "image"
    assert np.isfinite(ev.output_error(models["trt"], 2))
