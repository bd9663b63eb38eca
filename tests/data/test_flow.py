"""Optical flow: DIS recovers a known shift, warping, the DIS cache, exact-flow chaining, precomputed files, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from vsseg_edge.core.errors import VssegError
from vsseg_edge.data.datasets import open_dataset
from vsseg_edge.data.flow import (
    DISFlow,
    ExactFlow,
    PrecomputedFlow,
    compose_flows,
    dis_flow,
    flow_pairs,
    open_flow_source,
    precompute_flows,
    resize_flow,
)
from vsseg_edge.data.flowio import write_flow
from vsseg_edge.data.warp import warp_backward

H, W = 64, 128


def _texture(seed: int, h: int = H, w: int = W) -> np.ndarray:
    noise = np.random.default_rng(seed).uniform(0, 255, (h, w)).astype(np.float32)
    gray = np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5) * 5 - 512, 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def _shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """b(x + dx, y + dy) = a(x, y): the content moves by (dx, dy), so the flow a→b is (dx, dy)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)


def _affine_flow(mat: np.ndarray) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    return np.dstack(
        [mat[0, 0] * xs + mat[0, 1] * ys + mat[0, 2] - xs, mat[1, 0] * xs + mat[1, 1] * ys + mat[1, 2] - ys]
    ).astype(np.float32)


def _motion(k: int) -> np.ndarray:
    m = cv2.getRotationMatrix2D((W / 2, H / 2), 1.5 * k, 1.0 + 0.02 * k)
    m[:, 2] += (2.0 * k, -1.0 * k)
    return m


def _synthetic_tree(root: Path, frames: int = 4) -> Path:
    """A synthetic-layout set: one sequence, textured frames, every frame labelled, exact affine flows."""
    city, seq = "synth", "synth_000000"
    for d in ("leftImg8bit_sequence", "gtFine", "flow"):
        (root / d / "val" / city).mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        stem = f"{seq}_{t:06d}"
        cv2.imwrite(str(root / "leftImg8bit_sequence/val" / city / f"{stem}_leftImg8bit.png"), _texture(t))
        cv2.imwrite(str(root / "gtFine/val" / city / f"{stem}_gtFine_labelIds.png"), np.full((H, W), 7, np.uint8))
        if t + 1 < frames:
            fw = _motion(t + 1)
            bw = cv2.invertAffineTransform(fw)
            write_flow(root / "flow/val" / city / f"{stem}_flow_fw.png", _affine_flow(fw))
            write_flow(root / "flow/val" / city / f"{stem}_flow_bw.png", _affine_flow(bw))
    (root / "synth.json").write_text(json.dumps({"frames": frames}))
    return root


def _images_dataset(root: Path, n: int = 3):
    root.mkdir(parents=True, exist_ok=True)
    base = _texture(0)
    for i in range(n):
        cv2.imwrite(str(root / f"frame_{i:03d}.png"), _shifted(base, 3 * i, 2 * i))
    return open_dataset(root)


def test_dis_recovers_a_translation():
    a = _texture(1)
    b = _shifted(a, 3, 2)
    flow = dis_flow(a, b, "medium")
    assert flow.shape == (H, W, 2) and flow.dtype == np.float32
    med = np.median(flow[8:-8, 8:-8].reshape(-1, 2), axis=0)
    np.testing.assert_allclose(med, [3, 2], atol=0.25)
    warped, valid = warp_backward(b, flow, "linear")
    err = np.abs(warped.astype(float) - a)[8:-8, 8:-8].mean()
    assert err < 0.25 * np.abs(b.astype(float) - a)[8:-8, 8:-8].mean()


def test_dis_at_reduced_size_and_resize_flow(tmp_path):
    a = _texture(2, 2 * H, 2 * W)
    b = _shifted(a, 6, 4)
    flow = dis_flow(a, b, "medium", scale=0.5)
    assert flow.shape == (2 * H, 2 * W, 2)
    np.testing.assert_allclose(np.median(flow[16:-16, 16:-16].reshape(-1, 2), axis=0), [6, 4], atol=0.4)
    half = resize_flow(flow, (H, W))
    np.testing.assert_allclose(np.median(half[8:-8, 8:-8].reshape(-1, 2), axis=0), [3, 2], atol=0.2)
    ds = _images_dataset(tmp_path / "frames", n=2)
    full, reduced = DISFlow("medium", tmp_path / "c"), DISFlow("medium", tmp_path / "c", scale=0.5)
    a_ref, b_ref = ds.sequences["frames"]
    assert full.cache_key(a_ref.image, b_ref.image) != reduced.cache_key(a_ref.image, b_ref.image)
    assert "0.5x" in reduced.name and reduced(ds, a_ref, b_ref).shape == (H, W, 2)
    with pytest.raises(VssegError, match="scale must be in"):
        DISFlow(scale=2.0)


