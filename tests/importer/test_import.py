"""`vsseg-edge import`: ONNX models exported with plain `torch.onnx.export` (no vsseg-edge exporter, no manifest)
and TensorRT engines (through the test double of tensorrt/cudart) become artifacts run/bench/calibrate/build-engine
accept; every mismatch between the graph, the flags and the class file is one line naming the model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from vsseg_edge.cli import app  # noqa: E402
from vsseg_edge.core.errors import MissingDependency, VssegError  # noqa: E402
from vsseg_edge.importer.onnx_import import import_onnx  # noqa: E402

FIVE = ["road", "car", "person", "tree", "sky"]


class Seg(nn.Module):
    """A stride-2 segmenter: conv at half resolution, upsampled back (logits N×5×H×W)."""

    def __init__(self, classes: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1))

    def forward(self, x):
        return nn.functional.interpolate(self.body(x[:, :, ::2, ::2]), scale_factor=2.0)


class Uint8NhwcArgmax(nn.Module):
    """Raw uint8 NHWC pixels in, normalisation inside, int64 labels out (an 'end-to-end' export)."""

    def __init__(self):
        super().__init__()
        self.seg = Seg()

    def forward(self, x):
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return self.seg(x).argmax(1)


def export(module, path: Path, shape, dynamic=None, names=("images",), dtype=torch.float32) -> Path:
    """Plain torch.onnx.export, as a user outside the project would run it: no manifest is written."""
    args = tuple(torch.zeros(shape, dtype=dtype) for _ in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=list(names),
            output_names=["out"],
            opset_version=17,
            dynamo=False,
            dynamic_axes=dynamic,
        )
    assert not Path(f"{path}.json").exists()
    return path


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    return export(Seg(), tmp_path_factory.mktemp("plain") / "seg.onnx", (1, 3, 64, 96))


@pytest.fixture
def five(tmp_path) -> Path:
    path = tmp_path / "five.yaml"
    path.write_text("classes:\n" + "".join(f"  - {{name: {n}, color: [{i * 40}, 0, 0]}}\n" for i, n in enumerate(FIVE)))
    return path


def _copy(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    dst.write_bytes(src.read_bytes())
    return dst


def _cli(*args, ok=True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_plain_export_is_refused_until_imported_then_every_command_takes_it(plain, five, tmp_path, synth_root):
    from vsseg_edge.runtime.run import run_model

    model = _copy(plain, tmp_path)
    with pytest.raises(
        VssegError,
        match=r"no manifest seg.onnx.json beside it; for a model made outside vsseg-edge, "
        r"write one with: vsseg-edge import .*seg.onnx --classes FILE",
    ):
        run_model(model, source=str(synth_root / "leftImg8bit_sequence" / "val"))
    out = _cli("import", model, "--classes", five).output
    assert "input 64x96 NCHW RGB float32" in out and "output logits [1, 5, 64, 96]" in out
    man = json.loads(Path(f"{model}.json").read_text())
    assert man["kind"] == "onnx" and man["output"] == "logits" and man["classes"] == FIVE
    assert man["palette"][1] == [40, 0, 0] and man["imported"]["onnx"]["checked"] is True
    assert man["imported"]["inputs"] == [{"name": "images", "shape": [1, 3, 64, 96], "dtype": "float32"}]

    frames = f"{synth_root}/leftImg8bit_sequence/val/*/*.png"
    result = run_model(model, source=frames, save_masks=tmp_path / "m")
    assert result.frames == 6 and len(list((tmp_path / "m").glob("*.png"))) == 6
    data = _five_class_folder(tmp_path / "five_data")
    _cli(
        "bench",
        model,
        "--dataset",
        data,
        "--backends",
        "ort",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--frames",
        "2",
        "--no-tc",
        "--out",
        tmp_path / "bench",
    )
    entry = json.loads((tmp_path / "bench" / "report.json").read_text())["entries"][0]
    assert entry["status"] == "ok" and 0 <= entry["accuracy"]["miou"] <= 100
    _cli("build-engine", model, "--fp16", "--explain", "--for-trt", "10.3")
    _cli(
        "calibrate",
        model,
        "--frames",
        synth_root,
        "--out",
        tmp_path / "seg.int8.qdq.onnx",
        "--target",
        "ort",
        "--num-frames",
        "4",
        "--no-gate",
        "--override",
        "placement=all",  # its convolutions are thinner than TensorRT's int8 kernels (< 16 channels)
    )
    qdq = json.loads((tmp_path / "seg.int8.qdq.onnx.json").read_text())
    assert qdq["kind"] == "qdq_onnx" and qdq["classes"] == FIVE and qdq["palette"] == man["palette"]


def test_normalisation_flags_reach_the_model(plain, tmp_path):
    """--bgr --mean --std --scale: the runtime feeds exactly ((bgr - mean) / std) * scale."""
    from vsseg_edge.importer.graph import smoke_frame
    from vsseg_edge.runtime.backends import open_backend

    model = _copy(plain, tmp_path)
    man = import_onnx(
        model, _five_file(tmp_path), mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0), bgr=True, scale=1 / 255
    )
    assert man["input"]["preprocess"]["channel_order"] == "bgr"
    frame = smoke_frame((64, 96), seed=3)
    x = ((frame.astype(np.float32) - [10, 20, 30]) / [2, 4, 8] / 255).transpose(2, 0, 1)[None].astype(np.float32)
    want = ort.InferenceSession(str(model)).run(None, {"images": x})[0]
    from vsseg_edge.core.preprocess import preprocess

    with open_backend(model) as be:
        got = be.infer(preprocess(frame, be.preprocess_spec))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _five_class_folder(root: Path) -> Path:
    """images/ + labels/ with the five classes (a vertical band each) and the dataset's own classes.yaml."""
    import cv2

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(3):
        img = np.zeros((64, 96, 3), np.uint8)
        img[:] = (30 * i, 80, 160)
        cv2.imwrite(str(root / "images" / f"clip_{i:04d}.png"), img)
        bands = (np.arange(96) // 20).astype(np.uint8)[None].repeat(64, 0)
        cv2.imwrite(str(root / "labels" / f"clip_{i:04d}.png"), bands)
    (root / "classes.yaml").write_text(json.dumps(FIVE))
    return root


def _five_file(tmp_path) -> Path:
    path = tmp_path / "five.json"
    path.write_text(json.dumps(FIVE))
    return path


def test_dynamic_size_needs_size_and_uint8_nhwc_labels_are_read_from_the_graph(tmp_path):
    from vsseg_edge.runtime.run import run_model

    dyn = export(Seg(), tmp_path / "dyn.onnx", (1, 3, 64, 96), dynamic={"images": {2: "h", 3: "w"}})
    with pytest.raises(VssegError, match=r"dyn.onnx: the model's input size is dynamic; give --size HxW"):
        import_onnx(dyn, _five_file(tmp_path))
    man = import_onnx(dyn, _five_file(tmp_path), size=(32, 48))
    assert man["input"]["shape"] == [1, 3, 32, 48]

    e2e = export(Uint8NhwcArgmax(), tmp_path / "e2e.onnx", (1, 64, 96, 3), dtype=torch.uint8)
    with pytest.raises(VssegError, match="takes uint8 pixels and normalises inside; --mean/--std/--scale do not"):
        import_onnx(e2e, _five_file(tmp_path), mean=(1.0, 2.0, 3.0))
    man = import_onnx(e2e, _five_file(tmp_path), uint8_input=True)
    p = man["input"]["preprocess"]
    assert (p["layout"], p["dtype"], man["output"]) == ("nhwc", "uint8", "labels")
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), np.full((64, 96, 3), 120, np.uint8))
    assert run_model(e2e, source=str(frames)).frames == 1


