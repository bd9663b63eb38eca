"""The synthetic street-scene generator: layout, determinism, labels, exactness of the flow, moving objects,
per-frame nuisances and the `data synth` command."""

from __future__ import annotations

import dataclasses
import json
import re

import cv2
import numpy as np
import pytest

from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.labels import CITYSCAPES, cityscapes_ids_to_train_ids
from vsseg_edge.data.flowio import read_flow
from vsseg_edge.data.synth import generate, writer
from vsseg_edge.data.synth.nuisances import Sensor, degrade
from vsseg_edge.data.synth.render import flow
from vsseg_edge.data.synth.sequence import render_sequence

TINY = dict(num_train=2, num_val=1, frames=6, height=64, width=128, seed=0)  # as tests/conftest.py's synth_root
NAME = re.compile(
    r"(synth0[tv]\d\d)_(\d{6})_(\d{6})_"
    r"(leftImg8bit|gtFine_labelIds|gtFine_labelTrainIds|flow_fw|flow_bw)\.png"
)


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def _sequences(root, split):
    """{(city, seq): [frame stems]} of one split, from the image files."""
    out = {}
    for p in sorted((root / "leftImg8bit_sequence" / split).rglob("*_leftImg8bit.png")):
        city, seq, frame, _ = NAME.fullmatch(p.name).groups()
        out.setdefault((city, seq), []).append(p.name[: -len("_leftImg8bit.png")])
    return out


def _warp(img, flow_map, interpolation):
    """Sample `img` (frame t+1) at (x + u, y + v): brings it into frame t's pixel grid."""
    h, w = flow_map.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    fx, fy = np.nan_to_num(flow_map[..., 0]), np.nan_to_num(flow_map[..., 1])
    return cv2.remap(img, gx + fx, gy + fy, interpolation)


def test_layout_counts_and_description(synth_root):
    files = _files(synth_root)
    assert all(NAME.fullmatch(p.name) for p in files if p.name != "synth.json"), [p.name for p in files][:5]
    for split, n_seq in (("train", 2), ("val", 1)):
        seqs = _sequences(synth_root, split)
        assert len(seqs) == n_seq and all(len(v) == 6 for v in seqs.values())
        for (city, _), stems in seqs.items():
            assert [s[-6:] for s in stems] == [f"{k:06d}" for k in range(6)]  # frames 0..5
            gt, fl = synth_root / "gtFine" / split / city, synth_root / "flow" / split / city
            for k, stem in enumerate(stems):
                assert (gt / f"{stem}_gtFine_labelIds.png").is_file()
                assert (gt / f"{stem}_gtFine_labelTrainIds.png").is_file()
                has_flow = k < 5  # the last frame has no successor
                assert (fl / f"{stem}_flow_fw.png").is_file() == has_flow == (fl / f"{stem}_flow_bw.png").is_file()
    assert len(files) == 1 + 3 * 6 * 3 + 3 * 5 * 2
    train_cities = {c for c, _ in _sequences(synth_root, "train")}
    val_cities = {c for c, _ in _sequences(synth_root, "val")}
    assert train_cities.isdisjoint(val_cities)
    meta = json.loads((synth_root / "synth.json").read_text())
    assert meta["flow"]["exact"] is True and meta["seed"] == 0 and meta["frames_per_sequence"] == 6
    assert (meta["height"], meta["width"], meta["num_train"], meta["num_val"]) == (64, 128, 2, 1)
    assert meta["classes"] == list(CITYSCAPES.classes)
    img = cv2.imread(str(next((synth_root / "leftImg8bit_sequence").rglob("*.png"))), cv2.IMREAD_UNCHANGED)
    assert img.shape == (64, 128, 3) and img.dtype == np.uint8


