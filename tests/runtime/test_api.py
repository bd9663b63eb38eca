"""The Python API: `Segmenter` on ONNX and checkpoints (and the zoo model when the zoo is installed), its
agreement with the CLI's runtime, streams, overlays, class files and one-line errors; torch-free on ONNX."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.runtime.conftest import make_frames
from vsseg_edge import Segmenter
from vsseg_edge.core.errors import VssegError


def test_labels_of_a_frame_match_the_cli_runtime(onnx_model, image_folder, tmp_path):
    """`seg(frame)` gives exactly what `run --save-masks` writes for the same frame."""
    import cv2

    from vsseg_edge.runtime.run import run_model

    run_model(onnx_model, source=str(image_folder), save_masks=tmp_path / "masks")
    with Segmenter(onnx_model) as seg:
        assert seg.classes[:2] == ["road", "sidewalk"] and seg.input_size == (64, 128)
        for path in sorted(image_folder.glob("*.png")):
            labels = seg(cv2.imread(str(path)))
            assert labels.dtype == np.uint8 and labels.shape == (64, 128)
            assert np.array_equal(labels, cv2.imread(str(tmp_path / "masks" / path.name), cv2.IMREAD_UNCHANGED))
        path = sorted(image_folder.glob("*.png"))[0]
        assert np.array_equal(seg(path), seg(cv2.imread(str(path))))  # a path works too
        rgb = cv2.imread(str(path))[..., ::-1]
        assert np.array_equal(seg(rgb, rgb=True), seg(path))


def test_labels_come_back_at_the_frames_size(onnx_model):
    frame = make_frames(1, h=120, w=200)[0]
    with Segmenter(onnx_model) as seg:
        assert seg(frame).shape == (120, 200)


def test_stream_overlay_colorize_and_shares(onnx_model, video_file):
    with Segmenter(onnx_model) as seg:
        pairs = list(seg.stream(video_file))
        assert len(pairs) == 12 and all(f.shape == (64, 128, 3) and lab.shape == (64, 128) for f, lab in pairs)
        frame, labels = pairs[3]
        assert np.array_equal(seg.overlay(frame, labels, alpha=0.0), frame)
        assert np.array_equal(seg.overlay(frame, labels, alpha=1.0), seg.colorize(labels))
        road = labels == 0
        if road.any():
            assert tuple(seg.colorize(labels)[road][0][::-1]) == seg.palette[0] == (128, 64, 128)
        shares = seg.shares(labels)
        assert abs(sum(shares.values()) - 1.0) < 1e-3 and set(shares) <= set(seg.classes)
        assert len(list(seg.stream(video_file, max_frames=3))) == 3
        flipped = next(seg.stream(str(video_file), flip="horizontal"))[0]
        assert np.array_equal(flipped, pairs[0][0][:, ::-1])


def test_class_file_and_errors(onnx_model, tmp_path):
    (tmp_path / "mine.json").write_text('{"classes": [' + ", ".join(f'"k{i}"' for i in range(19)) + "]}")
    with Segmenter(onnx_model, classes=tmp_path / "mine.json") as seg:
        assert seg.classes[0] == "k0"
    with pytest.raises(VssegError, match="expected a uint8 HxWx3 image"):
        with Segmenter(onnx_model) as seg:
            seg(np.zeros((4, 4), np.float32))
    with pytest.raises(VssegError, match="model file not found"):
        Segmenter(tmp_path / "missing.onnx")
    with pytest.raises(VssegError, match="no such file or folder"):
        with Segmenter(onnx_model) as seg:
            next(seg.stream(tmp_path / "nothing.mp4"))


def test_checkpoint_runs_through_torch(tmp_path):
    pytest.importorskip("torch")
    from tests.runtime.conftest import tiny_net
    from vsseg_edge.core.labels import CAMVID
    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.models import register_model
    from vsseg_edge.models.checkpoint import save_checkpoint

    @register_model("api-tiny")
    def api_tiny(num_classes: int, **kw):
        return tiny_net(num_classes)

    path = tmp_path / "tiny.pt"
    save_checkpoint(
        path,
        tiny_net(11),
        model_name="api-tiny",
        classes=list(CAMVID.classes),
        preprocess=PreprocessSpec(height=64, width=128),
    )
    with Segmenter(path, device="cpu") as seg:
        assert seg.classes == list(CAMVID.classes)
        labels = seg(make_frames(1)[0])
        assert labels.shape == (64, 128) and labels.max() < 11


def test_segmenter_on_onnx_does_not_import_torch(onnx_model):
    code = (
        "import sys, numpy as np; from vsseg_edge import Segmenter; "
        f"seg = Segmenter({str(onnx_model)!r}); out = seg(np.zeros((64, 128, 3), np.uint8)); "
        "assert out.shape == (64, 128); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_api_loads_on_first_use():
    """(That importing the package loads no numpy is in tests/test_boundaries.py.)"""
    code = (
        "import sys, vsseg_edge; assert 'vsseg_edge.api' not in sys.modules; "
        "vsseg_edge.Segmenter; assert 'vsseg_edge.api' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_zoo_model_by_name():
    """`Segmenter("espnet-cityscapes")`: the zoo's published ESPNet, where this installation has the zoo."""
    zoo = pytest.importorskip("vsseg_edge.zoo", reason="the model zoo is not in this installation")
    pytest.importorskip("torch")
    if "espnet-cityscapes" not in zoo.names():
        pytest.skip("the zoo has no espnet-cityscapes entry")
    frame = make_frames(1, h=256, w=512)[0]
    with Segmenter("espnet-cityscapes", device="cpu") as seg:
        assert seg.classes[:3] == ["road", "sidewalk", "building"] and seg.input_size == (512, 1024)
        labels = seg(frame)
        assert labels.shape == (256, 512) and labels.max() < len(seg.classes)
