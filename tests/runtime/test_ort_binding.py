"""onnxruntime I/O binding (inputs and outputs in OrtValues bound once) and the execution providers' options.

On a GPU provider the backend binds by default; the same code path runs here on the CPU provider with
`io_binding=True`, which is what these tests check: same outputs as a plain run, buffers made once per input
shape, results that survive the next frame. The CUDA provider case is tier 2 (skipped without it).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from tests.runtime.conftest import export_onnx, make_frames
from vsseg_edge.core.preprocess import PreprocessSpec, preprocess
from vsseg_edge.runtime.backends import open_backend
from vsseg_edge.runtime.backends.ort import provider_options
from vsseg_edge.runtime.pipeline import Pipeline
from vsseg_edge.runtime.sinks import MaskSink
from vsseg_edge.runtime.sources import open_source


@pytest.mark.parametrize("fixture", ["onnx_model", "onnx_labels_model"])
def test_bound_io_gives_the_plain_run_outputs_and_reuses_its_buffers(request, fixture):
    model = request.getfixturevalue(fixture)
    frames = make_frames(3)
    with open_backend(model, threads=1) as plain, open_backend(model, threads=1, io_binding=True) as bound:
        assert plain.io_binding is False and plain.device == "CPU"  # the CPU provider's default: a plain run
        assert bound.io_binding is True
        outs, pointers = [], set()
        for f in frames:
            batch = preprocess(f, bound.preprocess_spec)
            got = bound.infer(batch)
            np.testing.assert_array_equal(got, plain.infer(batch))
            outs.append(got)
            pointers.add((bound._bound[2].data_ptr(), bound._bound[3].data_ptr()))
        assert len(pointers) == 1  # the same input and output buffers for every frame
        assert len({o.tobytes() for o in outs}) == 3  # each result is still its own frame's after the next ones
        np.testing.assert_array_equal(outs[0], plain.infer(preprocess(frames[0], plain.preprocess_spec)))


def test_a_size_free_graph_is_rebound_when_the_size_changes(tmp_path, net):
    dyn = export_onnx(net, tmp_path / "dyn.onnx", dynamic=True)
    frame = make_frames(1)[0]
    with open_backend(dyn, threads=1, io_binding=True) as bound, open_backend(dyn, threads=1) as plain:
        for hw in ((32, 64), (64, 128), (32, 64)):
            spec = PreprocessSpec(height=hw[0], width=hw[1])
            batch = preprocess(frame, spec)
            np.testing.assert_array_equal(bound.infer(batch), plain.infer(batch))
            assert bound._bound[0] == batch.shape


def test_pipeline_with_bound_io_writes_the_same_masks(tmp_path, onnx_model, video_file):
    import cv2

    masks = {}
    for binding in (False, True):
        with open_backend(onnx_model, threads=1, io_binding=binding) as be:
            out = tmp_path / str(binding)
            assert Pipeline(open_source(str(video_file)), be, [MaskSink(out)], handle_signals=False).run().frames == 12
        masks[binding] = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(out.glob("*.png"))]
    for a, b in zip(masks[False], masks[True]):
        np.testing.assert_array_equal(a, b)


def test_tensorrt_provider_keeps_its_engines_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VSSEG_EDGE_CACHE", str(tmp_path / "cache"))
    opts = provider_options("TensorrtExecutionProvider")
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_timing_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "cache" / "ort-tensorrt")
    assert (tmp_path / "cache" / "ort-tensorrt").is_dir()
    assert provider_options("CUDAExecutionProvider") == {} and provider_options("CPUExecutionProvider") == {}


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime with the CUDA execution provider (onnxruntime-gpu) and a GPU",
)
def test_cuda_provider_binds_on_the_device(onnx_model):
    frames = make_frames(2)
    with (
        open_backend(onnx_model, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]) as gpu,
        open_backend(onnx_model, providers=["CPUExecutionProvider"]) as cpu,
    ):
        assert gpu.device == "CUDA" and gpu.io_binding and gpu._bound is None
        for f in frames:
            batch = preprocess(f, gpu.preprocess_spec)
            np.testing.assert_allclose(gpu.infer(batch), cpu.infer(batch), atol=1e-3)
        assert gpu._bound[2].device_name() == "cuda"
