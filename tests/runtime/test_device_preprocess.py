"""The device implementation of the one preprocessing (runtime/device.py) against core.preprocess and OpenCV.

The contract: resized frames within 1 of OpenCV's uint8 result (exact for integer-factor shrinks and nearest),
model inputs within one uint8 step after normalisation, label maps resized identically, overlay within 1 of
`hud.overlay`. Run on CPU tensors here, and on CUDA tensors where a GPU is present (marked `gpu`).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.labels import CITYSCAPES
from vsseg_edge.core.preprocess import PreprocessSpec, labels_to_frame_size, preprocess
from vsseg_edge.export.parity import synthetic_frames
from vsseg_edge.runtime.device import DevicePreprocess, LabelResize, overlay, resize_taps
from vsseg_edge.runtime.hud import bgr_lut
from vsseg_edge.runtime.hud import overlay as host_overlay

CV2 = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def device_params(test):
    """Run on the CPU, and on CUDA when present (the CUDA case is tier 2, marked `gpu`)."""
    params = [
        pytest.param("cpu"),
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
        ),
    ]
    return pytest.mark.parametrize("device", params)(test)


def frames(hw: tuple[int, int]) -> list[np.ndarray]:
    """A smooth street-like frame and white noise (the worst case for rounding)."""
    noise = np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8)
    return [synthetic_frames(1, hw)[0], noise]


def device_resize(frame: np.ndarray, spec: PreprocessSpec, device: str) -> np.ndarray:
    dp = DevicePreprocess(spec, frame.shape[:2], device)
    return dp.resize(torch.from_numpy(frame).to(device)).cpu().numpy()


@device_params
def test_camera_frame_halved_is_exact(device):
    """1024×2048 → 512×1024, the Cityscapes camera case: OpenCV's 2×2 box, rounded half up, bit for bit."""
    spec = PreprocessSpec(height=512, width=1024)
    for frame in frames((1024, 2048)):
        got = device_resize(frame, spec, device)
        assert got.dtype == np.float32 and np.array_equal(got, np.floor(got))  # uint8 values before normalising
        np.testing.assert_array_equal(got.astype(np.uint8), cv2.resize(frame, (1024, 512)))


SIZES = [(64, 128), (32, 64), (50, 90), (96, 150), (128, 256), (256, 512), (127, 200), (45, 255)]


@device_params
@pytest.mark.parametrize("interpolation", ["linear", "area", "nearest"])
def test_resize_within_one_of_opencv_shrinking_and_growing(device, interpolation):
    figures = []
    for h, w in SIZES:
        spec = PreprocessSpec(height=h, width=w, interpolation=interpolation)
        for frame in frames((128, 256)):
            ref = cv2.resize(frame, (w, h), interpolation=CV2[interpolation]).astype(np.int16)
            diff = np.abs(device_resize(frame, spec, device).astype(np.int16) - ref)
            assert diff.max() <= 1, (h, w)
            _, _, rounding = resize_taps((128, 256), (h, w), interpolation)
            exact = interpolation == "nearest" or (128 % h == 0 and 256 % w == 0 and h <= 128 and w <= 256)
            if exact:
                assert diff.max() == 0, (h, w, rounding)
            figures.append(float((diff > 0).mean()))
    assert max(figures) < 0.2  # off-by-one is a rounding detail, never the rule


@device_params
@pytest.mark.parametrize(
    "dtype, layout, order, scale",
    [
        ("float32", "nchw", "rgb", 1.0),
        ("float32", "nhwc", "bgr", 1 / 255),
        ("uint8", "nhwc", "rgb", 1.0),
        ("uint8", "nchw", "bgr", 1.0),
    ],
)
def test_model_input_equals_core_preprocess_within_one_step(device, dtype, layout, order, scale):
    for hw, exact in (((64, 128), True), ((50, 90), False)):
        spec = PreprocessSpec(
            height=hw[0],
            width=hw[1],
            dtype=dtype,
            layout=layout,
            channel_order=order,
            scale=scale,
            mean=(10.0, 120.0, 200.0),
            std=(50.0, 60.0, 70.0),
        )
        for frame in frames((128, 256)):
            want = preprocess(frame, spec)
            got = DevicePreprocess(spec, frame.shape[:2], device)(torch.from_numpy(frame).to(device)).cpu().numpy()
            assert got.shape == want.shape == spec.input_shape(1) and got.dtype == want.dtype
            step = 1.0 if dtype == "uint8" else max(scale / s for s in spec.std)
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            assert diff.max() <= step * 1.0001 + 1e-6  # one uint8 step, plus float32 rounding
            if exact:
                assert diff.max() <= 1e-6  # same uint8 pixels: the same float32 arithmetic as core.normalize


