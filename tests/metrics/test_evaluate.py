"""evaluate_predictions and `vsseg-edge eval` on a tiny Cityscapes-layout sequence built here."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.labels import CITYSCAPES, cityscapes_train_ids_to_ids
from vsseg_edge.data.datasets import open_dataset
from vsseg_edge.metrics import PredictionDir, evaluate_predictions

H, W, FRAMES, LABELLED = 64, 128, 4, 2
DX, DY = 2, 1  # the scene moves by (-2, -1) px per frame in the image
CLASSES = np.array([0, 2, 8, 10, 13], np.uint8)  # road, building, vegetation, sky, car


def _frames(seed=0):
    rng = np.random.default_rng(seed)
    big = np.repeat(np.repeat(rng.choice(CLASSES, (H // 8 + 2, W // 8 + 2)), 8, 0), 8, 1).astype(np.uint8)
    return [big[t * DY : t * DY + H, t * DX : t * DX + W].copy() for t in range(FRAMES)]


@pytest.fixture()
def tree(tmp_path):
    """leftImg8bit_sequence/val/city/…, one labelled frame per sequence, plus exact precomputed flow files."""
    root, flows = tmp_path / "cs", tmp_path / "flows"
    img_dir, gt_dir = root / "leftImg8bit_sequence" / "val" / "city", root / "gtFine" / "val" / "city"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    flows.mkdir()
    labels = _frames()
    palette = np.asarray(CITYSCAPES.palette, np.uint8)
    fw = np.zeros((H, W, 2), np.float32)
    fw[..., 0], fw[..., 1] = -DX, -DY
    for t, lab in enumerate(labels):
        stem = f"city_000000_{t:06d}"
        cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"), palette[lab][..., ::-1])
        if t == LABELLED:
            cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelIds.png"), cityscapes_train_ids_to_ids(lab))
        if t + 1 < FRAMES:
            np.save(flows / f"{stem}_leftImg8bit__city_000000_{t + 1:06d}_leftImg8bit.npy", fw)
    return root, flows, labels


class ConstantFlow:
    """A stand-in flow source: the exact constant flow of the translating scene."""

    name = "constant test flow"

    def __call__(self, dataset, ref_a, ref_b):
        flow = np.zeros((H, W, 2), np.float32)
        flow[..., 0], flow[..., 1] = -DX * (ref_b.index - ref_a.index), -DY * (ref_b.index - ref_a.index)
        return flow


def _flicker(lab, rate, seed):
    rng = np.random.default_rng(seed)
    out = lab.copy()
    m = rng.random(lab.shape) < rate
    out[m] = rng.choice(CLASSES, m.sum())
    return out


def test_ground_truth_predictions_score_100(tree):
    root, _, labels = tree
    ds = open_dataset(root, "val")
    report = evaluate_predictions(lambda ref: labels[ref.index], ds, ConstantFlow(), progress=False)
    assert report["miou"] == 100.0 and report["tc"] == 100.0
    assert report["tc_detail"]["pairs"] == FRAMES - 1 and report["tc_detail"]["flow"] == "constant test flow"
    assert report["dataset"]["labelled_frames"] == 1 and report["dataset"]["frames_predicted"] == FRAMES
    present = {CITYSCAPES.classes[c] for c in CLASSES}
    assert set(report["miou_detail"]["nan_classes"]) == set(CITYSCAPES.classes) - present


def test_flicker_and_errors_lower_the_figures(tree):
    root, _, labels = tree
    ds = open_dataset(root, "val")
    noisy = [_flicker(lab, 0.2, t) for t, lab in enumerate(labels)]
    report = evaluate_predictions(lambda ref: noisy[ref.index], ds, ConstantFlow(), progress=False, occlusion=True)
    assert report["miou"] < 95 and report["tc"] < 90
    assert report["tc_occ"] is not None and report["tc_detail"]["pairs_with_occlusion_check"] == FRAMES - 1
    mious_only = evaluate_predictions(lambda ref: noisy[ref.index], ds, tc=False, progress=False)
    assert mious_only["tc"] is None and mious_only["miou"] == report["miou"]


def test_missing_unlabelled_predictions_skip_pairs_but_labelled_ones_are_errors(tree):
    root, _, labels = tree
    ds = open_dataset(root, "val")
    report = evaluate_predictions(
        lambda ref: labels[ref.index] if ref.index != 0 else None, ds, ConstantFlow(), progress=False
    )
    assert report["tc_detail"]["pairs"] == FRAMES - 2 and report["tc_detail"]["pairs_skipped_missing_prediction"] == 1
    with pytest.raises(VssegError, match="no prediction for this labelled frame"):
        evaluate_predictions(lambda ref: None, ds, ConstantFlow(), progress=False)


def _write_preds(folder, labels, style):
    for t, lab in enumerate(labels):
        stem = f"city_000000_{t:06d}"
        if style == "flat_pred":
            path = folder / f"{stem}_pred.png"
        else:  # mirrored city folder, image stem
            path = folder / "city" / f"{stem}_leftImg8bit.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), lab)


@pytest.mark.parametrize("style", ["flat_pred", "mirrored"])
def test_eval_command_writes_json(tree, tmp_path, style):
    from typer.testing import CliRunner

    from vsseg_edge.cli import app

    root, flows, labels = tree
    preds = tmp_path / "preds"
    _write_preds(preds, labels, style)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["eval", str(preds), "--dataset", str(root), "--flow", str(flows), "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "mIoU 100.00" in result.output and "TC 100.00" in result.output and "3 pairs" in result.output
    report = json.loads(out.read_text())
    assert report["miou"] == 100.0 and report["tc"] == 100.0 and report["tc_detail"]["flow"].startswith("precomputed")


def test_eval_command_etc_mode_and_no_tc(tree, tmp_path):
    from typer.testing import CliRunner

    from vsseg_edge.cli import app

    root, flows, labels = tree
    preds = tmp_path / "preds"
    _write_preds(preds, labels, "flat_pred")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["eval", str(preds), "--dataset", str(root), "--no-tc", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["tc_detail"] is None
    r = CliRunner().invoke(app, ["eval", str(preds), "--dataset", str(root), "--flow", str(flows), "--tc-mode", "etc"])
    assert r.exit_code == 0 and "etc warp" in r.output


def test_missing_prediction_is_one_line_error(tree, tmp_path):
    root, _, labels = tree
    preds = tmp_path / "preds"
    _write_preds(preds, labels, "flat_pred")
    (preds / f"city_000000_{LABELLED:06d}_pred.png").unlink()
    ds = open_dataset(root, "val")
    with pytest.raises(VssegError) as exc:
        PredictionDir(preds, ds).check_labelled(ds.labelled())
    msg = str(exc.value)
    assert "\n" not in msg and f"city_000000_{LABELLED:06d}_leftImg8bit.png" in msg and "(1 of 1 labelled" in msg


def test_prediction_of_wrong_size_names_the_file(tree, tmp_path):
    root, _, labels = tree
    preds = tmp_path / "preds"
    _write_preds(preds, [lab[:, :64] for lab in labels], "flat_pred")
    ds = open_dataset(root, "val")
    with pytest.raises(VssegError, match=r"_pred\.png: label is 64x64"):
        evaluate_predictions(PredictionDir(preds, ds), ds, tc=False, progress=False)


def test_tc_without_ground_truth_on_an_image_folder(tree, tmp_path):
    """TC needs no labels: a plain folder of frames is one unlabelled sequence; mIoU is absent."""
    root, _, labels = tree
    folder = tmp_path / "video"
    folder.mkdir()
    for src in sorted((root / "leftImg8bit_sequence" / "val" / "city").iterdir()):
        (folder / src.name).write_bytes(src.read_bytes())
    ds = open_dataset(folder, kind="images")
    report = evaluate_predictions(lambda ref: labels[ref.index], ds, ConstantFlow(), progress=False)
    assert report["miou"] is None and report["miou_detail"] is None
    assert report["tc"] == 100.0 and report["tc_detail"]["pairs"] == FRAMES - 1
