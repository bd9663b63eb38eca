"""End-to-end runtime on CPU: video file and image folder, ORT and torch backends, sinks and stats."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.runtime.conftest import NFRAMES, read_video
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.preprocess import PreprocessSpec, labels_to_frame_size, preprocess
from vsseg_edge.runtime.backends import open_backend
from vsseg_edge.runtime.backends.torch_backend import TorchBackend
from vsseg_edge.runtime.pipeline import Pipeline
from vsseg_edge.runtime.sinks import MaskSink, NullSink, VideoSink
from vsseg_edge.runtime.sources import open_source
from vsseg_edge.runtime.stats import STAGES


def offline_ort_labels(onnx_path, frames, spec):
    """Reference: plain onnxruntime on each frame, argmax, resized to the frame (independent of the pipeline)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = []
    for f in frames:
        logits = sess.run(None, {"input": preprocess(f, spec)})[0]
        out.append(labels_to_frame_size(logits[0].argmax(0).astype(np.uint8), f.shape[:2]))
    return out


def test_video_ort_every_frame_labels_video_and_stats(tmp_path, onnx_model, video_file):
    frames = read_video(video_file)
    assert len(frames) == NFRAMES
    out_video, masks, stats = tmp_path / "out.mp4", tmp_path / "masks", tmp_path / "stats.jsonl"
    with open_backend(onnx_model, threads=1) as be:
        src = open_source(str(video_file))
        result = Pipeline(
            src, be, [VideoSink(out_video, fps=src.fps), MaskSink(masks)], stats_path=str(stats), handle_signals=False
        ).run()
    assert result.frames == NFRAMES and result.stopped_by == "end" and result.error is None
    expected = offline_ort_labels(onnx_model, frames, be.preprocess_spec)
    got = [cv2.imread(str(masks / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED) for i in range(NFRAMES)]
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    assert len({g.tobytes() for g in got}) > 1  # the labels follow the moving box, not a constant map
    written = read_video(out_video)
    assert len(written) == NFRAMES and written[0].shape == frames[0].shape
    recs = [json.loads(line) for line in stats.read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(NFRAMES))
    assert all(r[s] >= 0 for r in recs for s in STAGES) and all(r["infer_ms"] > 0 for r in recs)
    assert result.summary["infer_ms"]["p50"] > 0 and result.summary["drops"] == 0


def test_folder_torch_skips_corrupt_image(tmp_path, net, image_folder):
    import shutil

    import torch

    folder = tmp_path / "imgs"
    shutil.copytree(image_folder, folder)
    (folder / "frame_002b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    spec = PreprocessSpec(height=64, width=128)
    be = TorchBackend(net, preprocess_spec=spec, classes=[str(i) for i in range(19)], device="cpu")
    src = open_source(str(folder))
    result = Pipeline(src, be, [MaskSink(tmp_path / "m")], handle_signals=False).run()
    names = sorted(p.stem for p in image_folder.glob("*.png"))
    assert result.frames == len(names) == 6
    assert result.summary["decode_failures"] == 1
    for name in names:
        img = cv2.imread(str(folder / f"{name}.png"))
        with torch.inference_mode():
            ref = net(torch.from_numpy(preprocess(img, spec))).argmax(1)[0].numpy().astype(np.uint8)
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "m" / f"{name}.png"), cv2.IMREAD_UNCHANGED), ref)


def test_labels_output_model_equals_logits_argmax(tmp_path, onnx_model, onnx_labels_model, image_folder):
    outs = {}
    for key, model in (("logits", onnx_model), ("labels", onnx_labels_model)):
        with open_backend(model) as be:
            assert be.output_kind == key
            Pipeline(open_source(str(image_folder)), be, [MaskSink(tmp_path / key)], handle_signals=False).run()
        outs[key] = sorted((tmp_path / key).glob("*.png"))
    assert len(outs["logits"]) == len(outs["labels"]) == 6
    for a, b in zip(outs["logits"], outs["labels"]):
        np.testing.assert_array_equal(
            cv2.imread(str(a), cv2.IMREAD_UNCHANGED), cv2.imread(str(b), cv2.IMREAD_UNCHANGED)
        )


def test_frames_resized_to_model_and_labels_back_to_frame_size(tmp_path, onnx_model):
    big = np.full((96, 200, 3), 120, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), big)
    with open_backend(onnx_model) as be:
        Pipeline(open_source(str(tmp_path / "a.png")), be, [MaskSink(tmp_path / "m")], handle_signals=False).run()
    assert cv2.imread(str(tmp_path / "m" / "a.png"), cv2.IMREAD_UNCHANGED).shape == (96, 200)


