"""Bad inputs a user gives by mistake: one line naming the file or flag and what was expected, exit 2.

Also the exit codes that used to hide a failure (a benchmark in which nothing ran, a run that segmented
no frame) and the smaller wording faults (the flag an error names, a message cut mid-word).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _corpus import QUICK_BENCH, refused, vs, write_recipe

# --- checkpoints -------------------------------------------------------------------------------------------


def test_a_checkpoint_with_only_its_format_key(tmp_path, arts):
    import torch

    path = tmp_path / "bare.pt"
    torch.save({"format": "vsseg-edge-checkpoint"}, path)
    refused(vs("run", path, "--source", arts["frames"]), str(path), "'model'")
    refused(vs("export", path, "--out", tmp_path / "b.onnx"), str(path), "'model'")


def test_a_checkpoint_with_keys_of_the_wrong_type(tmp_path, arts):
    import torch

    ckpt = torch.load(arts["ckpt"], weights_only=True)
    path = tmp_path / "bad.pt"
    torch.save({**ckpt, "classes": "road"}, path)
    refused(vs("run", path, "--source", arts["frames"]), str(path), "'classes'")


def test_a_zero_byte_checkpoint(tmp_path, arts):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    refused(vs("run", path, "--source", arts["frames"]), str(path), "empty")
    refused(vs("export", path, "--out", tmp_path / "e.onnx"), str(path), "empty")


def test_a_truncated_checkpoint(tmp_path, arts):
    path = tmp_path / "cut.pt"
    path.write_bytes(arts["ckpt"].read_bytes()[:200])
    refused(vs("run", path, "--source", arts["frames"]), str(path), "not a readable torch checkpoint")


class Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


def test_a_malicious_pickle_is_refused_with_a_whole_reason(tmp_path, arts):
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"format": "vsseg-edge-checkpoint", "x": Evil(tmp_path / "pwned")}, path)
    r = vs("run", path, "--source", arts["frames"])
    refused(r, str(path), "refused to unpickle", "GLOBAL")
    assert not (tmp_path / "pwned").exists()
    reason = r.last_line.split("(", 1)[1]
    assert reason.endswith(")") and "…" not in reason, reason  # the reason is whole, not cut mid-word
    assert "weights_only" not in reason  # torch's advice to load it unsafely is not repeated


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_raw_pickle_is_refused(tmp_path, arts):
    import pickle

    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"x": Evil(tmp_path / "pwned")}))
    refused(vs("export", path, "--out", tmp_path / "r.onnx"), str(path))
    assert not (tmp_path / "pwned").exists()


# --- recipes and overrides ---------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [42, ["a.yaml", "b.yaml"], None, ""])
def test_a_recipe_base_that_is_not_a_path(tmp_path, synth_root, base):
    recipe = write_recipe(tmp_path, synth_root)
    recipe.write_text(recipe.read_text() + f"base: {json.dumps(base)}\n")
    r = vs("train", recipe, "--no-progress")
    if base is None:  # `base: null` is the same as no base
        assert r.code == 0, r.err[-2000:]
    else:
        refused(r, "'base'")


def test_an_override_that_is_not_yaml(tmp_path, synth_root):
    refused(vs("train", write_recipe(tmp_path, synth_root), "-o", "data.crop=[32"), "--override", "data.crop=[32")


def test_an_unknown_model_kwargs_key(tmp_path, synth_root):
    recipe = write_recipe(tmp_path, synth_root, **{"model.kwargs": {"widht": 8}})
    refused(vs("train", recipe, "--no-progress"), "widht", "model.kwargs")


def test_a_huge_size_on_a_checkpoint(arts):
    refused(vs("run", arts["ckpt"], "--source", arts["frames"], "--size", "99999999x99999999"), "--size", "8192")


def test_a_huge_export_size(arts, tmp_path):
    refused(vs("export", arts["ckpt"], "--out", tmp_path / "m.onnx", "--size", "99999x99999"), "--size", "8192")
    assert list(tmp_path.iterdir()) == []


def test_a_huge_synth_size():
    refused(vs("data", "synth", "--out", "/nonexistent/x", "--size", "99999x99999"), "--size", "8192")


# --- frames and videos -------------------------------------------------------------------------------------


def test_calibrate_on_a_video_truncated_mid_file(arts, tmp_path):
    cut = tmp_path / "cut.avi"
    data = arts["video"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    r = vs(
        "calibrate", arts["onnx"], "--frames", cut, "--out", tmp_path / "q.onnx", "--target", "ort", "--num-frames", "4"
    )
    refused(r, str(cut), "truncated")
    assert not (tmp_path / "q.onnx").exists()


def test_eval_frames_errors_name_eval_frames(arts, tmp_path):
    r = vs(
        "calibrate",
        arts["onnx"],
        "--frames",
        arts["synth"],
        "--eval-frames",
        tmp_path / "missing",
        "--out",
        tmp_path / "q.onnx",
        "--target",
        "ort",
    )
    refused(r, "--eval-frames")
    assert "--frames " not in r.last_line.replace("--eval-frames", "")


def test_the_disjointness_error_suggests_options_that_exist(arts, tmp_path):
    """The same folder as calibration and gate frames: the message names real flags only."""
    r = vs(
        "calibrate",
        arts["onnx"],
        "--frames",
        arts["frames"],
        "--eval-frames",
        arts["frames"],
        "--out",
        tmp_path / "q.onnx",
        "--target",
        "ort",
        "--num-frames",
        "6",
    )
    refused(r, "--eval-frames")
    assert "--eval-split" not in r.last_line


def test_undefined_ground_truth_label_ids_are_refused(tmp_path, synth_root):
    """labelIds outside Cityscapes' table are refused, as undefined trainIds are."""
    import shutil

    import cv2

    root = tmp_path / "set"
    shutil.copytree(synth_root, root)
    label = min((root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    ids[:4, :4] = 200
    cv2.imwrite(str(label), ids)
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in sorted((root / "leftImg8bit_sequence" / "val").rglob("*.png")):
        cv2.imwrite(str(masks / p.name), np.zeros(ids.shape, np.uint8))
    r = vs("eval", masks, "--dataset", root, "--no-tc")
    refused(r, str(label), "200")


# --- exit codes ----------------------------------------------------------------------------------------------


def test_bench_fails_when_no_entry_ran(arts, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    out = tmp_path / "report"
    r = vs(
        "bench",
        broken,
        "--dataset",
        arts["synth"],
        "--out",
        out,
        *QUICK_BENCH,
    )
    refused(r, "no entry ran", "broken.onnx")
    assert not (out / "report.json").exists()


def test_run_fails_after_zero_frames(arts, tmp_path):
    video = tmp_path / "garbage.avi"
    video.write_bytes(b"RIFF" + os.urandom(4000))
    masks = tmp_path / "masks"
    r = vs("run", arts["onnx"], "--source", video, "--save-masks", masks)
    assert r.exc is None and r.code not in (0, None), r.err[-2000:]
    assert r.last_line.startswith("error: ")
    assert not masks.exists()  # a failed run leaves no empty --save-masks folder


def test_a_failed_run_leaves_no_empty_masks_folder(arts, tmp_path, monkeypatch):
    from vsseg_edge.runtime.backends import ort

    def fail(self, batch):
        raise RuntimeError("inference failed")

    monkeypatch.setattr(ort.OrtBackend, "infer", fail)
    masks = tmp_path / "deep" / "masks"
    r = vs("run", arts["onnx"], "--source", arts["frames"], "--save-masks", masks)
    assert r.code != 0
    assert not masks.exists()


def test_export_checks_parity_frames_before_exporting(arts, tmp_path, monkeypatch):
    from vsseg_edge.export import onnx_export

    def reached(*a, **k):
        raise AssertionError("exported before the parity frames were checked")

    monkeypatch.setattr(onnx_export, "torch_export", reached)
    refused(
        vs("export", arts["ckpt"], "--out", tmp_path / "m.onnx", "--parity-frames", tmp_path / "nothing"),
        str(tmp_path / "nothing"),
    )


@pytest.mark.parametrize("threads", ["-1", "-8"])
def test_negative_threads(arts, threads):
    refused(vs("run", arts["onnx"], "--source", arts["frames"], "--threads", threads), "--threads")


def test_run_on_a_copy_without_manifest_names_the_missing_manifest(arts, tmp_path):
    art = tmp_path / "alone.onnx"
    art.write_bytes(arts["onnx"].read_bytes())
    refused(vs("run", art, "--source", arts["frames"]), "no manifest")


def test_train_checkpoint_manifest_mismatch_on_resume(tmp_path, synth_root):
    """last.pt is checked against its manifest before it is resumed from."""
    recipe = write_recipe(tmp_path, synth_root)
    assert vs("train", recipe, "--no-progress").code == 0
    last = tmp_path / "runs" / "run" / "last.pt"
    data = bytearray(last.read_bytes())
    data[-10] ^= 0xFF
    last.write_bytes(bytes(data))
    refused(vs("train", recipe, "--no-progress", "--resume"), str(last), "sha256")
