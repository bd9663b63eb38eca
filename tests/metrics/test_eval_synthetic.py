"""End to end on the synthetic set (exact flow): ground truth as predictions, then with injected flicker."""

from __future__ import annotations

import json

import cv2
import numpy as np

from vsseg_edge.data.datasets import open_dataset
from vsseg_edge.metrics import evaluate_predictions


def _flickering(ds, rate: float, seed: int = 0):
    """pred_fn: the ground truth with `rate` of the pixels of every other frame set to a random other class."""
    c = ds.label_set.num_classes

    def pred_fn(ref):
        lab = ds.read_label(ref)
        if ref.index % 2 == 0 or rate == 0:
            return lab
        rng = np.random.default_rng([seed, ref.index])
        m = (rng.random(lab.shape) < rate) & (lab != 255)
        lab = lab.copy()
        lab[m] = (lab[m] + rng.integers(1, c, m.sum())) % c
        return lab

    return pred_fn


def test_ground_truth_scores_100_miou_and_high_tc_flicker_lowers_it(synth_root):
    ds = open_dataset(synth_root, "val")
    gt = evaluate_predictions(ds.read_label, ds, "exact", progress=False, occlusion=True)
    assert gt["miou"] == 100.0
    assert gt["tc_detail"]["flow"] == "exact synthetic flow"
    assert gt["tc_detail"]["pairs"] == sum(len(v) - 1 for v in ds.sequences.values())
    # exact flow but real disocclusions: the GT's TC is high, not perfect; the occlusion check removes most of it
    assert 85.0 < gt["tc"] <= 100.0 and gt["tc_occ"] >= gt["tc"]
    scores = [evaluate_predictions(_flickering(ds, r), ds, "exact", progress=False)["tc"] for r in (0.05, 0.2)]
    assert gt["tc"] > scores[0] > scores[1]
    # the paper's bilinear warp of class ids invents classes at every boundary, even for the ground truth
    etc = evaluate_predictions(ds.read_label, ds, "exact", progress=False, tc_mode="etc")
    assert etc["tc_detail"]["mode"] == "etc" and etc["tc"] < gt["tc"] - 5


def test_eval_command_on_synthetic_ground_truth(synth_root, tmp_path):
    from typer.testing import CliRunner

    from vsseg_edge.cli import app

    ds = open_dataset(synth_root, "val")
    preds = tmp_path / "preds"
    for ref in ds.frames():
        path = preds / ref.image.parent.name / f"{ref.image.stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), ds.read_label(ref))
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["eval", str(preds), "--dataset", str(synth_root), "--json", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["miou"] == 100.0 and report["tc_detail"]["flow"] == "exact synthetic flow"
    assert "exact synthetic flow" in r.output
