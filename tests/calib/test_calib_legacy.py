"""The legacy TensorRT 8.6/10 calibrator: cache keys, cache reuse rules and batch feeding.

TensorRT cannot be installed here. `FakeTensorRTTestDouble` below is a TEST DOUBLE of the tensorrt module
that only provides a base class, so that our subclass logic (batches, device copies, cache I/O) can be
exercised; nothing here verifies TensorRT itself.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from vsseg_edge.calib.frames import SampledFrame, frames_sha1
from vsseg_edge.calib.legacy import BatchFeeder, CalibrationCache, calibration_cache_key, make_entropy_calibrator
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.preprocess import PreprocessSpec, preprocess_batch

SPEC = PreprocessSpec(height=16, width=32)


def _frames(n):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (20, 40, 3), dtype=np.uint8) for _ in range(n)]
    return [SampledFrame(f"f{i}.png", (lambda im=im: im)) for i, im in enumerate(imgs)]


def test_cache_key_changes_with_model_preprocessing_frames_and_batch():
    base = calibration_cache_key("a" * 64, SPEC, frames_sha1(["x", "y"]), 2)
    assert base == calibration_cache_key("a" * 64, SPEC, frames_sha1(["y", "x"]), 2)  # order-free frame list
    others = [
        calibration_cache_key("b" * 64, SPEC, frames_sha1(["x", "y"]), 2),
        calibration_cache_key("a" * 64, SPEC.replace(channel_order="bgr"), frames_sha1(["x", "y"]), 2),
        calibration_cache_key("a" * 64, SPEC.replace(height=32), frames_sha1(["x", "y"]), 2),
        calibration_cache_key("a" * 64, SPEC, frames_sha1(["x", "z"]), 2),
        calibration_cache_key("a" * 64, SPEC, frames_sha1(["x", "y"]), 4),
    ]
    assert len({base, *others}) == 6


def test_cache_is_never_reused_under_another_key(tmp_path):
    k1 = calibration_cache_key("a" * 64, SPEC, "f" * 40, 1)
    k2 = calibration_cache_key("b" * 64, SPEC, "f" * 40, 1)
    c1 = CalibrationCache(tmp_path / "calib.cache", k1)
    assert c1.read() is None and c1.last_read == "missing"
    c1.write(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
    assert c1.read() == b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n" and c1.last_read == "hit"
    c2 = CalibrationCache(tmp_path / "calib.cache", k2)  # same file, another model
    assert c2.read() is None and c2.last_read == "foreign key"
    assert CalibrationCache.in_dir(tmp_path, k1).path != CalibrationCache.in_dir(tmp_path, k2).path


def test_batch_feeder_uses_the_one_preprocessing_and_full_batches():
    frames = _frames(5)
    feeder = BatchFeeder(frames, SPEC, batch_size=2)
    assert feeder.num_batches == 2 and feeder.shape == (2, 3, 16, 32)
    first = feeder.next_batch()
    np.testing.assert_array_equal(first, preprocess_batch([frames[0].read(), frames[1].read()], SPEC))
    assert feeder.next_batch() is not None and feeder.next_batch() is None  # the 5th frame is dropped
    with pytest.raises(VssegError, match="cannot fill one batch"):
        BatchFeeder(frames[:1], SPEC, batch_size=2)


class _FakeCalibratorBase:
    def __init__(self):
        self.base_initialised = True


FakeTensorRTTestDouble = types.SimpleNamespace(
    __version__="10.0-test-double", IInt8EntropyCalibrator2=_FakeCalibratorBase
)


def test_calibrator_subclass_logic_with_a_tensorrt_test_double(tmp_path):
    copies = []

    def to_device(batch):
        copies.append(batch.copy())
        return 1000 + len(copies)

    key = calibration_cache_key("c" * 64, SPEC, "f" * 40, 2)
    cache = CalibrationCache(tmp_path / "c.cache", key)
    cal = make_entropy_calibrator(FakeTensorRTTestDouble, BatchFeeder(_frames(4), SPEC, 2), cache, to_device)
    assert isinstance(cal, _FakeCalibratorBase) and cal.base_initialised
    assert cal.get_batch_size() == 2
    assert cal.get_batch(["image"]) == [1001] and cal.get_batch(["image"]) == [1002]
    assert cal.get_batch(["image"]) is None and len(copies) == 2 and copies[0].shape == (2, 3, 16, 32)
    assert cal.read_calibration_cache() is None
    cal.write_calibration_cache(memoryview(b"scales"))
    assert cal.read_calibration_cache() == b"scales"


def test_tensorrt_without_implicit_calibration_is_refused():
    trt11_double = types.SimpleNamespace(__version__="11.0-test-double")
    with pytest.raises(VssegError, match="no implicit INT8 calibration"):
        make_entropy_calibrator(trt11_double, BatchFeeder(_frames(1), SPEC), None, lambda b: 0)
