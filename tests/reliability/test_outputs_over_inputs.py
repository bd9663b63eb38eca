"""An output path that resolves to an input (or its manifest) is refused before anything is written.

Each case checks the input's bytes afterwards: a refusal that came after the damage would not count.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from _corpus import QUICK_BENCH, copy_artifact, refused, vs


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_onto_its_checkpoint(arts, tmp_path):
    ckpt = copy_artifact(arts["ckpt"], tmp_path)
    before = digest(ckpt)
    refused(vs("export", ckpt, "--out", ckpt, "--exporter", "torchscript"), "--out", str(ckpt))
    assert digest(ckpt) == before


def test_export_onto_its_checkpoint_through_a_link(arts, tmp_path):
    ckpt = copy_artifact(arts["ckpt"], tmp_path)
    link = tmp_path / "m.onnx"
    os.link(ckpt, link)  # another name, the same file
    before = digest(ckpt)
    refused(vs("export", ckpt, "--out", link, "--exporter", "torchscript"), "--out", "input")
    assert digest(ckpt) == before


@pytest.mark.parametrize("name", ["e.txt", "e.pt", "e.onnx.json", "e"])
def test_export_refuses_a_suffix_the_next_command_cannot_read(arts, tmp_path, name):
    refused(vs("export", arts["ckpt"], "--out", tmp_path / name, "--exporter", "torchscript"), "--out", ".onnx")
    assert not (tmp_path / name).exists()


def test_run_stats_onto_the_model(arts, tmp_path):
    model = copy_artifact(arts["onnx"], tmp_path)
    before = digest(model)
    refused(vs("run", model, "--source", arts["frames"], "--stats", model), "--stats", str(model))
    assert digest(model) == before


def test_run_stats_onto_the_models_manifest(arts, tmp_path):
    model = copy_artifact(arts["onnx"], tmp_path)
    man = model.with_name(model.name + ".json")
    before = digest(man)
    refused(vs("run", model, "--source", arts["frames"], "--stats", man), "--stats", "manifest")
    assert digest(man) == before


def test_run_save_onto_the_source_video(arts, tmp_path):
    video = tmp_path / "v.avi"
    video.write_bytes(arts["video"].read_bytes())
    before = digest(video)
    refused(vs("run", arts["onnx"], "--source", video, "--save", video), "--save", str(video))
    assert digest(video) == before


def test_run_save_masks_into_the_source_folder(arts, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for p in sorted(arts["frames"].iterdir())[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    before = {p.name: digest(p) for p in folder.iterdir()}
    refused(vs("run", arts["onnx"], "--source", folder, "--save-masks", folder), "--save-masks", "input")
    assert {p.name: digest(p) for p in folder.iterdir()} == before


def test_run_two_outputs_on_one_path(arts, tmp_path):
    out = tmp_path / "o.avi"
    refused(vs("run", arts["onnx"], "--source", arts["frames"], "--save", out, "--stats", out), "--stats", "--save")
    assert not out.exists()


def test_calibrate_onto_its_model(arts, tmp_path):
    model = copy_artifact(arts["onnx"], tmp_path)
    before = digest(model)
    refused(vs("calibrate", model, "--frames", arts["synth"], "--out", model, "--target", "ort"), "--out")
    assert digest(model) == before


def test_calibrate_onto_its_eval_frames_video(arts, tmp_path):
    video = tmp_path / "v.onnx"  # a video named like a model: still an input
    video.write_bytes(arts["video"].read_bytes())
    refused(
        vs(
            "calibrate",
            arts["onnx"],
            "--frames",
            arts["synth"],
            "--eval-frames",
            video,
            "--out",
            video,
            "--target",
            "ort",
        ),
        "--out",
        "input",
    )
    assert video.read_bytes() == arts["video"].read_bytes()


def test_eval_json_onto_a_prediction(arts, tmp_path):
    masks = tmp_path / "masks"
    assert vs("run", arts["onnx"], "--source", arts["frames"], "--save-masks", masks).code == 0
    first = min(masks.iterdir())
    before = digest(first)
    refused(vs("eval", masks, "--dataset", arts["synth"], "--no-tc", "--json", first), "--json", ".json")
    refused(vs("eval", masks, "--dataset", arts["synth"], "--no-tc", "--json", masks), "--json", "folder")
    assert digest(first) == before


def test_bench_out_onto_a_model(arts, tmp_path):
    model = copy_artifact(arts["onnx"], tmp_path)
    before = digest(model)
    refused(
        vs(
            "bench",
            model,
            "--dataset",
            arts["synth"],
            "--out",
            model,
            *QUICK_BENCH,
        ),
        "--out",
        str(model),
    )
    assert digest(model) == before


def test_build_engine_out_onto_its_onnx(arts, tmp_path):
    """Refused before TensorRT is even looked for (this machine has none)."""
    model = copy_artifact(arts["onnx"], tmp_path)
    before = digest(model)
    refused(vs("build-engine", model, "--fp16", "--out", model), "--out", ".engine")
    assert digest(model) == before
