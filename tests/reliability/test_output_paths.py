"""Unwritable or misplaced outputs are refused in one line, and before the work (not after minutes of it).

A read-only disk is a read-only tmpfs (`ro_disk`). "Before the work" is checked by making the work itself
fail the test: the export, the quantiser, the benchmark and the training loop are replaced by a function
that raises, so a refusal that comes after them is a traceback here.
"""

from __future__ import annotations

import pytest
from _corpus import refused, vs, write_recipe


@pytest.fixture
def no_work(monkeypatch):
    """Make the work of each command (export, calibration, benchmark, training loop, rendering, evaluation, the
    runtime pipeline) raise if it is reached."""
    from vsseg_edge.bench import runner
    from vsseg_edge.calib import pipeline
    from vsseg_edge.data.synth import writer
    from vsseg_edge.export import onnx_export
    from vsseg_edge.metrics import evaluate
    from vsseg_edge.runtime import pipeline as runtime_pipeline
    from vsseg_edge.train import trainer

    def reached(*a, **k):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(onnx_export, "torch_export", reached)
    monkeypatch.setattr(pipeline, "calibration_frames", reached)
    monkeypatch.setattr(runner, "bench_entry", reached)
    monkeypatch.setattr(trainer.Trainer, "fit", reached)
    monkeypatch.setattr(writer, "write_sequence", reached)
    monkeypatch.setattr(evaluate, "evaluate_predictions", reached)
    monkeypatch.setattr(runtime_pipeline.Pipeline, "run", reached)


def cases(arts, tmp_path, where):
    """Every command's output flag pointing at `where` (a folder on a read-only disk, under a file …)."""
    return {
        "export": ["export", arts["ckpt"], "--out", where / "m.onnx", "--exporter", "torchscript"],
        "calibrate": [
            "calibrate",
            arts["onnx"],
            "--frames",
            arts["synth"],
            "--out",
            where / "q.onnx",
            "--target",
            "ort",
        ],
        "bench": ["bench", arts["onnx"], "--dataset", arts["synth"], "--out", where / "report", "--backends", "ort"],
        "run --save": ["run", arts["onnx"], "--source", arts["frames"], "--save", where / "o.mp4"],
        "run --save-masks": ["run", arts["onnx"], "--source", arts["frames"], "--save-masks", where / "masks"],
        "run --stats": ["run", arts["onnx"], "--source", arts["frames"], "--stats", where / "s.jsonl"],
        "data synth": [
            "data",
            "synth",
            "--out",
            where / "set",
            "--train",
            "1",
            "--val",
            "0",
            "--frames",
            "2",
            "--size",
            "32x64",
        ],
        "eval --json": ["eval", arts["masks"], "--dataset", arts["synth"], "--no-tc", "--json", where / "e.json"],
        "train": ["train", write_recipe(tmp_path, arts["synth"], out_dir=where / "runs"), "--no-progress"],
    }


COMMANDS = [
    "export",
    "calibrate",
    "bench",
    "run --save",
    "run --save-masks",
    "run --stats",
    "data synth",
    "eval --json",
    "train",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_read_only_disk(arts, tmp_path, ro_disk, no_work, command):
    r = vs(*cases(arts, tmp_path, ro_disk)[command])
    refused(r, str(ro_disk), "Read-only file system")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_where_a_folder_is_expected(arts, tmp_path, no_work, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    r = vs(*cases(arts, tmp_path, blocker)[command])
    refused(r, str(blocker), "is a file")
    assert blocker.read_text() == "a file, not a folder"


def test_eval_json_into_a_folder(arts, tmp_path, no_work):
    refused(
        vs("eval", arts["masks"], "--dataset", arts["synth"], "--no-tc", "--json", tmp_path), "--json", "is a folder"
    )


def test_export_out_is_a_folder(arts, tmp_path, no_work):
    folder = tmp_path / "x.onnx"
    folder.mkdir()
    refused(vs("export", arts["ckpt"], "--out", folder, "--exporter", "torchscript"), "--out", "is a folder")


def test_bench_out_is_a_file(arts, tmp_path, no_work):
    f = tmp_path / "report"
    f.write_text("")
    refused(
        vs("bench", arts["onnx"], "--dataset", arts["synth"], "--out", f, "--backends", "ort"), "--out", "is a file"
    )


def test_train_out_dir_is_a_file(arts, tmp_path, no_work):
    f = tmp_path / "runs"
    f.write_text("")
    refused(vs("train", write_recipe(tmp_path, arts["synth"], out_dir=f), "--no-progress"), "is a file")