def test_frame_of_the_model_size_is_not_resampled_and_resize_none_refuses_others():
    spec = PreprocessSpec(height=64, width=128, resize="none")
    frame = frames((64, 128))[0]
    got = DevicePreprocess(spec, (64, 128))(torch.from_numpy(frame)).numpy()
    np.testing.assert_array_equal(got, preprocess(frame, spec))
    with pytest.raises(
        VssegError,
        match=r"^frame: is 128x256, the model takes 64x128 and its preprocessing does "
        r"not resize$",
    ):
        DevicePreprocess(spec, (128, 256))
    with pytest.raises(VssegError, match=r"^frame: expected uint8 64x128x3, got torch.float32 \(64, 128, 3\)$"):
        DevicePreprocess(spec, (64, 128))(torch.zeros(64, 128, 3))


@device_params
@pytest.mark.parametrize(
    "labels_hw, frame_hw",
    [((64, 128), (1024, 2048)), ((64, 128), (100, 300)), ((64, 128), (64, 128)), ((128, 256), (50, 90))],
)
def test_labels_resized_identically(device, labels_hw, frame_hw):
    labels = np.random.default_rng(2).integers(0, 19, labels_hw, dtype=np.uint8)
    got = LabelResize(labels_hw, frame_hw, device)(torch.from_numpy(labels).to(device)).cpu().numpy()
    np.testing.assert_array_equal(got, labels_to_frame_size(labels, frame_hw))


@device_params
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_overlay_within_one_of_the_host_overlay(device, alpha):
    frame = frames((96, 160))[1]
    labels = np.random.default_rng(3).integers(0, 21, (96, 160), dtype=np.uint8)
    labels[0, :7] = 255  # ignore / unknown ids are black
    lut = bgr_lut(CITYSCAPES)
    want = host_overlay(frame, labels, lut, alpha).astype(np.int16)
    got = overlay(*(torch.from_numpy(a).to(device) for a in (frame, labels, lut)), alpha).cpu().numpy()
    assert got.dtype == np.uint8 and np.abs(got.astype(np.int16) - want).max() <= 1
    if alpha in (0.0, 0.5, 1.0):
        np.testing.assert_array_equal(got, want)


def test_labels_of_a_model_fed_by_the_device_path_equal_the_host_path(net):
    """Same pixels in (a 2× shrink is exact), same labels out; at a non-integer factor nearly all agree.

    (The random tiny net on white noise has many near-ties: 99.3 % agree there, 99.5 % on the smooth frame.)
    """
    for hw, min_agree in (((64, 128), 1.0), ((56, 100), 0.99)):
        spec = PreprocessSpec(height=hw[0], width=hw[1])
        agree = []
        for frame in frames((128, 256)):
            with torch.inference_mode():
                host = net(torch.from_numpy(preprocess(frame, spec))).argmax(1)
                dev = net(DevicePreprocess(spec, (128, 256))(torch.from_numpy(frame))).argmax(1)
            agree.append(float((host == dev).float().mean()))
        assert min(agree) >= min_agree, (hw, agree)


def test_taps_follow_opencv_rules():
    """The tables themselves: half-pixel centres clamped at borders, coverage weights summing to 1."""
    rows, cols, rounding = resize_taps((4, 6), (8, 3), "linear")
    idx, w = rows
    assert rounding == "half_up" and idx[0].tolist() == [0, 1] and w[0].tolist() == [1.0, 0.0]  # clamped at 0
    assert idx[-1].tolist() == [3, 3] and w[-1].tolist() == [1.0, 0.0]  # clamped at the last row
    np.testing.assert_allclose(w[1], [0.75, 0.25])  # (1 + 0.5) · 4 / 8 - 0.5 = 0.25: between rows 0 and 1
    (aidx, aw), _, rounding = resize_taps((10, 10), (4, 4), "area")
    assert rounding == "half_even"
    np.testing.assert_allclose(aw.sum(1), 1.0)
    assert aidx[0, :3].tolist() == [0, 1, 2] and aw[0, 2] == pytest.approx(0.2)  # 2.5 source rows per output
    (nidx, nw), _, rounding = resize_taps((7, 7), (3, 3), "nearest")
    assert rounding == "exact" and nidx[:, 0].tolist() == [0, 2, 4] and (nw == 1).all()