def test_labels_are_valid_and_varied(synth_root):
    seen = set()
    for p in sorted(synth_root.rglob("*_gtFine_labelTrainIds.png")):
        train_ids = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        ids = cv2.imread(str(p).replace("labelTrainIds", "labelIds"), cv2.IMREAD_UNCHANGED)
        CITYSCAPES.check_ids(train_ids, str(p))
        assert np.array_equal(cityscapes_ids_to_train_ids(ids), train_ids)
        present = set(np.unique(train_ids).tolist()) - {255}
        assert len(present) >= 8, (p.name, present)
        assert {0, 2, 10} <= present  # road, building and sky in every frame
        seen |= present
    names = {CITYSCAPES.classes[c] for c in seen}
    assert {"road", "sidewalk", "building", "pole", "vegetation", "sky", "person", "car"} <= names, names
    assert len(seen) >= 13


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    small = dict(num_train=1, num_val=1, frames=3, height=32, width=64)
    a, b, c = (generate(tmp_path / n, seed=s, **small) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert [p.relative_to(a) for p in fa] == [p.relative_to(b) for p in fb]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(fa, fb))
    imgs_a, imgs_c = ([p for p in f if p.name.endswith("leftImg8bit.png")] for f in (fa, fc))
    assert len(imgs_a) == len(imgs_c) == 6
    assert all(cv2.imread(str(p)).tobytes() != cv2.imread(str(q)).tobytes() for p, q in zip(imgs_a, imgs_c))


@pytest.mark.slow
def test_worker_processes_write_the_same_bytes(tmp_path, monkeypatch):
    small = dict(num_train=2, num_val=0, frames=2, height=32, width=64, seed=1)
    serial = generate(tmp_path / "serial", workers=1, **small)
    monkeypatch.setattr(writer, "SERIAL_BELOW", 0)
    pooled = generate(tmp_path / "pooled", workers=2, **small)
    assert [p.read_bytes() for p in _files(serial)] == [p.read_bytes() for p in _files(pooled)]


