"""QAT (train/quant.py): fake INT8 in TensorRT's places, kept through checkpoints, exported as a Q/DQ ONNX that
passes the calibration's structure checks and computes exactly what torch trained."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.manifest import read_manifest
from vsseg_edge.core.preprocess import PreprocessSpec
from vsseg_edge.models import register_model
from vsseg_edge.models.checkpoint import model_from_checkpoint, save_checkpoint
from vsseg_edge.onnx_graph import check_qdq_structure, small_channel_convs
from vsseg_edge.train.quant import (
    QuantConfig,
    QuantConv2d,
    QuantConvTranspose2d,
    calibrate_inputs,
    quantize_modules,
    quantized_modules,
)

TINY = "qat-tiny"
CLASSES = ["a", "b", "c", "d"]
SPEC = PreprocessSpec(height=32, width=64)


class TinyDecoder(nn.Module):
    """conv-BN-PReLU (stride 2) ×2 → 1×1 classifier → 4× transposed conv: ESPNet's kinds of layers."""

    input_multiple = 4

    def __init__(self, num_classes: int):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False),
            nn.BatchNorm2d(8),
            nn.PReLU(8),
            nn.Conv2d(8, 8, 3, 2, 1, bias=False),
            nn.BatchNorm2d(8),
            nn.PReLU(8),
        )
        self.head = nn.Conv2d(8, num_classes, 1)
        self.up = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=4, bias=False)

    def forward(self, x):
        return self.up(self.head(self.enc(x)))


@register_model(TINY)
def tiny(num_classes: int) -> TinyDecoder:
    torch.manual_seed(0)
    return TinyDecoder(num_classes)


def batches(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, *SPEC.size, generator=g) for _ in range(n)]


def quantized(exclude=(), placement="all"):
    model = tiny(len(CLASSES)).eval()
    cfg = QuantConfig(enabled=True, exclude=tuple(exclude), placement=placement)
    quantize_modules(model, cfg)
    calibrate_inputs(model, batches(), cfg)
    return model


def test_every_conv_is_quantised_and_the_state_dict_keeps_its_keys():
    ref = tiny(len(CLASSES))
    model = quantized()
    kinds = {n: type(m) for n, m in model.named_modules()}
    assert kinds["enc.0"] is QuantConv2d and kinds["up"] is QuantConvTranspose2d and kinds["head"] is QuantConv2d
    assert set(model.state_dict()) == set(ref.state_dict()) | {f"{n}.input_amax" for n, _ in quantized_modules(model)}
    assert all(float(m.input_amax) > 0 for _, m in quantized_modules(model))


def test_excluded_modules_stay_float_and_an_unknown_name_is_an_error():
    model = quantized(exclude=["up"])
    assert type(model.up) is nn.ConvTranspose2d and type(model.head) is QuantConv2d
    with pytest.raises(VssegError, match="no module named 'nope'"):
        quantize_modules(tiny(4), QuantConfig(exclude=("nope",), placement="all"))


