"""Ctrl-C and SIGTERM: the command exits 130 / 143 after saving what can be resumed, and leaves no temporary files.

These run the CLI in a child process (`_corpus.child`) and signal it at a chosen moment: when training has
logged a step, when the export's temporary ONNX exists (its parity check is running), when calibration's
temporary folder exists. Without a handler Python dies at SIGTERM without running any `finally`.
"""

from __future__ import annotations

import signal
import time

import pytest
from _corpus import child, refused, temp_leftovers, vs, write_recipe


def _wait_for(predicate, proc, timeout: float = 60.0, what: str = "") -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}:\n{err[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_training_stopped_by_a_signal_saves_last_pt_and_exits_non_zero(tmp_path, synth_root, signum, code):
    recipe = write_recipe(tmp_path, synth_root, iterations=100000, ckpt_every=100000)
    out = tmp_path / "runs" / "run"
    proc = child("train", recipe, "--no-progress")
    log = out / "metrics.jsonl"
    _wait_for(lambda: log.is_file() and log.read_text().count("\n") >= 1, proc, what="the first logged step")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert (out / "last.pt").is_file() and not (out / "model.pt").exists()
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith("error: interrupted by SIG") and "--resume" in last, last
    assert "Traceback" not in err
    assert not temp_leftovers(out)


def test_export_stopped_during_its_parity_check_leaves_no_temporary_onnx(arts, tmp_path):
    out = tmp_path / "m.onnx"
    # a large input size makes the parity check take long enough to be interrupted in it
    proc = child(
        "export", arts["ckpt"], "--out", out, "--exporter", "torchscript", "--no-simplify", "--size", "1024x2048"
    )
    _wait_for(
        lambda: any(p.name.endswith(".tmp.onnx") for p in tmp_path.iterdir()),
        proc,
        what="the temporary ONNX (parity check)",
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "left: " + str(list(tmp_path.iterdir()))


def test_calibrate_stopped_leaves_no_temporary_folder(arts, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "q.onnx"
    proc = child(
        "calibrate",
        arts["onnx"],
        "--frames",
        arts["synth"],
        "--out",
        out,
        "--target",
        "ort",
        "--num-frames",
        "12",
        env={"TMPDIR": str(tmp)},
    )
    _wait_for(
        lambda: any(p.name.startswith("vsseg-calib") for p in tmp.iterdir()),
        proc,
        what="the calibration's temporary folder",
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert not temp_leftovers(tmp) and not out.exists()
    assert not temp_leftovers(tmp_path)


def test_calibrate_on_a_video_leaves_no_decoded_frames(arts, tmp_path, monkeypatch):
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    out = tmp_path / "q.onnx"
    r = vs("calibrate", arts["onnx"], "--frames", arts["video"], "--out", out, "--target", "ort", "--num-frames", "3")
    assert r.code == 0, r.err[-2000:]
    assert out.is_file() and list(tmp.iterdir()) == []


def test_calibrate_failing_on_a_video_leaves_no_decoded_frames(arts, tmp_path, monkeypatch):
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    out = tmp_path / "q.onnx"
    cut = tmp_path / "cut.avi"  # the gate's frames: a video cut mid-file, refused after the calibration frames
    data = arts["video"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    r = vs(
        "calibrate",
        arts["onnx"],
        "--frames",
        arts["video"],
        "--eval-frames",
        cut,
        "--out",
        out,
        "--target",
        "ort",
        "--num-frames",
        "3",
    )
    refused(r, str(cut), "truncated")
    assert "calibration:" not in r.err  # it failed while drawing the frames, after decoding the first video
    assert not out.exists() and list(tmp.iterdir()) == []
