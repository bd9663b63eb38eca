"""End-to-end export of a tiny registered model from its checkpoint: file, manifest, checker, parity, options."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.fileio import sha256_file
from vsseg_edge.core.manifest import manifest_preprocess, read_manifest
from vsseg_edge.core.preprocess import preprocess_batch
from vsseg_edge.export.onnx_export import export_checkpoint, export_onnx
from vsseg_edge.export.parity import synthetic_frames
from vsseg_edge.export.presets import load_preset
from vsseg_edge.export.simplify import boundary
from vsseg_edge.models.checkpoint import checkpoint_preprocess, model_from_checkpoint


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _torch_logits(model, frames, spec):
    with torch.no_grad():
        return model(torch.from_numpy(preprocess_batch(frames, spec))).numpy()


@pytest.fixture(scope="module")
def float_export(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("float") / "new" / "folder" / "model.onnx"  # missing folders are created
    return export_checkpoint(tiny_ckpt, out, load_preset(None))


def test_float_export_file_manifest_checker_parity(float_export, tiny_ckpt):
    out = float_export.path
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.json"]  # no external data
    proto = onnx.load(str(out), load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    man = read_manifest(out, kind="onnx", verify=True)
    assert man["opset"] == 17 and man["output"] == "logits" and man["parent"]["sha256"] == sha256_file(tiny_ckpt)
    assert man["graph"]["nodes"] == len(proto.graph.node) and sum(man["graph"]["ops"].values()) == len(proto.graph.node)
    assert "dynamo" in man["exporter"]
    par = man["parity"]
    assert par["passed"] and par["max_abs_logit"] <= 1e-4 and par["argmax_agreement"] >= 0.999
    assert par["frames"].startswith("synthetic") and par["num_frames"] == 4
    # independently of the report: ORT on fresh frames agrees with torch
    model, ckpt = model_from_checkpoint(tiny_ckpt)
    spec = manifest_preprocess(man, "model.onnx")
    assert spec == checkpoint_preprocess(ckpt, "ckpt")
    frames = synthetic_frames(2, spec.size, seed=7)
    ref = _torch_logits(model, frames, spec)
    sess = _session(out)
    got = np.concatenate([sess.run(None, {"input": preprocess_batch([f], spec)})[0] for f in frames])
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(ref).max() > 0.1  # the comparison is not between two near-zero tensors


def test_graph_is_clean(float_export):
    ops = float_export.summary["ops"]
    assert "Gather" not in ops and "ReduceMean" not in ops and "Constant" not in ops  # static pools, simplified
    assert "BatchNormalization" not in ops  # folded into the convolutions
    assert ops["MatMul"] == 4  # bins 3 and 6 as two pooling matrices each


def test_uint8_argmax_export_from_image_folder(tiny_ckpt, tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(synthetic_frames(3, (96, 160), seed=3)):  # other size: preprocess resizes
        cv2.imwrite(str(folder / f"f{i}.png"), f)
    out = tmp_path / "labels.onnx"
    preset = load_preset("export/uint8_argmax.yaml", parity_frames=str(folder))
    res = export_checkpoint(tiny_ckpt, out, preset)
    assert res.parity.frames == str(folder) and res.parity.num_frames == 3
    assert res.parity.max_abs_logit is None and res.parity.argmax_agreement >= 0.999
    io = boundary(onnx.load(str(out)))
    assert io["inputs"] == [{"name": "input", "dtype": "UINT8", "shape": [1, 64, 128, 3]}]
    assert io["outputs"] == [{"name": "labels", "dtype": "UINT8", "shape": [1, 64, 128]}]
    man = read_manifest(out, kind="onnx")
    spec = manifest_preprocess(man, "labels.onnx")
    assert (spec.dtype, spec.layout, man["output"]) == ("uint8", "nhwc", "labels")
    for op in ("ArgMax", "Cast", "Transpose"):
        assert op in man["graph"]["ops"]
    model, ckpt = model_from_checkpoint(tiny_ckpt)
    frames = synthetic_frames(2, (64, 128), seed=11)
    labels = np.concatenate([_session(out).run(None, {"input": preprocess_batch([f], spec)})[0] for f in frames])
    ref = _torch_logits(model, frames, checkpoint_preprocess(ckpt, "ckpt")).argmax(1)
    assert labels.dtype == np.uint8
    assert np.mean(labels == ref) >= 0.999


def test_dynamic_batch_int32_labels(tiny_ckpt, tmp_path):
    out = tmp_path / "dyn.onnx"
    res = export_checkpoint(tiny_ckpt, out, load_preset(None, dynamic_batch=True, argmax="int32"))
    io = res.summary
    assert io["inputs"][0]["shape"][0] == "batch" and io["outputs"][0]["dtype"] == "INT32"
    assert all(t["dtype"] != "INT64" for t in io["inputs"] + io["outputs"])
    model, ckpt = model_from_checkpoint(tiny_ckpt)
    spec = checkpoint_preprocess(ckpt, "ckpt")
    frames = synthetic_frames(3, spec.size, seed=5)
    sess = _session(out)
    for n in (2, 3):
        labels = sess.run(None, {"input": preprocess_batch(frames[:n], spec)})[0]
        assert labels.shape == (n, 64, 128) and labels.dtype == np.int32
        assert np.mean(labels == _torch_logits(model, frames[:n], spec).argmax(1)) >= 0.999


def test_broken_parity_leaves_no_file(tiny_ckpt, tmp_path, monkeypatch):
    import vsseg_edge.export.parity as parity

    real_run = parity.onnx_outputs
    monkeypatch.setattr(parity, "onnx_outputs", lambda *a, **k: [o + 0.01 for o in real_run(*a, **k)])  # drifting
    out = tmp_path / "broken.onnx"
    with pytest.raises(VssegError, match=r"parity check failed, nothing written: max \|Δlogit\| 1\.00e-02"):
        export_checkpoint(tiny_ckpt, out, load_preset(None, exporter="torchscript"))
    assert list(tmp_path.iterdir()) == []  # no model, no manifest, no temporary file
    # an earlier good file at the target is left as it was
    out.write_bytes(b"old")
    with pytest.raises(VssegError, match="parity check failed"):
        export_checkpoint(tiny_ckpt, out, load_preset(None, exporter="torchscript", max_abs_logit=1e-3))
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx"]


def test_user_errors(tiny_ckpt, tmp_path, tiny_factory):
    from vsseg_edge.core.preprocess import PreprocessSpec

    with pytest.raises(VssegError, match="is a folder; expected a file name"):
        export_checkpoint(tiny_ckpt, tmp_path, load_preset(None))
    meta = dict(model_name="t", classes=["a", "b"], preprocess=PreprocessSpec(height=64, width=128))
    with pytest.raises(VssegError, match=r"--size 60x128: .* multiples of 8"):
        export_onnx(tiny_factory(), tmp_path / "m.onnx", preset=load_preset(None, size=(60, 128)), **meta)
    assert list(tmp_path.iterdir()) == []


def test_cli_rejects_non_checkpoint_in_one_line(tmp_path):
    bad = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bad)  # a plain state dict
    out = tmp_path / "m.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "vsseg_edge.cli", "export", str(bad), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a vsseg-edge checkpoint" in lines[0] and str(bad) in lines[0]
    assert not out.exists()


def test_cli_exports_with_preset_and_flag_override(tiny_ckpt, tmp_path):
    from typer.testing import CliRunner

    from vsseg_edge.cli import app

    out = tmp_path / "cli.onnx"
    res = CliRunner().invoke(
        app,
        [
            "export",
            str(tiny_ckpt),
            "--out",
            str(out),
            "--preset",
            "export/uint8_argmax.yaml",
            "--argmax",
            "int32",
            "--exporter",
            "torchscript",
            "--size",
            "32x64",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "argmax agreement" in res.output and "nodes" in res.output
    man = read_manifest(out, kind="onnx")
    assert man["graph"]["outputs"][0] == {"name": "labels", "dtype": "INT32", "shape": [1, 32, 64]}
    assert man["input"]["shape"] == [1, 32, 64, 3] and "torchscript" in man["exporter"]


def test_requested_opset_is_honoured_or_refused(tiny_ckpt, tmp_path):
    """Without static pools, torch's dynamo exporter emits ReduceMean at opset 18 and cannot convert it to 17:
    the export says so instead of writing a file of another opset."""
    out = tmp_path / "m.onnx"
    with pytest.raises(VssegError, match="produced opset 18, not the requested 17; try --opset 18"):
        export_checkpoint(tiny_ckpt, out, load_preset(None, static_pools=False))
    assert not out.exists()


@pytest.mark.slow
def test_pspnet18_exports_at_64x128(tmp_path):
    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.models import create_model
    from vsseg_edge.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ckpt = tmp_path / "pspnet18.pt"
    save_checkpoint(
        ckpt,
        create_model("pspnet18", 19),
        model_name="pspnet18",
        classes=list(CITYSCAPES.classes),
        preprocess=PreprocessSpec(height=512, width=1024),
    )
    res = export_checkpoint(ckpt, tmp_path / "pspnet18.onnx", load_preset(None, size=(64, 128)))
    assert res.parity.passed and res.parity.max_abs_logit <= 1e-4
    s = res.summary
    assert s["outputs"][0]["shape"] == [1, 19, 64, 128] and s["opset"] == 17
    assert s["ops"]["Conv"] >= 20 and "Gather" not in s["ops"] and "BatchNormalization" not in s["ops"]
    assert read_manifest(res.path)["source_preprocess"]["height"] == 512


@pytest.mark.slow
def test_published_espnet_parity_on_real_camvid_frames(tmp_path):
    """A trained model (logits of size ~20) on real frames: the FP32 graph stays within 1e-3 of torch."""
    from tests.conftest import shared_data
    from vsseg_edge.core.labels import CAMVID
    from vsseg_edge.models import create_model
    from vsseg_edge.models.checkpoint import save_checkpoint
    from vsseg_edge.models.espnet import published_preprocess

    weights, frames = shared_data("weights", "espnet_p_2_q_8_camvid.pth"), shared_data("camvid_sample")
    model = create_model("espnet", 11, weights=weights)
    ckpt = tmp_path / "espnet.pt"
    save_checkpoint(
        ckpt,
        model,
        model_name="espnet",
        classes=list(CAMVID.classes),
        preprocess=published_preprocess("camvid"),
        model_kwargs=dict(p=model.p, q=model.q, width=model.width, fuse_input=model.fuse_input),
    )
    preset = load_preset(None, size=(120, 160), parity_frames=str(frames))
    res = export_checkpoint(ckpt, tmp_path / "espnet.onnx", preset)
    p = res.parity
    assert p.frames == str(frames) and p.ref_abs_max > 5
    assert p.max_abs_logit <= 1e-3 and p.argmax_agreement >= 0.999
    assert res.manifest["input"]["preprocess"]["channel_order"] == "bgr"


def _camera_frames(hw, n=3, seed=21):
    return synthetic_frames(n, hw, seed=seed)


@pytest.mark.parametrize(
    "interpolation, frame_hw", [("linear", (128, 256)), ("area", (128, 256)), ("nearest", (256, 512))]
)
def test_camera_frame_graph_takes_frames_as_they_are(tmp_path, tiny_factory, interpolation, frame_hw):
    """--frame-size: resize, channel order and normalisation in the graph; at integer shrink factors the graph's
    input to the model equals core.preprocess's, so the logits equal torch's on core.preprocess input."""
    from vsseg_edge.core.preprocess import PreprocessSpec, preprocess

    spec = PreprocessSpec(height=64, width=128, interpolation=interpolation, mean=(10.0, 100.0, 200.0))
    model = tiny_factory()
    out = tmp_path / "camera.onnx"
    res = export_onnx(
        model,
        out,
        model_name="tiny",
        classes=[f"c{i}" for i in range(5)],
        preprocess=spec,
        preset=load_preset(None, uint8_input=True, frame_size=frame_hw),
    )
    assert res.parity.passed and res.parity.max_abs_logit <= 1e-4
    assert boundary(onnx.load(str(out)))["inputs"] == [{"name": "input", "dtype": "UINT8", "shape": [1, *frame_hw, 3]}]
    man = read_manifest(out, kind="onnx")
    onnx_spec = manifest_preprocess(man, "camera.onnx")
    assert (onnx_spec.size, onnx_spec.channel_order, onnx_spec.dtype, onnx_spec.layout, onnx_spec.mean) == (
        frame_hw,
        "bgr",
        "uint8",
        "nhwc",
        (200.0, 100.0, 10.0),
    )
    assert man["graph_preprocess"]["resize_to"] == [64, 128] and man["graph_preprocess"]["channel_order"] == "rgb"
    sess = _session(out)
    for frame in _camera_frames(frame_hw):
        batch = preprocess(frame, onnx_spec)
        assert np.array_equal(batch[0], frame)  # the frame as it is
        got = sess.run(None, {"input": batch})[0]
        ref = _torch_logits(model, [frame], spec)
        assert np.abs(got - ref).max() <= 1e-4 and np.abs(ref).max() > 0.1


def test_camera_frame_graph_at_any_linear_size_labels_and_runtime(tmp_path, tiny_ckpt):
    """A non-integer factor: OpenCV's fixed-point bilinear differs by 1 on some pixels, the labels agree; the
    runtime feeds such a graph camera frames without resizing them on the host."""
    import cv2

    from vsseg_edge.core.preprocess import labels_to_frame_size
    from vsseg_edge.runtime.backends import open_backend
    from vsseg_edge.runtime.pipeline import Pipeline
    from vsseg_edge.runtime.sinks import MaskSink
    from vsseg_edge.runtime.sources import open_source

    out = tmp_path / "camera.onnx"
    res = export_checkpoint(tiny_ckpt, out, load_preset("export/uint8_argmax.yaml", frame_size=(100, 200)))
    assert res.parity.argmax_agreement >= 0.999 and res.summary["outputs"][0]["dtype"] == "UINT8"
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _camera_frames((100, 200))
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i}.png"), f)
    with open_backend(out, threads=1) as be:
        assert be.preprocess_spec.size == (100, 200)
        result = Pipeline(open_source(str(folder)), be, [MaskSink(tmp_path / "m")], handle_signals=False).run()
    assert result.frames == 3
    model, ckpt = model_from_checkpoint(tiny_ckpt)
    spec = checkpoint_preprocess(ckpt, "ckpt")
    for i, f in enumerate(frames):
        ref = labels_to_frame_size(_torch_logits(model, [f], spec).argmax(1)[0].astype(np.uint8), (100, 200))
        got = cv2.imread(str(tmp_path / "m" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        assert np.mean(got == ref) >= 0.999


def test_camera_frame_refusals(tiny_ckpt, tmp_path, tiny_factory):
    from vsseg_edge.core.preprocess import PreprocessSpec

    with pytest.raises(VssegError, match=r"frame_size needs uint8_input"):
        load_preset(None, frame_size=(128, 256))
    camera = load_preset("export/camera_1024x2048.yaml")
    assert (camera.frame_size, camera.uint8_input, camera.output) == ((1024, 2048), True, "labels")
    spec = PreprocessSpec(height=64, width=128, interpolation="area")
    with pytest.raises(
        VssegError,
        match=r"^--frame-size 100x200: area interpolation is resized in the graph only by "
        r"an integer shrink factor",
    ):
        export_onnx(
            tiny_factory(),
            tmp_path / "x.onnx",
            model_name="tiny",
            classes=["a"] * 5,
            preprocess=spec,
            preset=load_preset(None, uint8_input=True, frame_size=(100, 200)),
        )
    assert not (tmp_path / "x.onnx").exists()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vsseg_edge.cli",
            "export",
            str(tiny_ckpt),
            "--out",
            str(tmp_path / "y.onnx"),
            "--frame-size",
            "100by200",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "--frame-size 100by200: expected HxW" in r.stderr
    assert not (tmp_path / "y.onnx").exists()