class SmallChannels(nn.Module):
    """Convolutions on both sides of ModelOpt's small-channel rule (channels < 16)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3, 1, 1)  # reads the input, 8 | Cout: int8
        self.narrow = nn.Conv2d(8, 8, 3, 1, 1)  # 8 → 8 inside: float
        self.widen = nn.Conv2d(8, 16, 1)  # Cout ≥ 16, 8 | Cin: int8
        self.odd = nn.Conv2d(16, 12, 3, 1, 1)  # Cin ≥ 16, 8 | Cin: int8
        self.twelve = nn.Conv2d(12, 12, 3, 1, 2, dilation=2)  # 12 → 12 (ESPNet's level-2 branches): float
        self.rect = nn.Conv2d(12, 16, (1, 3), 1, (0, 1))  # Cin < 16, non-square kernel: float
        self.depthwise = nn.Conv2d(16, 16, 3, 1, 1, groups=16)  # grouped, 8 | Cout, 3 × 3: int8
        self.dw1 = nn.Conv2d(16, 16, 1, groups=16)  # grouped 1 × 1: float
        self.big = nn.Conv2d(16, 32, 3, 1, 1)  # int8
        self.up = nn.ConvTranspose2d(32, 4, 2, 2)  # a ConvTranspose: int8

    def forward(self, x):
        y = self.widen(self.narrow(self.first(x)))
        y = self.rect(self.twelve(self.odd(y)))
        return self.up(self.big(self.dw1(self.depthwise(y))))


def _small_channels_onnx(tmp_path):
    torch.manual_seed(0)
    model = SmallChannels().eval()
    path = tmp_path / "small.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=True, optimize=False)
    graph = onnx.load(str(path))
    initializers = {i.name for i in graph.graph.initializer}
    weight = {  # node name → module name
        n.name: n.input[1].removesuffix(".weight")
        for n in graph.graph.node
        if n.op_type in ("Conv", "ConvTranspose") and n.input[1] in initializers
    }
    assert len(weight) == 10
    return model, path, weight


def test_trt_placement_leaves_what_modelopt_leaves_in_float(tmp_path):
    """The `trt` placement quantises exactly the convolutions ModelOpt's ONNX PTQ quantises (its int8 rule,
    run on the exported graph), so QAT trains the network TensorRT builds; calibration's ONNX form of the rule
    (`onnx_graph.small_channel_convs`) finds the same nodes."""
    gs = pytest.importorskip("onnx_graphsurgeon")
    graph_utils = pytest.importorskip("modelopt.onnx.quantization.graph_utils")

    model, path, weight = _small_channels_onnx(tmp_path)
    found = graph_utils.find_nodes_from_convs_to_exclude(gs.import_onnx(onnx.load(str(path))), "int8")
    modelopt_float = {weight[n] for n in found}
    done = quantize_modules(model, QuantConfig(enabled=True))
    assert set(weight.values()) - set(done) == modelopt_float == {"narrow", "twelve", "rect", "dw1"}
    assert small_channel_convs(onnx.load(str(path))) == found


def test_the_onnx_small_channel_rule_matches_the_torch_one(tmp_path):
    """Without ModelOpt installed: the ONNX rule and the torch rule leave the same convolutions in float."""
    model, path, weight = _small_channels_onnx(tmp_path)
    in_float = {weight[n] for n in small_channel_convs(onnx.load(str(path)))}
    done = quantize_modules(model, QuantConfig(enabled=True))
    assert in_float == set(weight.values()) - set(done) == {"narrow", "twelve", "rect", "dw1"}


def test_a_trt_checkpoint_lists_its_modules_and_reloads_them(tmp_path):
    from vsseg_edge.train.quant import quant_record

    model = quantized(placement="trt")
    assert [n for n, _ in quantized_modules(model)] == ["enc.0", "up"]  # enc.3 (8 → 8), head (8 → 4): float
    rec = quant_record(model, QuantConfig(enabled=True))
    assert rec["placement"] == "conv-input-weight-trt" and rec["modules"] == ["enc.0", "up"]
    path = tmp_path / "trt.pt"
    save_checkpoint(path, model, model_name=TINY, classes=CLASSES, preprocess=SPEC, quantization=rec)
    again, _ = model_from_checkpoint(path)
    assert type(again.enc[3]) is nn.Conv2d and type(again.up) is QuantConvTranspose2d
    x = batches(1, seed=3)[0]
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    with pytest.raises(VssegError, match="no module named 'gone'"):
        quantize_modules(tiny(4), {**rec, "modules": ["enc.0", "gone"]})
    with pytest.raises(VssegError, match="quant.placement must be one of"):
        QuantConfig(placement="every")


def test_fake_quantisation_changes_the_output_a_little_and_passes_gradients():
    x = batches(1, seed=5)[0]
    ref, model = tiny(len(CLASSES)).eval(), quantized()
    with torch.no_grad():
        a, b = ref(x), model(x)
    rel = float((a - b).norm() / a.norm())
    assert 1e-4 < rel < 0.2
    model.train()
    model(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_percentile_ranges_are_not_wider_than_the_maximum():
    model = tiny(len(CLASSES)).eval()
    quantize_modules(model, QuantConfig(placement="all"))
    top = calibrate_inputs(model, batches(), QuantConfig(calib_method="max"))
    pct = calibrate_inputs(model, batches(), QuantConfig(calib_method="percentile", percentile=99.0))
    assert all(pct[n] <= top[n] * (1 + 1e-6) for n in top)
    assert any(pct[n] < top[n] for n in top)


def test_weight_scales_are_per_output_channel_on_the_right_axis():
    model = quantized()
    w = model.up.weight  # ConvTranspose2d: Cin × Cout × kH × kW, output channels on axis 1
    with torch.no_grad():
        scaled = model.up.weight * torch.arange(1, 5, dtype=w.dtype).view(1, 4, 1, 1)
        model.up.weight.copy_(scaled)
        fq = model.up._quant_weight()
    levels = [len(torch.unique(fq[:, c])) for c in range(4)]
    assert max(levels) <= 256 and torch.allclose(fq, scaled, atol=float(scaled.abs().max()) / 127)


@pytest.fixture(scope="module")
def qat_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("qat") / "qat.pt"
    model = quantized()
    rec = QuantConfig(placement="all").record()
    save_checkpoint(path, model, model_name=TINY, classes=CLASSES, preprocess=SPEC, quantization=rec)
    return path, model


def test_a_checkpoint_rebuilds_the_fake_quantised_model(qat_checkpoint):
    path, model = qat_checkpoint
    again, ckpt = model_from_checkpoint(path)
    x = batches(1, seed=7)[0]
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert ckpt["quantization"]["placement"] == "conv-input-weight"
    assert read_manifest(path)["precision"] == "int8"


@pytest.mark.slow
@pytest.mark.parametrize("target", ["trt", "ort"])
def test_export_writes_a_qdq_model_that_computes_what_torch_trained(qat_checkpoint, tmp_path, target):
    import onnxruntime as ort

    from vsseg_edge.export.onnx_export import export_checkpoint
    from vsseg_edge.export.presets import ExportPreset

    path, model = qat_checkpoint
    out = tmp_path / f"qat.{target}.int8.qdq.onnx"
    export_checkpoint(path, out, ExportPreset(parity_count=1), target=target)
    man = read_manifest(out, kind="qdq_onnx")
    assert (man["precision"], man["target"], man["structure"]["ok"]) == ("int8", target, True)
    proto = onnx.load(str(out))
    rep = check_qdq_structure(proto, target)
    assert rep.ok and rep.quantized_convs == 3 and not rep.float_convs
    zps = {i.name: i.data_type for i in proto.graph.initializer}
    act_types = {
        zps.get(n.input[2]) for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in zps
    }
    assert act_types == ({onnx.TensorProto.INT8} if target == "trt" else {onnx.TensorProto.UINT8})
    if target == "ort":  # uint8 weights exactly where onnxruntime runs integer kernels
        from vsseg_edge.onnx_graph import integer_kernel_convs

        assert man["quantization"]["uint8_weights"] == integer_kernel_convs(proto)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # exact Q/DQ arithmetic
    sess = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    x = batches(1, seed=9)[0]
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_target_is_refused_for_an_fp32_checkpoint(tmp_path):
    from vsseg_edge.export.onnx_export import export_checkpoint
    from vsseg_edge.export.presets import ExportPreset

    path = tmp_path / "fp32.pt"
    save_checkpoint(path, tiny(4), model_name=TINY, classes=CLASSES, preprocess=SPEC)
    with pytest.raises(VssegError, match="--target is for checkpoints trained with fake INT8"):
        export_checkpoint(path, tmp_path / "x.onnx", ExportPreset(), target="ort")


@pytest.mark.slow
def test_qat_training_calibrates_records_and_resumes(tmp_path, synth_root):
    """`vsseg-edge train` with quant.enabled: ESPNet from an FP32 checkpoint, temporal loss + self-distillation."""
    import yaml

    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.models import create_model
    from vsseg_edge.train.config import load_recipe
    from vsseg_edge.train.trainer import Trainer

    torch.manual_seed(0)
    init = tmp_path / "fp32.pt"
    spec = PreprocessSpec(height=64, width=128)
    fp32 = create_model("espnet", CITYSCAPES.num_classes).eval()
    save_checkpoint(init, fp32, model_name="espnet", classes=list(CITYSCAPES.classes), preprocess=spec)
    recipe = {
        "name": "qat",
        "iterations": 2,
        "batch_size": 2,
        "threads": 1,
        "out_dir": str(tmp_path / "runs"),
        "val_max_sequences": 1,
        "ckpt_every": 1,
        "data": {"root": str(synth_root), "crop": [64, 128], "scale_range": [0.9, 1.1], "workers": 0, "offsets": [1]},
        "model": {"name": "espnet", "init_checkpoint": str(init)},
        "teacher": {"checkpoint": str(init)},
        "preprocess": {"height": 64, "width": 128},
        "loss": {"weights": {"seg": 1.0, "aux": 0.0, "temporal": 0.1, "kd_pixel": 1.0}},
        "quant": {"enabled": True, "calib_batches": 2},
    }
    path = tmp_path / "qat.yaml"
    path.write_text(yaml.safe_dump(recipe))
    trainer = Trainer(load_recipe(path), progress=False)
    # every Conv and ConvTranspose of ESPNet but the 19 small-channel convolutions TensorRT runs in float
    assert len(quantized_modules(trainer.model)) == 82 + 3 - 19
    left = [m for m in trainer.model.modules() if type(m) is nn.Conv2d]
    assert len(left) == 19 and all(min(m.in_channels, m.out_channels) < 16 for m in left)
    trainer.fit()
    amax = {n: float(m.input_amax) for n, m in quantized_modules(trainer.model)}
    assert all(a > 0 for a in amax.values())  # calibrated before the first step
    out = trainer.out / "model.pt"
    man = read_manifest(out)
    assert man["precision"] == "int8" and man["quantization"]["placement"] == "conv-input-weight-trt"
    assert man["quantization"]["modules"] == [n for n, _ in quantized_modules(trainer.model)]
    assert man["parent"]["file"] == "fp32.pt"
    again, ckpt = model_from_checkpoint(out)
    assert {n: float(m.input_amax) for n, m in quantized_modules(again)} == amax
    changed = [
        n
        for n, p in again.state_dict().items()
        if p.dtype.is_floating_point and n in fp32.state_dict() and not torch.equal(p, fp32.state_dict()[n])
    ]
    assert changed  # the weights were fine-tuned under fake quantisation
    # resume: the ranges come from last.pt, not from a new calibration
    resumed = Trainer(load_recipe(path, ["iterations=3"]), resume=True, progress=False)
    assert resumed.step == 2 and {n: float(m.input_amax) for n, m in quantized_modules(resumed.model)} == amax


@pytest.mark.parametrize("recipe", ["camvid_espnet_qat.yaml", "cityscapes_espnet_qat.yaml", "qat_tc.yaml"])
def test_the_qat_recipes_load(recipe):
    from tests.conftest import REPO
    from vsseg_edge.train.config import load_recipe

    cfg = load_recipe(REPO / "train" / recipe, ["model.name=espnet"])
    assert cfg.quant.enabled and cfg.loss.kd_resolution == "full" and cfg.model.freeze_bn
    assert cfg.loss.weights.kd_pixel > 0 and cfg.loss.weights.temporal > 0 and cfg.video.root
    assert cfg.loss.weights.fused_kd == 0  # not inherited from the temporal recipes' bases (section merge)
    assert cfg.optim.name == "adam" and cfg.optim.ema > 0 and cfg.keep_every > 0


def test_the_cityscapes_qat_recipe_names_modules_of_the_zoo_model():
    """Its quant.exclude (the PTQ search's float convolutions) names real convolutions of espnet-cityscapes."""
    from tests.conftest import REPO
    from vsseg_edge.train.config import load_recipe
    from vsseg_edge.zoo import resolve

    cfg = load_recipe(REPO / "train" / "cityscapes_espnet_qat.yaml")
    model, _ = model_from_checkpoint(resolve("espnet-cityscapes-tc"))  # the architecture of espnet-cityscapes
    quantize_modules(model, cfg.quant)
    floats = {n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.ConvTranspose2d)}
    assert set(cfg.quant.exclude) <= floats and len(cfg.quant.exclude) == 16
    assert len(floats) == 16 + 18  # and the 18 small-channel convolutions TensorRT keeps in float
