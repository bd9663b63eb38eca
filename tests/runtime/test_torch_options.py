"""torch backend options: FP16 / channels-last (CPU and GPU), CUDA graphs (GPU only), and the CLI flags.

The CUDA tests are skipped without a CUDA device (the CI machine); they run on a GPU box with
`pytest tests/runtime/test_torch_options.py`.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.runtime.conftest import make_frames
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.preprocess import PreprocessSpec, preprocess
from vsseg_edge.runtime.backends.torch_backend import TorchBackend

SPEC = PreprocessSpec(height=64, width=128)
CLASSES = [str(i) for i in range(19)]


def needs_cuda(test):
    """Marked `gpu` (tier 2) and skipped without a CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


def backend(net, **options) -> TorchBackend:
    """A backend on a copy of the session's net (the backend moves and converts the module it is given)."""
    return TorchBackend(copy.deepcopy(net), preprocess_spec=SPEC, classes=CLASSES, **options)


def labels_of(backend, frames) -> np.ndarray:
    return np.stack([backend.infer(preprocess(f, SPEC))[0] for f in frames])


def reference_labels(net, frames) -> np.ndarray:
    """Plain FP32 eager torch on the CPU, independent of the backend."""
    with torch.inference_mode():
        return np.stack([net(torch.from_numpy(preprocess(f, SPEC))).argmax(1)[0].numpy() for f in frames])


@pytest.mark.parametrize("fp16, channels_last, min_agree", [(False, True, 0.999), (True, True, 0.98)])
def test_fp16_and_channels_last_on_cpu_match_fp32(net, fp16, channels_last, min_agree):
    frames = make_frames(4)
    be = backend(net, device="cpu", fp16=fp16, channels_last=channels_last)
    assert (be.fp16, be.channels_last) == (fp16, channels_last)
    got = labels_of(be, frames)
    assert got.dtype == np.uint8 and got.shape == (4, 64, 128)
    assert (got == reference_labels(net, frames)).mean() >= min_agree


def test_cuda_only_options_refused_in_one_line(onnx_model, image_folder, net):
    from vsseg_edge.runtime.run import run_model

    with pytest.raises(VssegError, match="^torch backend: CUDA graphs need a CUDA device$"):
        backend(net, device="cpu", cuda_graph=True)
    with pytest.raises(VssegError, match=r"^--cuda-graph: only the torch backend \(a \.pt checkpoint\)"):
        run_model(onnx_model, source=str(image_folder), cuda_graph=True)
    with pytest.raises(VssegError, match=r"^--fp32: only the torch backend"):
        run_model(onnx_model, source=str(image_folder), fp16=False)


@needs_cuda
def test_cuda_defaults_fp16_channels_last_agree_with_cpu(net):
    frames = make_frames(4)
    be = backend(net)
    assert be.device == "cuda" and be.fp16 and be.channels_last
    assert (labels_of(be, frames) == reference_labels(net, frames)).mean() >= 0.98


@needs_cuda
def test_cuda_graph_replay_equals_eager_and_follows_the_input(net):
    frames = make_frames(6)
    eager, graph = backend(net), backend(net, cuda_graph=True)
    want, got = labels_of(eager, frames), labels_of(graph, frames)
    assert len({g.tobytes() for g in got}) > 1  # each replay saw its own frame, not the captured one
    np.testing.assert_array_equal(got, want)
    small = graph.infer(preprocess(frames[0], SPEC.replace(height=32, width=64)))  # a new shape: recaptured
    assert small.shape == (1, 32, 64)
    np.testing.assert_array_equal(labels_of(graph, frames[:1]), want[:1])


@needs_cuda
def test_pipeline_with_the_cuda_graph_backend(net, video_file):
    from vsseg_edge.runtime.pipeline import Pipeline
    from vsseg_edge.runtime.sources import open_source

    be = backend(net, cuda_graph=True)
    result = Pipeline(open_source(str(video_file)), be, [], handle_signals=False).run()
    assert result.frames == 12 and result.summary["infer_ms"]["p50"] > 0


@needs_cuda
def test_a_model_that_cannot_be_captured_is_a_one_line_error():
    from torch import nn

    class HostTensorNet(nn.Module):  # builds a host tensor each call, like a numpy-made pooling matrix
        def forward(self, x):
            scale = torch.tensor(np.ones((1, 19, 1, 1), np.float32), dtype=x.dtype, device=x.device)
            return x.mean(1, keepdim=True).expand(-1, 19, -1, -1) * scale

    be = backend(HostTensorNet(), cuda_graph=True)
    with pytest.raises(VssegError, match=r"^--cuda-graph: <module> cannot be captured in a CUDA graph \("):
        be.infer(preprocess(make_frames(1)[0], SPEC))
    eager = backend(HostTensorNet())  # the same model runs without the graph
    assert eager.infer(preprocess(make_frames(1)[0], SPEC)).shape == (1, 64, 128)
