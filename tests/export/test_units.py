"""Fast unit tests of the export room: presets, wrappers, graph inspection (no torch.onnx export)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vsseg_edge.core.config import parse_size
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.preprocess import PreprocessSpec, preprocess
from vsseg_edge.export.parity import ParityReport, synthetic_frames
from vsseg_edge.export.presets import ExportPreset, load_preset
from vsseg_edge.export.wrappers import ArgmaxLabels, StaticAdaptiveAvgPool, Uint8NHWCInput, static_adaptive_pools
from vsseg_edge.measure.compare import compare_outputs


@pytest.mark.parametrize("in_hw", [(8, 16), (7, 13), (12, 12)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_static_pool_equals_adaptive_pool(in_hw, bins):
    x = torch.randn(2, 4, *in_hw)
    ref = nn.AdaptiveAvgPool2d(bins)(x)
    got = StaticAdaptiveAvgPool(in_hw, (bins, bins))(x)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-6)


def test_static_adaptive_pools_copies_and_replaces(tiny_factory):
    model = tiny_factory()
    x = torch.randn(1, 3, 64, 128)
    swapped, n = static_adaptive_pools(model, x)
    assert n == 4
    assert sum(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules()) == 4  # original untouched
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in swapped.modules())
    with torch.no_grad():
        assert torch.allclose(swapped(x), model(x), atol=1e-5)


def test_uint8_wrapper_matches_core_preprocess(tiny_factory):
    """The in-graph normalisation computes what core.preprocess computes for the float model."""
    model = tiny_factory()
    spec = PreprocessSpec(height=64, width=128, channel_order="rgb", scale=0.5)
    frame = synthetic_frames(1, (64, 128))[0]
    raw = torch.from_numpy(preprocess(frame, spec.replace(dtype="uint8", layout="nhwc")))
    ref_in = torch.from_numpy(preprocess(frame, spec))
    with torch.no_grad():
        got = Uint8NHWCInput(model, spec)(raw)
        labels = ArgmaxLabels(Uint8NHWCInput(model, spec), "uint8")(raw)
        ref = model(ref_in)
    assert torch.allclose(got, ref, atol=1e-5)
    assert labels.dtype == torch.uint8 and labels.shape == (1, 64, 128)
    assert torch.equal(labels.long(), ref.argmax(1))


def test_preset_yaml_flags_and_errors(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("opset: 18\nuint8_input: true\nargmax: uint8\nparity_frames: frames\n")
    preset = load_preset(p, argmax="int32", size=(32, 64), opset=None)
    assert (preset.opset, preset.uint8_input, preset.argmax, preset.size) == (18, True, "int32", (32, 64))
    assert preset.parity_frames == str(tmp_path / "frames")  # relative to the preset file
    assert preset.output == "labels" and ExportPreset().output == "logits"
    p.write_text("opset: 17\ncolour: red\n")
    with pytest.raises(VssegError, match=r"unknown key\(s\) \['colour'\]"):
        load_preset(p)
    with pytest.raises(VssegError, match="opset must be 17 or later, got 16"):
        load_preset(None, opset=16)
    with pytest.raises(VssegError, match="argmax must be one of"):
        load_preset(None, argmax="int64")
    assert parse_size("64x128") == (64, 128)
    with pytest.raises(VssegError, match="--size"):
        parse_size("64by128")


def test_repo_presets_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "export"
    default, deploy = load_preset(root / "default.yaml"), load_preset(root / "uint8_argmax.yaml")
    assert default == ExportPreset()
    assert (deploy.uint8_input, deploy.argmax, deploy.output) == (True, "uint8", "labels")


def test_compare_figures_and_thresholds():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2, 4, 8, 8)).astype(np.float32)
    noisy = ref + 2e-3
    fig = compare_outputs([noisy], [ref], "logits")
    assert fig.max_abs == pytest.approx(2e-3, rel=1e-3) and fig.mean_abs == pytest.approx(2e-3, rel=1e-3)
    assert fig.agreement.fraction == 1.0 and fig.ref_abs_max == pytest.approx(np.abs(ref).max())
    assert fig.noise_to_signal == pytest.approx(4e-6 / float(np.mean(ref.astype(np.float64) ** 2)), rel=1e-3)
    labels = ref.argmax(1).astype(np.uint8)
    labels[0, 0, :4] = (labels[0, 0, :4] + 1) % 4  # 4 of 128 pixels wrong
    fig_l = compare_outputs([labels], [ref], "labels", "logits")
    assert fig_l.agreement.fraction == pytest.approx(1 - 4 / 128) and fig_l.max_abs is None
    assert fig_l.noise_to_signal == pytest.approx(4 / 128)
    assert not ParityReport("x", 2, None, None, fig_l.agreement.fraction, 3.0, 1e-3, 0.999).passed
    assert ParityReport("x", 2, 1e-4, 1e-5, 1.0, 3.0, 1e-3, 0.999).passed
    assert not ParityReport("x", 2, 2e-3, 1e-5, 1.0, 3.0, 1e-3, 0.999).passed


def test_synthetic_frames_are_deterministic_and_smooth():
    a, b = synthetic_frames(2, (64, 128)), synthetic_frames(2, (64, 128))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (64, 128, 3) and a[0].dtype == np.uint8
    assert not np.array_equal(a[0], a[1])
    assert a[0].std() > 20  # not flat


def test_boundary_check_refuses_int64():
    import onnx
    from onnx import TensorProto, helper

    from vsseg_edge.export.simplify import check_boundary_dtypes, summary

    def argmax_graph(cast_to):
        nodes = [helper.make_node("ArgMax", ["x"], ["idx"], axis=1, keepdims=0)]
        out_type, out_name = TensorProto.INT64, "idx"
        if cast_to is not None:
            nodes.append(helper.make_node("Cast", ["idx"], ["labels"], to=cast_to))
            out_type, out_name = cast_to, "labels"
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
            [helper.make_tensor_value_info(out_name, out_type, [1, 2, 2])],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    with pytest.raises(VssegError, match="idx: INT64"):
        check_boundary_dtypes(argmax_graph(None), "m.onnx")
    ok = argmax_graph(TensorProto.UINT8)
    onnx.checker.check_model(ok)
    check_boundary_dtypes(ok, "m.onnx")
    s = summary(ok)
    assert s["ops"] == {"ArgMax": 1, "Cast": 1} and s["outputs"][0]["dtype"] == "UINT8" and s["opset"] == 17