def test_flow_files_warp_labels_exactly(synth_root):
    for split in ("train", "val"):
        for (city, _), stems in _sequences(synth_root, split).items():
            gt, fl = synth_root / "gtFine" / split / city, synth_root / "flow" / split / city
            labels = [cv2.imread(str(gt / f"{s}_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED) for s in stems]
            for k in range(len(stems) - 1):
                for name, src, dst in (("fw", labels[k], labels[k + 1]), ("bw", labels[k + 1], labels[k])):
                    f = read_flow(fl / f"{stems[k]}_flow_{name}.png", expected_hw=(64, 128))
                    valid = np.isfinite(f[..., 0])
                    warped = _warp(dst, f, cv2.INTER_NEAREST)
                    assert valid.mean() > 0.75, (stems[k], name, valid.mean())
                    assert (warped == src)[valid].mean() >= 0.97, (stems[k], name)


def test_flow_is_photometrically_exact_on_clean_frames():
    """Warping clean frame t+1 with the exact flow matches frame t far better than no flow, and better than
    the same flow scaled by 0.8 or 1.2 (the exact flow is the minimum, not merely a good guess)."""
    _, _, city_seed, seq = writer.plan(0, 1, 0)[0]
    frames = list(render_sequence(city_seed, seq, 3, 128, 256, nuisances=False))
    for a, b in zip(frames[:-1], frames[1:]):
        f = b.flow_fw
        moving = np.isfinite(f[..., 0]) & (np.hypot(np.nan_to_num(f[..., 0]), np.nan_to_num(f[..., 1])) >= 1)
        assert moving.mean() > 0.3
        err = {
            s: np.abs(_warp(b.bgr.astype(np.float32), f * s, cv2.INTER_LINEAR) - a.bgr)[moving].mean()
            for s in (0.0, 0.8, 1.0, 1.2)
        }
        assert err[1.0] < 4.0 and err[1.0] < 0.4 * err[0.0], err
        assert err[1.0] < min(err[0.8], err[1.2]), err


def test_objects_move_independently_of_the_background():
    """On pixels of moving objects the flow differs from what a static world would give at the same points."""
    split, city, city_seed, seq = writer.plan(0, 0, 1)[0]
    frames = list(render_sequence(city_seed, seq, 3, 64, 128, nuisances=False))
    for a, b in zip(frames[:-1], frames[1:]):
        moving = a.frame.moving
        assert moving.sum() > 50
        static_a = dataclasses.replace(a.frame, vel=np.zeros_like(a.frame.vel), moving=np.zeros_like(a.frame.moving))
        f_true, f_static = flow(a.frame, b.frame, a.camera), flow(static_a, b.frame, a.camera)
        both = moving & np.isfinite(f_true[..., 0]) & np.isfinite(f_static[..., 0])
        assert np.abs(f_true - f_static)[both].mean() > 0.3
        still = ~moving & np.isfinite(f_true[..., 0])
        assert np.array_equal(f_true[still], f_static[still])


def test_ego_camera_drives_forward_and_yaws():
    for _, _, city_seed, seq in writer.plan(2, 3, 1):
        frames = [fr.frame for fr in render_sequence(city_seed, seq, 8, 32, 64, nuisances=False)]
        step = np.diff([f.centre[2] for f in frames])
        assert (step > 0.1).all() and (step < 1.0).all()  # 1.7 .. 17 m/s at 17 fps
        yaw = [np.degrees(np.arctan2(f.rot[0, 2], f.rot[2, 2])) for f in frames]
        assert np.ptp(yaw) > 0.01 and np.abs(yaw).max() < 8


def test_nuisances_differ_between_consecutive_frames():
    _, _, city_seed, seq = writer.plan(0, 1, 0)[0]
    noisy = list(render_sequence(city_seed, seq, 4, 64, 128, nuisances=True))
    residual = [fr.bgr.astype(np.float32) - np.rint(fr.frame.image[..., ::-1] * 255) for fr in noisy]
    assert all(np.abs(r).mean() > 1.0 for r in residual)  # every frame is degraded
    # the same clean image through the nuisances of two consecutive frames: different results
    sensor = Sensor.draw(np.random.default_rng([city_seed, seq, 5]))
    clean = noisy[0].frame.image
    outs = [degrade(clean, sensor, np.random.default_rng([city_seed, seq, k, 6])).astype(np.float32) for k in (0, 1, 0)]
    assert np.abs(outs[0] - outs[1]).mean() > 1.0
    assert np.array_equal(outs[0], outs[2])  # and deterministic per frame
    gains = [fr.bgr.mean() / max(np.rint(fr.frame.image * 255).mean(), 1) for fr in noisy]
    assert np.ptp(gains) > 0.003  # exposure flickers


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_train=-1), "num_train"),
        (dict(frames=1), "frames"),
        (dict(height=8), "height"),
        (dict(num_train=0, num_val=0), "nothing to generate"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(VssegError, match=message) as info:
        generate(tmp_path / "out", **{**dict(num_train=1, num_val=0, frames=2, height=32, width=64), **kwargs})
    assert "\n" not in str(info.value)


def test_output_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(VssegError, match="existing file"):
        generate(target, num_train=1, num_val=0, frames=2, height=32, width=64)


def _cli():
    import typer

    from vsseg_edge.data.synth.commands import register

    app, data_app = typer.Typer(), typer.Typer()
    app.add_typer(data_app, name="data")
    register(app, data_app)
    return app


def test_cli_synth_writes_the_set(tmp_path):
    from typer.testing import CliRunner

    out = tmp_path / "set"
    result = CliRunner().invoke(
        _cli(),
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--train",
            "1",
            "--val",
            "1",
            "--frames",
            "2",
            "--size",
            "32x64",
            "--seed",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "synth.json").read_text())
    assert (meta["seed"], meta["height"], meta["width"], meta["num_val"]) == (5, 32, 64, 1)
    assert len(list(out.rglob("*_leftImg8bit.png"))) == 4


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--size", "64by128"], "--size"),
        (["--train", "-2"], "--train"),
        (["--frames", "1"], "--frames"),
    ],
)
def test_cli_bad_input_names_the_flag(tmp_path, args, flag):
    from typer.testing import CliRunner

    result = CliRunner().invoke(_cli(), ["data", "synth", "--out", str(tmp_path / "o"), *args])
    assert isinstance(result.exception, VssegError) and str(result.exception).startswith(flag)


def test_cli_refuses_a_file_as_output(tmp_path):
    from typer.testing import CliRunner

    target = tmp_path / "f"
    target.write_text("x")
    result = CliRunner().invoke(_cli(), ["data", "synth", "--out", str(target), "--size", "32x64"])
    assert isinstance(result.exception, VssegError) and "--out" in str(result.exception)