def test_max_frames_stops_and_finalises_video(tmp_path, onnx_model, video_file):
    with open_backend(onnx_model) as be:
        result = Pipeline(
            open_source(str(video_file)), be, [VideoSink(tmp_path / "v.mp4")], max_frames=3, handle_signals=False
        ).run()
    assert result.frames == 3 and result.stopped_by == "max-frames"
    assert len(read_video(tmp_path / "v.mp4")) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_preprocessing_mismatch_refused(onnx_model, net):
    with open_backend(onnx_model) as be:
        spec = be.preprocess_spec
    with pytest.raises(VssegError, match=r"mean.*artifact expects"):
        open_backend(onnx_model, spec=spec.replace(mean=(0.0, 0.0, 0.0)))
    with pytest.raises(VssegError, match=r"height: 128 \(artifact expects 64\)"):
        open_backend(onnx_model, spec=spec.replace(height=128))  # a static ONNX cannot change size
    be = TorchBackend(net, preprocess_spec=spec, classes=["a"] * 19, device="cpu")
    be.check_spec(spec.replace(height=32, width=64))  # a size-free checkpoint may change size only
    assert be.preprocess_spec.size == (32, 64)
    with pytest.raises(VssegError, match="channel_order"):
        be.check_spec(spec.replace(channel_order="bgr"))


def test_backend_must_fit_the_file(onnx_model, tmp_path):
    with pytest.raises(VssegError, match="--backend torch cannot run tiny.onnx"):
        open_backend(onnx_model, "torch")
    (tmp_path / "x.bin").write_bytes(b"0")
    with pytest.raises(VssegError, match="unknown model type"):
        open_backend(tmp_path / "x.bin")
    with pytest.raises(VssegError, match="model file not found"):
        open_backend(tmp_path / "missing.onnx")


def test_null_sink_runs_headless(onnx_model, image_folder):
    with open_backend(onnx_model) as be:
        result = Pipeline(open_source(str(image_folder)), be, [NullSink()], handle_signals=False).run()
    assert result.frames == 6 and result.summary["fps"] > 0


def test_checkpoint_through_the_run_command(tmp_path, image_folder):
    """A real registry model (espnet) saved as a vsseg-edge checkpoint, run by `run_model` with the torch backend."""
    import torch

    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.models import create_model
    from vsseg_edge.models.checkpoint import save_checkpoint
    from vsseg_edge.runtime.run import run_model

    torch.manual_seed(0)
    model = create_model("espnet", 19).eval()
    spec = PreprocessSpec(height=64, width=128)
    ckpt = tmp_path / "espnet.pt"
    save_checkpoint(ckpt, model, model_name="espnet", classes=list(CITYSCAPES.classes), preprocess=spec)
    result = run_model(
        ckpt, source=str(image_folder), save_masks=tmp_path / "m", stats=tmp_path / "s.jsonl", save=tmp_path / "v.mp4"
    )
    assert result.frames == 6 and len((tmp_path / "s.jsonl").read_text().splitlines()) == 6
    assert len(read_video(tmp_path / "v.mp4")) == 6
    for png in sorted(image_folder.glob("*.png")):
        with torch.inference_mode():
            ref = model(torch.from_numpy(preprocess(cv2.imread(str(png)), spec))).argmax(1)[0].numpy()
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "m" / png.name), cv2.IMREAD_UNCHANGED), ref)
    # a checkpoint is size-free: --size changes the model input, the masks stay at the frame's size
    small = run_model(ckpt, source=str(image_folder), size="32x64", max_frames=1, save_masks=tmp_path / "m32")
    assert small.frames == 1
    assert cv2.imread(str(next((tmp_path / "m32").glob("*.png"))), cv2.IMREAD_UNCHANGED).shape == (64, 128)
    with pytest.raises(VssegError, match=r"model espnet: input 50x130 \(HxW\) is not supported"):
        run_model(ckpt, source=str(image_folder), size="50x130", max_frames=1)


def test_size_flag_refused_for_a_static_onnx(onnx_model, image_folder):
    from vsseg_edge.runtime.run import run_model

    with pytest.raises(VssegError, match=r"height: 32 \(artifact expects 64\)"):
        run_model(onnx_model, source=str(image_folder), size="32x64")
    with pytest.raises(VssegError, match="--size 32by64: expected HxW"):
        run_model(onnx_model, source=str(image_folder), size="32by64")


def test_dynamic_onnx_accepts_size_and_sources_are_exclusive(tmp_path, net, image_folder):
    from tests.runtime.conftest import export_onnx
    from vsseg_edge.runtime.run import run_model

    dyn = export_onnx(net, tmp_path / "dyn.onnx", dynamic=True)
    result = run_model(dyn, source=str(image_folder), size="32x64", save_masks=tmp_path / "m", max_frames=2)
    assert result.frames == 2
    assert cv2.imread(str(sorted((tmp_path / "m").glob("*.png"))[0]), cv2.IMREAD_UNCHANGED).shape == (64, 128)
    with pytest.raises(VssegError, match=r"exactly one of .* \(got --camera and --source\)"):
        run_model(dyn, camera=0, source=str(image_folder))
    with pytest.raises(VssegError, match=r"exactly one of"):
        run_model(dyn)


def test_file_source_under_a_slow_backend_keeps_every_frame_in_order(onnx_model, video_file):
    """Files are not live: a slow backend applies back-pressure through the bounded queues, nothing is dropped."""
    from tests.runtime.test_live import SlowBackend

    with open_backend(onnx_model, threads=1) as be:
        result = Pipeline(
            open_source(str(video_file)), SlowBackend(be, 0.02), [NullSink()], queue_size=1, handle_signals=False
        ).run()
    assert [r["frame"] for r in result.records] == list(range(NFRAMES))
    assert result.summary["drops"] == 0 and result.stopped_by == "end"