def test_warp_backward_nearest_and_validity():
    labels = np.arange(H * W, dtype=np.float32).reshape(H, W) % 19
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 1.4  # sample one pixel to the right (rounded)
    flow[5, 5] = np.nan
    warped, valid = warp_backward(labels.astype(np.uint8), flow, "nearest", fill=255)
    np.testing.assert_array_equal(warped[:, :-1][valid[:, :-1]], labels[:, 1:][valid[:, :-1]].astype(np.uint8))
    assert not valid[5, 5] and warped[5, 5] == 255
    assert not valid[:, -1].any() and valid[:, :-1].sum() == H * (W - 1) - 1
    logits = np.random.default_rng(0).random((H, W, 7)).astype(np.float32)
    assert warp_backward(logits, flow, "linear")[0].shape == (H, W, 7)


def test_dis_cache_hit_and_invalidation(tmp_path):
    ds = _images_dataset(tmp_path / "frames")
    a, b = ds.sequences["frames"][:2]
    src = DISFlow("medium", tmp_path / "cache")
    f1 = src(ds, a, b)
    f2 = src(ds, a, b)
    assert (src.computed, src.hits) == (1, 1)
    np.testing.assert_array_equal(f1, f2)  # a cold and a warm cache give the same numbers
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 1
    exact = DISFlow("medium", tmp_path / "npy", cache_format="npy")
    # PNG entries are 1/64-px precise (+1/256: flowio rounds in float32)
    np.testing.assert_allclose(exact(ds, a, b), f1, atol=1 / 128 + 1 / 256)
    big = DISFlow("medium", tmp_path / "big")
    entry = big.cache_path(a.image, b.image)
    assert big._store(entry, np.full((H, W, 2), 600, np.float32)).max() == 600  # beyond KITTI's range → .npy
    assert entry.with_suffix(".npy").is_file() and big(ds, a, b).max() == 600 and big.computed == 0
    assert DISFlow("fast", tmp_path / "cache").cache_key(a.image, b.image) != src.cache_key(a.image, b.image)
    # a changed frame (new content, new size/mtime) is never served from the stale entry
    cv2.imwrite(str(b.image), _shifted(_texture(0), -2, 1))
    st = b.image.stat()
    os.utime(b.image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    f3 = src(ds, a, b)
    assert (src.computed, src.hits) == (2, 1)
    np.testing.assert_allclose(np.median(f3[8:-8, 8:-8].reshape(-1, 2), axis=0), [-2, 1], atol=0.3)


def test_exact_flow_reads_and_composes(tmp_path):
    ds = open_dataset(_synthetic_tree(tmp_path), "val")
    src = open_flow_source("auto", ds)
    assert isinstance(src, ExactFlow) and src.name == "exact synthetic flow"
    f0, f1, f2, f3 = ds.sequences["synth_000000"]
    np.testing.assert_allclose(src(ds, f0, f1), _affine_flow(_motion(1)), atol=1 / 64)
    np.testing.assert_allclose(src(ds, f1, f0), _affine_flow(cv2.invertAffineTransform(_motion(1))), atol=1 / 64)
    # f0→f3 chains three motions: compare with the composed affine map where the chain stays in the frame
    m = np.vstack([_motion(1), [0, 0, 1]])
    for k in (2, 3):
        m = np.vstack([_motion(k), [0, 0, 1]]) @ m
    chained = src(ds, f0, f3)
    expected = _affine_flow(m[:2])
    ok = np.isfinite(chained).all(axis=2)
    assert 0.5 < ok.mean() < 1.0  # part of the frame leaves the view over three steps
    assert np.abs(chained[ok] - expected[ok]).max() < 0.1
    # where the first step lands outside the frame the chain is unknown
    first = _affine_flow(_motion(1))
    xs = np.arange(W)[None, :] + first[..., 0]
    assert not ok[(xs > W - 1 + 0.05) | (xs < -0.05)].any()  # margin: the stored flow is 1/64-px precise
    backward = src(ds, f3, f0)
    back_ok = np.isfinite(backward).all(axis=2)
    expected_back = _affine_flow(cv2.invertAffineTransform(m[:2]))
    assert np.abs(backward[back_ok] - expected_back[back_ok]).max() < 0.1
    np.testing.assert_array_equal(src(ds, f2, f2), np.zeros((H, W, 2), np.float32))


def test_compose_is_consistent_with_successive_warps():
    f1, f2 = _affine_flow(_motion(1)), _affine_flow(_motion(2))
    img = _texture(5).astype(np.float32)
    twice, v2 = warp_backward(img, f2, "linear")
    twice, v1 = warp_backward(twice, f1, "linear")
    once, v = warp_backward(img, compose_flows([f1, f2]), "linear")
    inner = cv2.erode(v.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & v1
    assert inner.mean() > 0.5 and np.abs(once - twice)[inner].mean() < 3.0


def test_wrong_shape_flow_files_are_refused(tmp_path):
    ds = open_dataset(_synthetic_tree(tmp_path / "synth", frames=2), "val")
    a, b = ds.sequences["synth_000000"]
    flow_dir = tmp_path / "flows"
    flow_dir.mkdir()
    bad = flow_dir / f"{a.image.stem}__{b.image.stem}.npy"
    np.save(bad, np.zeros((H, W + 1, 2), np.float32))
    src = open_flow_source(str(flow_dir), ds)
    assert isinstance(src, PrecomputedFlow) and str(flow_dir) in src.name
    with pytest.raises(VssegError, match=rf"{bad.name}: flow is 64x129 \(HxW\), expected 64x128") as info:
        src(ds, a, b)
    assert "\n" not in str(info.value)
    np.save(bad, np.ones((H, W, 2), np.float32))
    assert src(ds, a, b).mean() == 1.0
    with pytest.raises(VssegError, match="no flow file"):
        src(ds, b, a)
    exact = ExactFlow.flow_path(ds, a, 0, "fw")
    write_flow(exact, np.zeros((H // 2, W, 2), np.float32))
    with pytest.raises(VssegError, match=rf"{exact.name}: flow is 32x128"):
        ExactFlow()(ds, a, b)
    with pytest.raises(VssegError, match="expected 'exact', 'dis', 'auto'"):
        open_flow_source("flownet", ds)


def test_precompute_and_cli(tmp_path):
    from typer import Typer
    from typer.testing import CliRunner

    from vsseg_edge.data.commands import register

    root = _synthetic_tree(tmp_path / "synth", frames=4)
    ds = open_dataset(root, "val")
    # every frame labelled: offsets ±1 give the 3 forward + 3 backward pairs; consecutive pairs are among them
    assert len(flow_pairs(ds, (-1, 1))) == 6 and len(flow_pairs(ds, (2,), consecutive=False)) == 2
    src = DISFlow("ultrafast", tmp_path / "cache")
    assert precompute_flows(ds, src, (-1, 1), progress=False) == {"pairs": 6, "computed": 6, "cached": 0}
    images = _images_dataset(tmp_path / "frames", n=4)  # an unlabelled folder: consecutive pairs only
    par = DISFlow("ultrafast", tmp_path / "cache2")
    assert precompute_flows(images, par, progress=False, workers=2)["computed"] == 3  # datasets pickle
    assert precompute_flows(images, par, progress=False)["cached"] == 3
    app, data_app = Typer(), Typer()
    app.add_typer(data_app, name="data")
    register(app, data_app)
    args = [
        "data",
        "flow",
        str(root),
        "--split",
        "val",
        "--offsets",
        "-1,1",
        "--cache",
        str(tmp_path / "cache"),
        "--preset",
        "ultrafast",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "6 pairs (0 computed, 6 cached)" in result.output
    result = CliRunner().invoke(app, args + ["--format", "npy"])  # another format: a separate cache entry
    assert result.exit_code == 0 and "6 pairs (6 computed, 0 cached)" in result.output, result.output
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 6
    result = CliRunner().invoke(app, args[:-2] + ["--offsets", "1,x"])
    assert isinstance(result.exception, VssegError) and "--offsets" in str(result.exception)


def test_exact_flow_on_the_generated_set(synth_root):
    """On the generator's output the exact flow (fw, bw, chained) warps labels onto the other frame."""
    ds = open_dataset(synth_root, "train")
    src = open_flow_source("auto", ds)
    assert isinstance(src, ExactFlow)
    refs = ds.sequences[next(iter(ds.sequences))]
    dis_epe = []
    for a_pos, k in ((0, 1), (1, 2), (5, -1), (4, -3)):
        a = refs[a_pos]
        b = ds.neighbour(a, k)
        la, lb = ds.read_label(a), ds.read_label(b)
        flow = src(ds, a, b)
        warped, valid = warp_backward(lb, flow, "nearest", fill=255)
        agree, unwarped = (warped == la)[valid].mean(), (lb == la).mean()
        assert valid.mean() > 0.6 and agree > 0.97 and agree > unwarped + 0.03, (k, agree, unwarped)
        if abs(k) == 1:
            d = dis_flow(ds.read_image(a), ds.read_image(b))
            dis_epe.append(np.linalg.norm(d - flow, axis=2)[np.isfinite(flow).all(axis=2)])
    assert np.median(np.concatenate(dis_epe)) < 1.0  # DIS agrees with the exact flow to under a pixel


def test_one_flow_cache_for_every_command(tmp_path, monkeypatch):
    """`data flow`, eval, bench and training resolve the same DIS cache: $VSSEG_EDGE_CACHE/flow, else XDG."""
    from vsseg_edge.data.flow import flow_cache_dir

    monkeypatch.setenv("VSSEG_EDGE_CACHE", str(tmp_path / "vc"))
    assert flow_cache_dir() == tmp_path / "vc" / "flow" and flow_cache_dir(tmp_path / "x") == tmp_path / "x"
    images = _images_dataset(tmp_path / "frames", n=3)
    assert open_flow_source("dis", images).cache_dir == tmp_path / "vc" / "flow"
    monkeypatch.delenv("VSSEG_EDGE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert flow_cache_dir() == tmp_path / "xdg" / "vsseg-edge" / "flow"
