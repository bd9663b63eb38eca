"""What the served model computes, without Triton: raw frames → labels, equal to `run`'s per-frame labels."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runtime.conftest import make_frames
from vsseg_edge.core.errors import VssegError
from vsseg_edge.runtime.backends import open_backend
from vsseg_edge.serve.segmenter import FrameSegmenter, check_frames


def run_labels(backend, frame):
    """The reference: the measurement core's per-frame path (what `run --save-masks` writes for the frame)."""
    from vsseg_edge.measure.prediction import end_to_end

    return end_to_end(backend, frame)


@pytest.mark.parametrize("kind", ["logits_batch", "logits_static", "uint8_labels"])
@pytest.mark.parametrize("size", [(64, 128), (90, 160)])
def test_batch_of_frames_gives_run_labels(serve_models, kind, size):
    import cv2

    frames = np.stack([cv2.resize(f, size[::-1]) for f in make_frames(5)])
    with open_backend(serve_models[kind], threads=1) as be:
        calls = []
        infer = be.infer
        be.infer = lambda x: calls.append(x.shape[0]) or infer(x)
        got = FrameSegmenter(be)(frames)
        batches = list(calls)
        want = np.stack([run_labels(be, f) for f in frames])
    assert got.dtype == np.uint8 and got.shape == (5, *size)
    np.testing.assert_array_equal(got, want)
    assert len({g.tobytes() for g in got}) > 1  # the labels follow the moving box
    assert batches == ([1] * 5 if kind == "logits_static" else [5])  # a static-batch graph runs frame by frame


@pytest.mark.parametrize(
    "bad,why",
    [
        (np.zeros((2, 8, 8, 3), np.float32), "float32"),
        (np.zeros((8, 8, 3), np.uint8), "(8, 8, 3)"),
        (np.zeros((1, 8, 8, 4), np.uint8), "(1, 8, 8, 4)"),
        (np.zeros((1, 0, 8, 3), np.uint8), "(1, 0, 8, 3)"),
        (np.zeros((0, 8, 8, 3), np.uint8), "(0, 8, 8, 3)"),
        ([[1, 2, 3]], "list"),
    ],
)
def test_malformed_frames_are_one_line_errors(bad, why):
    with pytest.raises(VssegError) as info:
        check_frames(bad)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_model_without_resize_refuses_another_size(tmp_path):
    from tests.runtime.conftest import export_onnx, tiny_net
    from vsseg_edge.core.preprocess import PreprocessSpec

    spec = PreprocessSpec(height=64, width=128, resize="none")
    model = export_onnx(tiny_net(), tmp_path / "noresize.onnx", spec=spec)
    with open_backend(model, threads=1) as be:
        seg = FrameSegmenter(be)
        assert seg(np.stack(make_frames(2))).shape == (2, 64, 128)
        with pytest.raises(VssegError, match="is 32x32, the model takes 64x128"):
            seg(np.zeros((1, 32, 32, 3), np.uint8))


def test_torch_backend_serves_the_same_way():
    """A .pt checkpoint is served by the torch backend: any batch, labels at the frame size."""
    from tests.runtime.conftest import tiny_net
    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.runtime.backends.torch_backend import TorchBackend

    be = TorchBackend(
        tiny_net(),
        preprocess_spec=PreprocessSpec(height=64, width=128),
        classes=[str(i) for i in range(19)],
        device="cpu",
    )
    frames = np.stack(make_frames(3))[:, :, :100]  # 64×100 frames, resized to 64×128 and back
    got = FrameSegmenter(be)(frames)
    assert be.max_batch is None and got.shape == (3, 64, 100)
    np.testing.assert_array_equal(got, np.stack([run_labels(be, f) for f in frames]))
