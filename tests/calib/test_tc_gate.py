"""The temporal-consistency gate (calib/temporal.py): a candidate that flickers fails, a steady one passes.

The "models" here are label functions of the frame (a brightness threshold, which follows a moving square
exactly as a good segmenter would); the flickering candidate adds salt noise drawn afresh on every frame —
the shape of the INT8 failure this gate exists for: per-frame agreement stays high while the flipped pixels
move from frame to frame.
"""

from __future__ import annotations

import numpy as np
import pytest

from vsseg_edge.calib.temporal import (
    TcClip,
    TcFrames,
    TemporalGate,
    drop_bound,
    drop_quantiles,
    major_class_drop,
    pair_flips,
    tc_frames_from,
)
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.preprocess import PreprocessSpec

H, W = 48, 64
SPEC = PreprocessSpec(height=H, width=W)
CLASSES = ["background", "square", "stripe"]


def moving_square(n: int = 8, step: int = 2) -> list[np.ndarray]:
    """BGR frames: a textured background and a bright square moving right by `step` px per frame."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 60, (H, W + n * step, 3)).astype(np.uint8)
    frames = []
    for t in range(n):
        img = texture[:, t * step : t * step + W].copy()  # the camera pans: the background moves too
        img[14:30, 10 + t * step : 26 + t * step] = 230
        img[40:44, :] = 140
        frames.append(img)
    return frames


def threshold_model(frame: np.ndarray) -> np.ndarray:
    g = frame.mean(axis=2)
    return np.where(g > 200, 1, np.where(g > 120, 2, 0)).astype(np.uint8)


class Flicker:
    """The threshold model plus `rate` of its pixels set to a random class, independently on every frame."""

    def __init__(self, rate: float, seed: int = 1):
        self.rate, self.rng = rate, np.random.default_rng(seed)

    def __call__(self, frame):
        lab = threshold_model(frame)
        noise = self.rng.random(lab.shape) < self.rate
        lab[noise] = self.rng.integers(0, 3, int(noise.sum()))
        return lab


def predict(model, frames):
    return [model(f) for f in frames]


def clip_of(frames) -> TcFrames:
    clip = TcClip("square", [f"f{i}" for i in range(len(frames))], [(lambda f=f: f) for f in frames])
    return TcFrames("memory", "given", [clip])


def test_a_steady_candidate_passes_with_no_drop():
    gate = TemporalGate(threshold_model, clip_of(moving_square()), SPEC, CLASSES, predict)
    res = gate.measure(threshold_model, 1.0)
    assert res.passed and res.drop == pytest.approx(0.0) and res.extra_flips == 0.0
    assert res.tc_fp32 > 90  # the DIS flow follows the square and the background: few flips in FP32
    assert res.pairs == 7 and res.frames == 8


def test_a_flickering_candidate_fails_while_its_per_frame_agreement_stays_high():
    frames = moving_square()
    gate = TemporalGate(threshold_model, clip_of(frames), SPEC, CLASSES, predict)
    flicker = Flicker(0.03)
    res = gate.measure(flicker, 1.0)
    agreement = np.mean([(threshold_model(f) == Flicker(0.03, seed=1)(f)).mean() for f in frames])
    assert agreement > 0.97  # per-frame: 98 % of pixels agree, a 1-point agreement gate would pass
    assert res.agreement == pytest.approx(100 * agreement, abs=0.5)
    assert not res.passed and res.drop > 1.0
    assert res.extra_flips > 2.0 and res.flips_int8 > res.flips_fp32
    assert "FAILS" in res.summary()
    assert set(res.per_class) == set(CLASSES)  # the noise puts every class everywhere
    assert set(gate.measure(threshold_model, 1.0).per_class) == set(CLASSES)


def test_a_class_only_int8_predicts_is_named_and_its_share_of_the_drop_shown():
    """INT8 predicting a class FP32 never predicts, on a few scattered pixels, puts a class with TC 0 into INT8's
    mean only: the drop is dominated by it, which the gate says (the figure over the classes both predict)."""

    def no_stripe(frame):  # the FP32 "model": background and square only
        return np.where(threshold_model(frame) == 1, 1, 0).astype(np.uint8)

    rng = np.random.default_rng(3)

    def stray_stripes(frame):  # + 0.2 % of the pixels labelled stripe, elsewhere on every frame
        lab = no_stripe(frame)
        lab[rng.random(lab.shape) < 0.002] = 2
        return lab

    gate = TemporalGate(no_stripe, clip_of(moving_square()), SPEC, CLASSES, predict)
    res = gate.measure(stray_stripes, 1.0)
    assert res.one_sided == ["stripe"] and res.per_class["stripe"][0] is None
    assert not res.passed and res.drop > 20  # one of three classes at TC ~0
    common = res.to_dict()["drop_common_classes"]
    assert common is not None and abs(common) < 2.0  # on background and square the two agree
    assert "one predicts stripe" in res.summary()
    assert "one predicts" not in gate.measure(no_stripe, 1.0).summary()
    assert res.to_dict()["drop_major_classes"] == pytest.approx(common, abs=1e-3)  # stripe is neither major nor both


def test_the_major_class_drop_leaves_out_the_rare_classes():
    """A rare class (0.3 % of FP32's pixels) that loses 30 TC points carries a 10-point drop over three classes;
    over the classes that cover at least 1 % of the pixels the drop is the 1 point the large classes lose."""
    per_class = {"road": [90.0, 89.0], "car": [80.0, 79.0], "sign": [40.0, 10.0], "rider": [None, 5.0]}
    by_class = {"road": [99.0, 60.0], "car": [97.0, 20.0], "sign": [50.0, 0.3]}  # rider: FP32 never predicts it
    assert major_class_drop(per_class, by_class) == pytest.approx(1.0)
    assert major_class_drop(per_class, by_class, share=0.1) == pytest.approx((1 + 1 + 30) / 3)
    assert major_class_drop(per_class, {}) is None


def test_the_threshold_decides():
    gate = TemporalGate(threshold_model, clip_of(moving_square()), SPEC, CLASSES, predict)
    res = gate.measure(Flicker(0.03), 1.0)
    assert gate.measure(Flicker(0.03), res.drop + 5.0).passed


class FlickerOnce:
    """The threshold model, with `rate` of its pixels set to random classes on frame `at` only."""

    def __init__(self, rate: float, at: int):
        self.rate, self.at, self.t = rate, at, 0

    def __call__(self, frame):
        lab = threshold_model(frame)
        if self.t == self.at:
            rng = np.random.default_rng(7)
            noise = rng.random(lab.shape) < self.rate
            lab[noise] = rng.integers(0, 3, int(noise.sum()))
        self.t += 1
        return lab


def test_with_a_confidence_the_bound_decides_and_a_burst_of_flicker_widens_it():
    """A candidate that flickers on one frame of sixteen: its drop passes the threshold, but the bootstrap over
    the pairs sees the burst in some redraws and not in others — its 90 % bound is past the threshold, and the
    gate with a confidence fails it. The steady candidate's bound is 0."""
    frames = moving_square(16, step=1)
    gate = TemporalGate(threshold_model, clip_of(frames), SPEC, CLASSES, predict)
    point = gate.measure(FlickerOnce(0.02, at=8), 1.0)
    bounded = gate.measure(FlickerOnce(0.02, at=8), 1.0, confidence=0.9)
    assert point.passed and 0.5 < point.drop < 1.0 and point.bound is None
    low, high = point.interval  # always there: how precisely these 15 pairs give the drop
    assert low < point.drop < high and high > 1.0 and "90 % interval" in point.summary()
    assert bounded.drop == pytest.approx(point.drop)  # the same candidate, the same frames
    assert not bounded.passed and bounded.bound > 1.5 and bounded.judged == bounded.bound
    assert "90 % bound" in bounded.summary() and bounded.to_dict()["drop_bound"] == pytest.approx(bounded.bound, 1e-3)
    steady = gate.measure(threshold_model, 0.0, confidence=0.9)
    assert steady.passed and steady.bound == pytest.approx(0.0) and steady.interval == pytest.approx((0.0, 0.0))
    with pytest.raises(VssegError, match="confidence must be in"):
        gate.measure(threshold_model, 1.0, confidence=1.0)


def test_per_clip_judges_the_worst_clip_where_pooling_dilutes_it():
    """Two clips, the candidate flickers on the short one only: pooled into one TC the drop passes (0.5), judged
    per clip the flickering clip fails it (2.0) and is named; the steady clip's own drop is 0."""
    steady, burst = moving_square(16, step=1), [f.copy() for f in moving_square(6, step=1)]
    for f in burst:
        f[0, 0] = (1, 2, 3)  # a mark the candidate reads
    rng = np.random.default_rng(5)

    def candidate(frame):
        lab = threshold_model(frame)
        if tuple(frame[0, 0]) == (1, 2, 3):
            noise = rng.random(lab.shape) < 0.005
            lab[noise] = rng.integers(0, 3, int(noise.sum()))
        return lab

    def clip(name, frames):
        return TcClip(name, [f"{name}{i}" for i in range(len(frames))], [(lambda f=f: f) for f in frames])

    frames = TcFrames("memory", "given", [clip("steady", steady), clip("burst", burst)])
    gate = TemporalGate(threshold_model, frames, SPEC, CLASSES, predict)
    labels = [predict(candidate, [read() for read in c.read]) for c in frames.clips]
    pooled, per = gate.measure_labels(labels, 1.0), gate.measure_labels(labels, 1.0, per_clip=True)
    assert pooled.passed and pooled.drop < 1.0 and pooled.judged == pooled.drop
    assert not per.passed and per.worst_clip == "burst" and per.judged == per.clips["burst"]["drop"] > 1.0
    assert per.clips["steady"]["drop"] == pytest.approx(0.0) and "the worst burst" in per.summary()
    bounded = gate.measure_labels(labels, 1.0, confidence=0.9, per_clip=True)
    assert bounded.judged == bounded.clips["burst"]["bound"] >= 1.0 and not bounded.passed
    # the search ranks by the flicker of the clips that fail: none on the steady clip, some on the burst
    assert per.failing_clips == ["burst"] and pooled.failing_clips == ["burst"]
    assert gate.flip_error(candidate, 3, ["steady"]) == 0.0 < gate.flip_error(candidate, 3, per.failing_clips)
    assert gate.flip_error(candidate, 3) > 0.0  # every clip by default


def test_drop_bound_is_seeded_and_needs_a_confidence_in_0_1():
    frames = moving_square(12, step=1)
    gate = TemporalGate(threshold_model, clip_of(frames), SPEC, CLASSES, predict)
    counts = gate.pair_counts([predict(Flicker(0.02), frames)])
    assert drop_bound(gate.fp32_counts, counts, 0.9) == drop_bound(gate.fp32_counts, counts, 0.9)
    low, high = drop_quantiles(gate.fp32_counts, counts, [0.05, 0.95])
    assert low < gate.measure(Flicker(0.02), 1.0).drop < high  # a 90 % interval around the drop
    assert high == pytest.approx(drop_bound(gate.fp32_counts, counts, 0.95))
    for bad in (0.0, 1.0):
        with pytest.raises(VssegError, match="confidence must be in"):
            drop_bound(gate.fp32_counts, counts, bad)


def test_flip_error_ranks_a_noisier_candidate_higher():
    gate = TemporalGate(threshold_model, clip_of(moving_square()), SPEC, CLASSES, predict)
    low, high = gate.flip_error(Flicker(0.01), 3), gate.flip_error(Flicker(0.05), 3)
    assert gate.flip_error(threshold_model, 3) == 0.0
    assert 0 < low < high


def test_pair_flips_counts_pixels_that_change_along_the_flow():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[0, 0] = 1
    zero = np.zeros((4, 4, 2), np.float32)
    assert [int(m.sum()) for m in pair_flips([a, b], [zero])] == [1]


def test_label_maps_must_be_at_the_model_size():
    gate_frames = clip_of(moving_square(3))
    with pytest.raises(VssegError, match="input size"):
        TemporalGate(lambda f: threshold_model(f)[::2], gate_frames, SPEC, CLASSES, predict)


def test_tc_frames_from_a_frame_folder_skips_calibration_frames(tmp_path):
    import cv2

    for i, f in enumerate(moving_square(10)):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), f)
    tc = tc_frames_from(tmp_path, max_frames=20, clip_frames=20, skip=["003.png"])
    assert tc.keys == [f"{i:03d}.png" for i in range(4, 10)]  # the longest run after frame 3
    assert tc.record()["pairs"] == 5 and tc.record()["clips"][0]["first"] == "004.png"
    assert len(tc_frames_from(tmp_path, max_frames=4, clip_frames=20).keys) == 4


def test_tc_frames_from_camvid_is_refused(tmp_path):
    import cv2

    for sub in ("train", "trainannot"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(
            str(tmp_path / sub / "0001TP_006690.png"), np.zeros((8, 8) if "annot" in sub else (8, 8, 3), np.uint8)
        )
    with pytest.raises(VssegError, match="no consecutive frames"):
        tc_frames_from(tmp_path, split="train")
    with pytest.raises(VssegError, match="not found"):
        tc_frames_from(tmp_path / "missing")
