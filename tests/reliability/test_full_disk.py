"""A full disk: every write is checked, a failed write ends the command with one line, and nothing broken stays.

The disk is a 2 MB tmpfs with 8 KB left (`full_disk`): OpenCV's `imwrite` and `VideoWriter` do not raise
when the disk fills, so these are the cases where an unchecked writer would exit 0 over empty files.
"""

from __future__ import annotations

import json

import pytest
from _corpus import QUICK_BENCH, files_under, fill, refused, temp_leftovers, tiny_model, vs, write_video


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
    r = vs(
        "data",
        "synth",
        "--out",
        out,
        "--train",
        "1",
        "--val",
        "0",
        "--frames",
        "2",
        "--size",
        "64x128",
        "--workers",
        "1",
    )
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
    r = vs(
        "calibrate",
        arts["onnx"],
        "--frames",
        arts["synth"],
        "--out",
        out,
        "--target",
        "ort",
        "--num-frames",
        "2",
        "--no-gate",
    )
    refused(r, "--out", str(out))
    _no_broken_files(full_disk)
    assert not out.exists()


def test_bench_on_a_full_disk(arts, full_disk):
    out = full_disk / "report"
    r = vs(
        "bench",
        arts["onnx"],
        "--dataset",
        arts["synth"],
        "--out",
        out,
        *QUICK_BENCH,
    )
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
    r = vs(
        "calibrate",
        arts["onnx"],
        "--frames",
        arts["video"],
        "--out",
        out,
        "--target",
        "ort",
        "--num-frames",
        "2",
        "--no-gate",
    )
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
    save_checkpoint(
        path,
        tiny_model.RelTiny(19),
        model_name=tiny_model.NAME,
        classes=[str(i) for i in range(19)],
        preprocess=spec,
        step=1,
    )
    before = path.read_bytes()

    def full(target, obj, flag=None):
        raise VssegError(f"{target}: cannot write (No space left on device)")

    monkeypatch.setattr(manifest_module, "write_json", full)
    with pytest.raises(VssegError, match="No space left"):
        save_checkpoint(
            path,
            tiny_model.RelTiny(19),
            model_name=tiny_model.NAME,
            preprocess=spec,
            step=2,
            classes=[str(i) for i in range(19)],
        )
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    read_manifest(path, verify=True)  # still the pair it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.json"]  # no temporary file


class _SummaryWriterStandIn:
    """TensorBoard's SummaryWriter where TensorBoard is not installed, failing as it fails: records are appended to
    the event file by plain Python writes, and a failed write is kept and raised at the next `add_scalar` and at
    `close` (TensorBoard's background writer thread keeps its error and does the same)."""

    def __init__(self, logdir):
        from pathlib import Path
        from types import SimpleNamespace

        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.path, self.error = Path(logdir) / "events.out.tfevents.0.stand-in", None
        self.file_writer = SimpleNamespace(event_writer=SimpleNamespace(_file_name=str(self.path)))  # where TB says
        self._append(b"brain.Event:2")

    def _append(self, data: bytes) -> None:
        try:
            with open(self.path, "ab") as fh:
                fh.write(data)
        except OSError as exc:
            self.error = exc

    def add_scalar(self, tag, value, step):
        if self.error:
            raise self.error
        self._append(f"{step} {tag} {value}\n".encode())

    def close(self):
        if self.error:
            raise self.error


@pytest.fixture(params=["stand-in", "tensorboard"])
def event_writer(request, monkeypatch):
    """The training run's event writer: TensorBoard's own (skipped where it is not installed) or the stand-in."""
    if request.param == "tensorboard":
        pytest.importorskip("tensorboard", reason="TensorBoard is not installed (the stand-in case runs instead)")
    else:
        import sys
        from types import ModuleType

        fake = ModuleType("torch.utils.tensorboard")
        fake.SummaryWriter = _SummaryWriterStandIn
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    return request.param


def test_train_with_its_tensorboard_folder_full(tmp_path, synth_root, full_disk_at, event_writer):
    """Only the event files fail: the run goes on and ends well, with one warning naming the event file;
    metrics.jsonl (the run's log) has every record."""
    from _corpus import write_recipe

    run = tmp_path / "runs" / "run"
    full_disk_at(run / "tb")
    recipe = write_recipe(tmp_path, synth_root, out_dir=tmp_path / "runs")
    r = vs("train", recipe, "--no-progress")
    assert r.exc is None and r.code == 0 and "Traceback" not in r.err, r.err[-2000:]
    warnings = [ln for ln in r.err.splitlines() if ln.startswith("warning: TensorBoard events")]
    assert len(warnings) == 1 and f"{run / 'tb'}" in warnings[0], r.err[-2000:]
    assert "cannot write (No space left on device)" in warnings[0] and "metrics.jsonl has every record" in warnings[0]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2] and (run / "model.pt").is_file()
    assert [p for p in (run / "tb").iterdir() if not p.name.startswith("filler")] == []  # no empty event file


