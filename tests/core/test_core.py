from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from vsseg_edge.core import config as cfgmod
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.fileio import atomic_write, read_label
from vsseg_edge.core.labels import CAMVID, CITYSCAPES, cityscapes_ids_to_train_ids
from vsseg_edge.core.manifest import read_manifest, write_manifest
from vsseg_edge.core.preprocess import PreprocessSpec, preprocess


@dataclass(frozen=True)
class Optim:
    lr: float = 0.01
    momentum: float = 0.9


@dataclass(frozen=True)
class Cfg:
    model: str = "pspnet18"
    optim: Optim = field(default_factory=Optim)
    crop: tuple[int, int] = (64, 128)


def test_cityscapes_table_matches_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels").labels
    ids = np.arange(34, dtype=np.uint8)
    expected = np.array([next(lab.trainId for lab in labels if lab.id == i) for i in range(34)])
    assert (cityscapes_ids_to_train_ids(ids) == expected).all()
    trained = sorted((lab for lab in labels if lab.trainId not in (255, -1)), key=lambda lab: lab.trainId)
    names = [lab.name for lab in trained]
    assert list(CITYSCAPES.classes) == names
    assert CITYSCAPES.num_classes == 19 and CAMVID.num_classes == 11


def test_preprocess_imagenet_rgb_nchw():
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[..., 0] = 10  # B
    frame[..., 2] = 200  # R
    spec = PreprocessSpec(height=4, width=6)
    x = preprocess(frame, spec)
    assert x.shape == (1, 3, 4, 6) and x.dtype == np.float32
    assert np.allclose(x[0, 0], (200 - 123.675) / 58.395)  # R first
    assert np.allclose(x[0, 2], (10 - 103.53) / 57.375)


def test_preprocess_espnet_bgr_scaled_and_resized():
    spec = PreprocessSpec(
        height=2, width=4, channel_order="bgr", mean=(72.4, 82.9, 73.2), std=(45.3, 46.2, 44.9), scale=1 / 255
    )
    frame = np.full((4, 8, 3), 100, np.uint8)
    x = preprocess(frame, spec)
    assert x.shape == (1, 3, 2, 4)
    assert np.allclose(x[0, 0], (100 - 72.4) / 45.3 / 255)


def test_preprocess_uint8_nhwc_keeps_pixels():
    frame = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    x = preprocess(frame, PreprocessSpec(height=4, width=6, layout="nhwc", dtype="uint8"))
    assert x.dtype == np.uint8 and x.shape == (1, 4, 6, 3)
    assert (x[0] == frame[..., ::-1]).all()


def test_preprocess_refuses_mismatch_and_bad_values():
    a = PreprocessSpec()
    with pytest.raises(VssegError, match="channel_order"):
        a.require_same(a.replace(channel_order="bgr"), "model.onnx")
    a.require_same(PreprocessSpec.from_dict(json.loads(json.dumps(a.to_dict()))), "model.onnx")
    with pytest.raises(VssegError, match="layout"):
        PreprocessSpec(layout="chw")
    with pytest.raises(VssegError, match="does not resize"):
        preprocess(np.zeros((3, 3, 3), np.uint8), PreprocessSpec(height=4, width=4, resize="none"))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as fh:
        fh.write(b"done")
    assert target.read_bytes() == b"done" and len(list(tmp_path.iterdir())) == 1


def test_manifest_roundtrip_and_tamper(tmp_path):
    art = tmp_path / "m.onnx"
    art.write_bytes(b"abc")
    write_manifest(
        art, "onnx", model="pspnet18", classes=list(CITYSCAPES.classes), preprocess=PreprocessSpec(), opset=17
    )
    man = read_manifest(art, kind="onnx", verify=True)
    assert man["opset"] == 17 and man["input"]["shape"] == [1, 3, 256, 512]
    with pytest.raises(VssegError, match="expected engine"):
        read_manifest(art, kind="engine")
    art.write_bytes(b"abd")
    with pytest.raises(VssegError, match="sha256"):
        read_manifest(art, verify=True)
    with pytest.raises(VssegError, match="no manifest"):
        read_manifest(tmp_path / "other.onnx")


def test_read_label_errors(tmp_path):
    import cv2

    p = tmp_path / "l.png"
    cv2.imwrite(str(p), np.zeros((4, 5), np.uint8))
    assert read_label(p, (4, 5)).shape == (4, 5)
    with pytest.raises(VssegError, match=r"l.png: label is 4x5 \(HxW\), expected 8x5"):
        read_label(p, (8, 5))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(VssegError, match="bad.png: not a readable"):
        read_label(tmp_path / "bad.png")


def test_config_rejects_unknown_keys_and_applies_overrides(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model: espnet\noptim:\n  lr: 1\ncrop: [32, 64]\n")
    cfg = cfgmod.load_config(Cfg, p, ["optim.momentum=0.5"])
    assert cfg == Cfg("espnet", Optim(1.0, 0.5), (32, 64))
    assert cfgmod.to_dict(cfg)["crop"] == [32, 64]
    p.write_text("optim:\n  lrr: 1\n")
    with pytest.raises(VssegError, match=r"unknown key\(s\) \['lrr'\]; valid keys: \['lr', 'momentum'\]"):
        cfgmod.load_config(Cfg, p)


def test_an_exponent_without_a_dot_is_a_float(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-4` as a string; a float field takes it as the number a user meant."""
    p = tmp_path / "r.yaml"
    p.write_text("optim:\n  lr: 1e-4\n")
    cfg = cfgmod.load_config(Cfg, p, ["optim.momentum=-2E+1"])
    assert cfg.optim == Optim(1e-4, -20.0)
    p.write_text("optim:\n  lr: 1e-4x\n")
    with pytest.raises(VssegError, match="optim.lr: expected float, got '1e-4x'"):
        cfgmod.load_config(Cfg, p)
