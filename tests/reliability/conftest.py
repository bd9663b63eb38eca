"""Fixtures of the reliability corpus: tiny artifacts, full and read-only disks (helpers: _corpus.py).

Every case runs a real command line (`vsseg_edge.cli.main`, so the exit code and the printed error are what a
user sees) on tiny inputs: a 64x128 synthetic set and a 4-channel conv net ("rel-tiny", tiny_model.py) as a
checkpoint, its ONNX export and an INT8 Q/DQ calibration of it, each with its manifest. Tests copy an
artifact before changing it. A full disk is a 2 MB tmpfs filled to leave a few KB; a read-only disk is a
read-only tmpfs; both need root (mount) and are skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the test modules import _corpus

from _corpus import fill, read, tiny_model, write_video

# --- disks -------------------------------------------------------------------------------------------------


def _mount(path: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("a full or read-only disk is a tmpfs mount, which needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True, check=False
    )
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs at {path}: {r.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def full_disk(tmp_path) -> Path:
    """A 2 MB tmpfs filled to leave 8 KB: the first sizeable write fails with ENOSPC."""
    disk = tmp_path / "full"
    _mount(disk, "size=2m")
    st = os.statvfs(disk)
    with open(disk / "filler", "wb") as fh:
        fh.write(b"\0" * (st.f_bavail * st.f_frsize - 8192))
    yield disk
    _umount(disk)


@pytest.fixture
def full_disk_at():
    """`full_disk_at(folder)`: a tmpfs with no byte free mounted at `folder` (a run's `tb/`, say), so that only
    what is written there fails; unmounted after the test."""
    mounted = []

    def mount(folder: Path, size: str = "1m") -> Path:
        _mount(folder, f"size={size}")
        mounted.append(folder)
        fill(folder, 0)
        return folder

    yield mount
    for folder in reversed(mounted):
        _umount(folder)


@pytest.fixture
def ro_disk(tmp_path) -> Path:
    """An empty read-only tmpfs (root ignores chmod 555, not a read-only mount)."""
    disk = tmp_path / "ro"
    _mount(disk, "ro,size=1m")
    yield disk
    _umount(disk)


# --- artifacts -----------------------------------------------------------------------------------------------

H, W = 64, 128


@pytest.fixture(scope="session")
def _cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _own_cache(_cache_dir, monkeypatch):
    """A private hash/flow cache for the corpus' cases (never the user's ~/.cache, never other tests')."""
    monkeypatch.setenv("VSSEG_EDGE_CACHE", str(_cache_dir))


@pytest.fixture(scope="session")
def arts(tmp_path_factory, synth_root, _cache_dir) -> dict:
    """{"ckpt": m.pt, "onnx": m.onnx, "int8": m.int8.qdq.onnx, "video": clip.avi, "frames": a folder of PNGs,
    "masks": label PNGs of those frames, "synth": the synthetic set}: made by the package's own save / export /
    calibrate, with manifests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VSSEG_EDGE_CACHE", str(_cache_dir))
        return _make_arts(tmp_path_factory.mktemp("arts"), synth_root)


def _make_arts(out: Path, synth_root: Path) -> dict:
    import cv2
    import numpy as np
    import torch

    from vsseg_edge.calib.config import CalibConfig
    from vsseg_edge.calib.pipeline import calibrate
    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.export.onnx_export import export_checkpoint
    from vsseg_edge.export.presets import ExportPreset
    from vsseg_edge.models.checkpoint import save_checkpoint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ckpt = out / "m.pt"
    save_checkpoint(
        ckpt,
        tiny_model.RelTiny(19).eval(),
        model_name=tiny_model.NAME,
        classes=list(CITYSCAPES.classes),
        preprocess=PreprocessSpec(height=H, width=W),
    )
    onnx_path = out / "m.onnx"
    export_checkpoint(ckpt, onnx_path, ExportPreset(exporter="torchscript", simplify=False))
    int8 = out / "m.int8.qdq.onnx"
    calibrate(onnx_path, synth_root, int8, CalibConfig(target="ort", num_frames=4, gate=False), log=lambda m: None)
    frames = out / "frames"
    frames.mkdir()
    val = sorted((synth_root / "leftImg8bit_sequence" / "val").rglob("*.png"))
    for p in val:
        shutil.copy(p, frames / p.name)
    video = out / "clip.avi"
    write_video(video, [read(p) for p in val])
    masks = out / "masks"  # predictions for `eval`: one label PNG per val frame, all "road"
    masks.mkdir()
    for p in val:
        cv2.imwrite(str(masks / p.name), np.zeros((H, W), np.uint8))
    return {
        "ckpt": ckpt,
        "onnx": onnx_path,
        "int8": int8,
        "video": video,
        "frames": frames,
        "masks": masks,
        "synth": synth_root,
    }
