"""An output folder that already holds a run, a dataset or a report is refused unless --overwrite (or --resume).

Writing over it silently mixes two results: a re-trained `model.pt` beside the old run's appended
`metrics.jsonl`, new frames beside stale ones that `synth.json` does not describe, a new report beside the
old report's plots.
"""

from __future__ import annotations

import json

from _corpus import QUICK_BENCH, refused, vs, write_recipe


def test_train_into_a_previous_run_is_refused_then_overwritten(tmp_path, synth_root):
    recipe = write_recipe(tmp_path, synth_root)
    out = tmp_path / "runs" / "run"
    assert vs("train", recipe, "--no-progress").code == 0
    model = (out / "model.pt").read_bytes()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    r = vs("train", recipe, "--no-progress")
    refused(r, str(out), "--resume", "--overwrite")
    assert (out / "model.pt").read_bytes() == model and (out / "metrics.jsonl").read_text().splitlines() == lines
    r = vs("train", recipe, "--no-progress", "--overwrite")
    assert r.code == 0, r.err[-2000:]
    again = (out / "metrics.jsonl").read_text().splitlines()
    assert len(again) == len(lines)  # a fresh log, not the old one with a second run appended
    assert [json.loads(x)["step"] for x in again] == [json.loads(x)["step"] for x in lines]


def test_train_resume_and_overwrite_exclude_each_other(tmp_path, synth_root):
    refused(vs("train", write_recipe(tmp_path, synth_root), "--resume", "--overwrite"), "--resume", "--overwrite")


def test_synth_into_an_existing_set_is_refused_then_replaced(tmp_path):
    out = tmp_path / "set"
    common = ["--val", "0", "--frames", "2", "--size", "32x64", "--workers", "1"]
    assert vs("data", "synth", "--out", out, "--train", "2", *common).code == 0
    first = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    r = vs("data", "synth", "--out", out, "--train", "1", *common)
    refused(r, "--out", str(out), "--overwrite")
    assert sorted(p.relative_to(out) for p in out.rglob("*.png")) == first
    r = vs("data", "synth", "--out", out, "--train", "1", "--overwrite", *common)
    assert r.code == 0, r.err[-2000:]
    now = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert len(now) < len(first)  # the second sequence's frames are gone, not left stale
    assert json.loads((out / "synth.json").read_text())["num_train"] == 1


def test_synth_into_a_folder_of_other_files_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    refused(
        vs("data", "synth", "--out", out, "--train", "1", "--val", "0", "--frames", "2", "--size", "32x64"),
        "--out",
        "not empty",
    )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_bench_into_an_existing_report_is_refused_then_replaced_without_stale_plots(arts, tmp_path):
    out = tmp_path / "report"
    args = ["--dataset", arts["synth"], "--out", out, *QUICK_BENCH]
    assert vs("bench", arts["onnx"], arts["int8"], *args).code == 0
    assert (out / "int8_class_iou_delta.png").is_file()
    r = vs("bench", arts["onnx"], *args)
    refused(r, "--out", "--overwrite")
    r = vs("bench", arts["onnx"], "--overwrite", *args)
    assert r.code == 0, r.err[-2000:]
    assert not (out / "int8_class_iou_delta.png").exists()  # the old report's INT8 plot is not left beside the new
    assert len(json.loads((out / "report.json").read_text())["entries"]) == 1
