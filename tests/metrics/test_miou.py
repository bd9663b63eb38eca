"""mIoU: hand-checked counts and agreement with cityscapesScripts' evaluation on the same label maps."""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np
import pytest

from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.labels import CITYSCAPES, cityscapes_train_ids_to_ids
from vsseg_edge.metrics import ConfusionMatrix


def test_hand_computed_counts():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 0]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 255]], np.uint8)
    cm = ConfusionMatrix(4)
    cm.update(pred, label)
    # class 0: TP 1 (0,0); FN: (0,1)->1, (1,3)->255 = 2; FP: (1,1) label 2 -> 0 = 1  => 1/4
    # class 1: TP 2; FP 1 ((0,1)); FN 0 => 2/3;  class 2: TP 1, FN 1 => 1/2;  class 3 absent => NaN
    iou = cm.iou()
    np.testing.assert_allclose(iou[:3], [1 / 4, 2 / 3, 1 / 2])
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx((1 / 4 + 2 / 3 + 1 / 2) / 3)
    assert cm.total == 7 and cm.pixel_accuracy() == pytest.approx(4 / 7)
    report = cm.to_dict(["a", "b", "c", "d"])
    assert report["nan_classes"] == ["d"] and report["classes_in_mean"] == 3
    assert report["per_class"]["a"] == 25.0 and report["per_class"]["d"] is None


def test_accumulates_pixels_not_per_image_means():
    big_l, big_p = np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)  # perfect, 100 px
    small_l, small_p = np.zeros((1, 2), np.uint8), np.array([[0, 1]], np.uint8)  # 1 px wrong
    cm = ConfusionMatrix(2)
    cm.update(big_p, big_l)
    cm.update(small_p, small_l)
    assert cm.iou()[0] == pytest.approx(101 / 102)


def test_bad_prediction_ids_raise_one_line_error():
    cm = ConfusionMatrix(3)
    with pytest.raises(VssegError, match=r"predicted class id\(s\) \[7\]"):
        cm.update(np.array([[7, 0]], np.uint8), np.array([[1, 0]], np.uint8), where="x.png")
    with pytest.raises(VssegError, match="differs from label shape"):
        cm.update(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    # an out-of-range prediction on an ignored label pixel is never looked at
    cm.update(np.array([[7]], np.uint8), np.array([[255]], np.uint8))
    assert cm.total == 0 and math.isnan(cm.miou())


def _label_maps(rng, n, h=48, w=96):
    """Pairs (pred, label) in trainIds: random noise, blocky structure, and ignore pixels in both."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            label = rng.integers(0, 19, (h, w)).astype(np.uint8)
            pred = np.where(rng.random((h, w)) < 0.6, label, rng.integers(0, 19, (h, w))).astype(np.uint8)
        else:  # blocky scene with few classes, so some classes are absent (NaN)
            label = np.repeat(np.repeat(rng.choice([0, 2, 8, 10, 13], (6, 12)), 8, 0), 8, 1).astype(np.uint8)
            pred = np.roll(label, 3, axis=1)
        label[rng.random((h, w)) < 0.1] = 255
        pred[rng.random((h, w)) < 0.05] = 255  # predicted "void": counted as wrong by both
        out.append((pred, label))
    return out


def test_matches_cityscapesscripts(tmp_path):
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    from cityscapesscripts.helpers.labels import trainId2label

    rng = np.random.default_rng(0)
    pairs = _label_maps(rng, 6)
    preds, gts = [], []
    for i, (pred, label) in enumerate(pairs):
        # labelId PNGs: trainId 255 becomes 'unlabeled' (id 0, ignoreInEval) in both maps
        cv2.imwrite(str(tmp_path / f"p{i}.png"), cityscapes_train_ids_to_ids(pred))
        cv2.imwrite(str(tmp_path / f"g{i}_gtFine_labelIds.png"), cityscapes_train_ids_to_ids(label))
        preds.append(str(tmp_path / f"p{i}.png"))
        gts.append(str(tmp_path / f"g{i}_gtFine_labelIds.png"))
    args = copy.copy(ev.args)
    args.evalInstLevelScore, args.JSONOutput, args.quiet, args.evalPixelAccuracy = False, False, True, False
    result = ev.evaluateImgLists(preds, gts, args)
    theirs = result["classScores"]

    cm = ConfusionMatrix(19)
    for pred, label in pairs:
        cm.update(pred, label)
    ours = cm.iou()
    for train_id, name in enumerate(CITYSCAPES.classes):
        assert trainId2label[train_id].name == name
        their = theirs[name]
        if math.isnan(their):
            assert math.isnan(ours[train_id]), name
        else:
            assert ours[train_id] == pytest.approx(their, abs=1e-6), name
    their_mean = ev.getScoreAverage(theirs, args)
    assert cm.miou() == pytest.approx(their_mean, abs=1e-6)


def test_nan_classes_match_cityscapesscripts(tmp_path):
    """Only a few classes present: the absent ones are NaN in both and left out of both means."""
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    rng = np.random.default_rng(1)
    pairs = [p for i, p in enumerate(_label_maps(rng, 4)) if i % 2 == 1]
    preds, gts = [], []
    cm = ConfusionMatrix(19)
    for i, (pred, label) in enumerate(pairs):
        cm.update(pred, label)
        preds.append(str(tmp_path / f"p{i}.png"))
        gts.append(str(tmp_path / f"g{i}_gtFine_labelIds.png"))
        cv2.imwrite(preds[-1], cityscapes_train_ids_to_ids(pred))
        cv2.imwrite(gts[-1], cityscapes_train_ids_to_ids(label))
    args = copy.copy(ev.args)
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    theirs = ev.evaluateImgLists(preds, gts, args)["classScores"]
    their_nan = {n for n in CITYSCAPES.classes if math.isnan(theirs[n])}
    assert set(cm.to_dict(CITYSCAPES.classes)["nan_classes"]) == their_nan
    assert len(their_nan) == 14  # 5 classes present
    assert cm.miou() == pytest.approx(ev.getScoreAverage(theirs, args), abs=1e-6)