def test_train_on_a_disk_that_fills_with_tensorboard_on(tmp_path, synth_root, full_disk, monkeypatch, event_writer):
    """The whole run folder fills (the free-space check passed): the run's own one line (its log cannot be
    written) is the last line, not the event writer's error raised again when it closes."""
    from _corpus import write_recipe

    from vsseg_edge.core import fileio

    monkeypatch.setattr(fileio, "free_bytes", lambda path: 1 << 40)
    recipe = write_recipe(tmp_path, synth_root, out_dir=full_disk / "runs")
    fill(full_disk, 0)
    r = vs("train", recipe, "--no-progress")
    refused(r, "metrics.jsonl", "No space left on device")
    assert "warning: TensorBoard events" in r.err
    _no_broken_files(full_disk)


@pytest.mark.parametrize("suffix", [".flo", ".npy", ".png"])
def test_a_flow_file_on_a_full_disk(full_disk, suffix):
    """Every flow format reports a full disk as the one line naming the file (numpy's `tofile` said "N requested
    and M written", without errno, and was no refusal); no file, no temporary file."""
    import numpy as np

    from vsseg_edge.core.errors import VssegError
    from vsseg_edge.data.flowio import write_flow

    fill(full_disk, 0)
    out = full_disk / f"f{suffix}"
    flow = np.random.default_rng(0).uniform(-3, 3, (64, 128, 2)).astype(np.float32)
    with pytest.raises(VssegError) as info:
        write_flow(out, flow)
    assert str(info.value) == f"{out}: cannot write (No space left on device)"
    assert not out.exists()
    _no_broken_files(full_disk)


# --- a disk that fills while `run` writes (the free-space check at the start passed) -------------------------

MID_RUN_FRAMES = 40


@pytest.fixture
def noise_video(tmp_path):
    """40 frames of noise at 256x512 (MJPEG): the overlay of each compresses badly, so the output grows fast."""
    import numpy as np

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (256, 512, 3), np.uint8) for _ in range(MID_RUN_FRAMES)]
    return write_video(tmp_path / "noise.avi", frames)


@pytest.fixture
def small_disk(tmp_path, full_disk_at):
    """An empty 512 KB tmpfs: room for the first frames of a run's output, not for all of them."""
    disk = tmp_path / "small"
    full_disk_at(disk, "512k")
    for filler in disk.glob("filler*"):  # full_disk_at fills it; this case wants it empty
        filler.unlink()
    return disk


def _count_frames(monkeypatch, cls, method, disk):
    """Count the frames that reached `cls.method` (the sink's writes) in this in-process run, and those whose
    write returned although `disk` was full after it (a write that went unnoticed)."""
    import shutil

    seen = {"frames": 0, "unnoticed": 0}
    real = getattr(cls, method)

    def counting(self, *args, **kwargs):
        seen["frames"] += 1
        out = real(self, *args, **kwargs)
        seen["unnoticed"] += shutil.disk_usage(disk).free == 0
        return out

    monkeypatch.setattr(cls, method, counting)
    return seen


@pytest.mark.parametrize("writer", ["h264", "mp4v", "mjpg"])
def test_run_save_video_on_a_disk_that_fills_mid_run(arts, noise_video, small_disk, monkeypatch, writer):
    """The video outgrows its disk after some frames: the run ends there (not at the end of the source, not
    with exit 0 over a broken file), with one line naming the video; nothing renamed into place, no temp."""
    from vsseg_edge.runtime import av_output
    from vsseg_edge.runtime.sinks import VideoSink

    if writer == "h264" and not (av_output.av_module() and av_output.h264_encoder(av_output.av_module())):
        pytest.skip("PyAV with an H.264 encoder is not installed")
    if writer == "mp4v":
        monkeypatch.setattr(av_output, "av_module", lambda: None)  # OpenCV's fallback where PyAV is missing
    video = small_disk / ("overlay.avi" if writer == "mjpg" else "overlay.mp4")
    seen = _count_frames(monkeypatch, VideoSink, "_append", small_disk)
    r = vs("run", arts["onnx"], "--source", noise_video, "--save", video)
    refused(r, f"--save {video}: cannot write (No space left on device)")
    assert 1 < seen["frames"] < MID_RUN_FRAMES, seen  # it failed mid-run,
    assert seen["unnoticed"] == 0, seen  # at the frame the disk filled: every frame's write is checked
    assert not video.exists()
    assert [p for p in small_disk.iterdir() if not p.name.startswith("filler")] == []  # no temporary file


def test_run_save_masks_on_a_disk_that_fills_mid_run(arts, noise_video, small_disk, monkeypatch):
    """The masks outgrow their disk after some frames: the run ends at the first mask that does not fit, with
    one line naming it; every mask written before is whole, none is empty, no temp."""
    from vsseg_edge.runtime.sinks import MaskSink

    fill(small_disk, 64 * 1024)  # room for a few masks of noise
    masks = small_disk / "masks"
    seen = _count_frames(monkeypatch, MaskSink, "write", small_disk)
    r = vs("run", arts["onnx"], "--source", noise_video, "--save-masks", masks)
    refused(r, f"--save-masks {masks}/", ".png: cannot write (No space left on device)")
    written = sorted(masks.glob("*.png"))
    # it failed mid-run, at the first mask that did not fit (a mask that took the last byte is whole)
    assert 1 < len(written) == seen["frames"] - 1 < MID_RUN_FRAMES - 1, (len(written), seen)
    assert all(read_label(p) is not None for p in written)
    _no_broken_files(small_disk)