@pytest.mark.parametrize(
    "case, message",
    [
        ("classes", r"output 'out' has 5 channels, the classes are 3; give the class file of this model"),
        ("nhwc_logits", r"looks like N×H×W×C logits; vsseg-edge reads N×C×H×W"),
        ("two_inputs", r"expected one image input, the model has 2 \(a, b\)"),
        ("gray", r"has no 3-channel axis"),
        ("size", r"--size 32x32 differs from the model's fixed input 64x96"),
        ("uint8_flag", r"--uint8-input says the model takes uint8, its input is float32"),
    ],
)
def test_mismatches_are_one_line_errors_and_write_nothing(plain, tmp_path, case, message):
    kwargs = {}
    classes = _five_file(tmp_path)
    model = _copy(plain, tmp_path)
    if case == "classes":
        classes = tmp_path / "three.txt"
        classes.write_text("a\nb\nc\n")
    elif case == "nhwc_logits":

        class Nhwc(nn.Module):
            def __init__(self):
                super().__init__()
                self.seg = Seg()

            def forward(self, x):
                return self.seg(x).permute(0, 2, 3, 1)

        model = export(Nhwc(), tmp_path / "nhwc.onnx", (1, 3, 64, 96))
    elif case == "two_inputs":

        class Two(nn.Module):
            def __init__(self):
                super().__init__()
                self.seg = Seg()

            def forward(self, a, b):
                return self.seg(a + b)

        model = export(Two(), tmp_path / "two.onnx", (1, 3, 64, 96), names=("a", "b"))
    elif case == "gray":

        class Gray(nn.Module):
            def __init__(self):
                super().__init__()
                self.seg = Seg()

            def forward(self, x):
                return self.seg(x.repeat(1, 3, 1, 1))

        model = export(Gray(), tmp_path / "gray.onnx", (1, 1, 64, 96))
    elif case == "size":
        kwargs["size"] = (32, 32)
    elif case == "uint8_flag":
        kwargs["uint8_input"] = True
    with pytest.raises(VssegError, match=message) as info:
        import_onnx(model, classes, **kwargs)
    assert str(model) in str(info.value) and "\n" not in str(info.value)
    assert not Path(f"{model}.json").exists()


