"""A full disk: every write is checked, a failed write ends the command with one line, and nothing broken stays.

The disk is a 2 MB tmpfs with 8 KB left (`full_disk`): OpenCV's `imwrite` and `VideoWriter` do not raise
when the disk fills, so these are the cases where an unchecked writer would exit 0 over empty files.
"""

from __future__ import annotations

import pytest
from _corpus import files_under, fill, refused, temp_leftovers, tiny_model, vs


def read_label(path):
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _no_broken_files(disk):
    broken = [p for p in files_under(disk) if not p.name.startswith("filler") and p.stat().st_size == 0]
    assert not broken, broken[:5]
    assert not temp_leftovers(disk)


def test_run_save_masks_on_a_full_disk(arts, full_disk):
    masks = full_disk / "masks"
    r = vs("run", arts["onnx"], "--source", arts["frames"], "--save-masks", masks)
    refused(r, str(masks), "No space left on device")
    _no_broken_files(full_disk)
    written = sorted(masks.glob("*.png")) if masks.exists() else []
    assert len(written) < 6 and all(read_label(p) is not None for p in written)  # the masks there are whole


def test_run_save_video_on_a_full_disk(arts, full_disk):
    (full_disk / "more").write_bytes(b"\0" * 7 * 1024)  # the H.264 overlay of 6 small frames fits in 8 KB
    video = full_disk / "overlay.mp4"
    r = vs("run", arts["onnx"], "--source", arts["frames"], "--save", video)
    refused(r, str(video))
    assert not video.exists()
    _no_broken_files(full_disk)


def test_run_stats_on_a_full_disk(arts, full_disk):
    stats = full_disk / "stats.jsonl"
    big = arts["frames"]
    r = vs("run", arts["onnx"], "--source", big, "--stats", stats)
    # 6 records fit in 8 KB: this run succeeds, the file is complete
    assert r.code == 0, r.err
    assert len(stats.read_text().splitlines()) == 6
    (full_disk / "more").write_bytes(b"\0" * 4096)  # now 4 KB are left, less than the stats need
    stats2 = full_disk / "stats2.jsonl"
    r = vs("run", arts["onnx"], "--source", big, "--stats", stats2)
    if r.code == 0:  # 6 short records can still fit in 4 KB; then the file must be whole
        assert len(stats2.read_text().splitlines()) == 6
    else:
        refused(r, str(stats2))
        assert not stats2.exists()
    _no_broken_files(full_disk)


def test_data_synth_on_a_full_disk(full_disk):
    out = full_disk / "synth"
    r = vs("data", "synth", "--out", out, "--train", "1", "--val", "0", "--frames", "2", "--size", "64x128",
           "--workers", "1")
    refused(r, "No space left on device")
    _no_broken_files(full_disk)
    assert not (out / "synth.json").exists()


def test_export_on_a_full_disk_before_exporting(arts, full_disk, monkeypatch):
    from vsseg_edge.export import onnx_export

    def never(*a, **k):
        raise AssertionError("exported although the disk is full")

    monkeypatch.setattr(onnx_export, "torch_export", never)
    out = full_disk / "m.onnx"
    r = vs("export", arts["ckpt"], "--out", out, "--exporter", "torchscript")
    refused(r, "--out", str(out), "free")
    _no_broken_files(full_disk)
    assert not out.exists()


def test_export_write_fails_on_a_full_disk(arts, full_disk, monkeypatch):
    """The free-space check passes (the estimate is low) but the disk fills while writing: one line, no file."""
    from vsseg_edge.core import fileio

    monkeypatch.setattr(fileio, "free_bytes", lambda path: 1 << 40)
    fill(full_disk, 0)
    out = full_disk / "m.onnx"
    r = vs("export", arts["ckpt"], "--out", out, "--exporter", "torchscript", "--no-simplify")
    refused(r, str(out), "No space left on device")
    _no_broken_files(full_disk)
    assert not out.exists() and not (full_disk / "m.onnx.json").exists()


def test_calibrate_on_a_full_disk(arts, full_disk):
    out = full_disk / "m.int8.qdq.onnx"
    r = vs("calibrate", arts["onnx"], "--frames", arts["synth"], "--out", out, "--target", "ort",
           "--num-frames", "2", "--no-gate")
    refused(r, "--out", str(out))
    _no_broken_files(full_disk)
    assert not out.exists()


def test_bench_on_a_full_disk(arts, full_disk):
    out = full_disk / "report"
    r = vs("bench", arts["onnx"], "--dataset", arts["synth"], "--out", out, "--runs", "1", "--warmup", "0",
           "--frames", "1", "--no-tc", "--backends", "ort")
    refused(r, str(out))
    _no_broken_files(full_disk)
    assert not (out / "report.json").exists() and not (out / "report.md").exists()


def test_train_on_a_full_disk(tmp_path, synth_root, full_disk):
    from _corpus import write_recipe

    recipe = write_recipe(tmp_path, synth_root, out_dir=full_disk / "runs")
    r = vs("train", recipe, "--no-progress")
    refused(r, "free")
    _no_broken_files(full_disk)
    assert not list((full_disk / "runs").rglob("*.pt")) if (full_disk / "runs").exists() else True


def test_eval_json_on_a_full_disk(arts, full_disk, tmp_path):
    masks = tmp_path / "masks"
    assert vs("run", arts["onnx"], "--source", arts["frames"], "--save-masks", masks).code == 0
    fill(full_disk, 0)
    out = full_disk / "eval.json"
    r = vs("eval", masks, "--dataset", arts["synth"], "--no-tc", "--json", out)
    refused(r, str(out))
    _no_broken_files(full_disk)
    assert not out.exists()


def test_calibrate_with_a_full_temporary_folder(arts, full_disk, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(full_disk))
    fill(full_disk, 0)
    out = tmp_path / "q.onnx"
    r = vs("calibrate", arts["onnx"], "--frames", arts["video"], "--out", out, "--target", "ort",
           "--num-frames", "2", "--no-gate")
    refused(r, "No space left on device")
    assert not out.exists()
    assert not [p for p in full_disk.iterdir() if not p.name.startswith("filler")]


def test_a_manifest_that_cannot_be_written_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The disk fills between a checkpoint and its manifest: the previous last.pt and its manifest stay, matching."""
    from vsseg_edge.core import manifest as manifest_module
    from vsseg_edge.core.errors import VssegError
    from vsseg_edge.core.manifest import read_manifest
    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.models.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "last.pt"
    spec = PreprocessSpec(height=64, width=128)
    save_checkpoint(path, tiny_model.RelTiny(19), model_name=tiny_model.NAME, classes=[str(i) for i in range(19)],
                    preprocess=spec, step=1)
    before = path.read_bytes()

    def full(target, obj, flag=None):
        raise VssegError(f"{target}: cannot write (No space left on device)")

    monkeypatch.setattr(manifest_module, "write_json", full)
    with pytest.raises(VssegError, match="No space left"):
        save_checkpoint(path, tiny_model.RelTiny(19), model_name=tiny_model.NAME, preprocess=spec, step=2,
                        classes=[str(i) for i in range(19)])
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    read_manifest(path, verify=True)  # still the pair it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.json"]  # no temporary file