def test_existing_manifest_needs_force_and_qdq_models_are_recognised(plain, tmp_path, synth_root):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    model = _copy(plain, tmp_path)
    import_onnx(model, _five_file(tmp_path))
    with pytest.raises(VssegError, match=r"already has a manifest \(seg.onnx.json\); --force replaces it"):
        import_onnx(model, _five_file(tmp_path))
    again = import_onnx(model, _five_file(tmp_path), force=True, bgr=True)
    assert again["input"]["preprocess"]["channel_order"] == "bgr"

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(
                [{"images": np.random.default_rng(i).standard_normal((1, 3, 64, 96), np.float32)} for i in range(2)]
            )

        def get_next(self):
            return next(self.items, None)

    qdq = tmp_path / "seg_qdq.onnx"
    quantize_static(str(plain), str(qdq), Reader(), quant_format=QuantFormat.QDQ)
    man = import_onnx(qdq, _five_file(tmp_path))
    assert (man["kind"], man["precision"]) == ("qdq_onnx", "int8")


def test_import_without_onnxruntime_names_the_extra(monkeypatch, plain, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependency, match=r"pip install 'vsseg-edge\[edge\]'"):
        import_onnx(_copy(plain, tmp_path), _five_file(tmp_path))


# ---------------------------------------------------------------- engines, through the TensorRT test double ----
def test_engine_import_records_this_tensorrt_and_gpu_and_smoke_runs(tmp_path):
    from tests.runtime.conftest import HostMemory
    from tests.runtime.test_trt_logic import SPEC, _FakeEngineV3, fake_cudart, fake_tensorrt
    from vsseg_edge.importer.engine_import import import_engine
    from vsseg_edge.runtime.backends.trt import TrtBackend

    path = tmp_path / "foreign.engine"
    path.write_bytes(b"a plan built by trtexec (read by the test double only)")
    (tmp_path / "abc.txt").write_text("a\nb\nc\n")
    modules = (fake_tensorrt(_FakeEngineV3(), "10.3.0"), fake_cudart(HostMemory()))
    with pytest.raises(VssegError, match="the model's input size is dynamic; give --size HxW"):
        import_engine(path, tmp_path / "abc.txt", modules=modules)
    man = import_engine(path, tmp_path / "abc.txt", size=SPEC.size, precision="fp16", modules=modules)
    assert man["tensorrt"] == {
        "version": "10.3.0",
        "gpu": {"index": 0, "name": "Fake GPU", "compute_capability": [8, 7]},
    }
    assert man["output"] == "labels" and man["precision"] == "fp16" and man["classes"] == ["a", "b", "c"]
    assert json.loads(Path(f"{path}.json").read_text())["imported"]["smoke_run"]["output_shape"] == [1, 4, 6]
    be = TrtBackend(path, modules=(fake_tensorrt(_FakeEngineV3(), "10.3.0"), fake_cudart(HostMemory())))
    assert be.output_kind == "labels"
    be.close()
    with pytest.raises(VssegError, match=r"built with TensorRT 10.3.0, this machine has 10.7.0"):
        TrtBackend(path, modules=(fake_tensorrt(_FakeEngineV3(), "10.7.0"), fake_cudart(HostMemory())))


def test_engine_that_this_tensorrt_cannot_load_is_refused_in_one_line(tmp_path):
    from tests.runtime.conftest import HostMemory
    from tests.runtime.test_trt_logic import fake_cudart, fake_tensorrt
    from vsseg_edge.importer.engine_import import import_engine

    path = tmp_path / "other.plan"
    path.write_bytes(b"built elsewhere")
    (tmp_path / "abc.txt").write_text("a\nb\nc\n")
    with pytest.raises(VssegError, match=r"TensorRT 10.3.0 cannot deserialize it on Fake GPU \(built by another"):
        import_engine(path, tmp_path / "abc.txt", modules=(fake_tensorrt(None, "10.3.0"), fake_cudart(HostMemory())))
    assert not Path(f"{path}.json").exists()
