"""The video dataset kind: video files, frame folders, folders of clips; the frame cache; bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import shared_data
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.labels import CAMVID
from vsseg_edge.data import video as video_mod
from vsseg_edge.data.datasets import detect_kind, open_dataset
from vsseg_edge.data.video import clip_cache_path, image_hw, open_video

H, W = 24, 32


def _frames(n: int, seed: int = 0, hw=(H, W)) -> list[np.ndarray]:
    """Frames with a moving bright square on a textured background (distinct from each other)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (*hw, 3), dtype=np.uint8)
    out = []
    for i in range(n):
        img = base.copy()
        img[4:12, 2 + 2 * i : 10 + 2 * i] = 250
        out.append(img)
    return out


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0, fourcc: str = "FFV1") -> Path:
    """A small clip; FFV1 (lossless) so decoded frames can be compared bit for bit."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} here"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _write_folder(folder: Path, frames: list[np.ndarray], names: list[str] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i:02d}.png" for i in range(len(frames))]
    paths = []
    for name, f in zip(names, frames):
        assert cv2.imwrite(str(folder / name), f)
        paths.append(folder / name)
    return paths


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """The frame cache, redirected into the test's folder through $VSSEG_EDGE_CACHE."""
    root = tmp_path / "cache"
    monkeypatch.setenv("VSSEG_EDGE_CACHE", str(root))
    return root / "frames"


def test_video_file_decodes_once_into_the_cache(tmp_path, cache, monkeypatch):
    frames = _frames(7)
    clip = _write_video(tmp_path / "drive.avi", frames, fps=10.0)
    ds = open_dataset(clip, "train")  # a file: auto → video
    assert ds.name == "video" and len(ds) == 0 and ds.num_frames == 7
    assert list(ds.sequences) == ["drive"]
    refs = ds.sequences["drive"]
    assert [r.index for r in refs] == list(range(7))
    assert [r.image.name for r in refs] == [f"{i:06d}.png" for i in range(7)]
    assert refs[0].image.parent == clip_cache_path(clip, cache)
    for ref, want in zip(refs, frames):
        np.testing.assert_array_equal(ds.read_image(ref), want)  # lossless: the decoder's pixels
    assert ds.timestamp(refs[3]) == pytest.approx(0.3)
    assert ds.clips["drive"].fps == pytest.approx(10.0)
    assert ds.neighbour(refs[2], 3) == refs[5] and ds.neighbour(refs[2], -2) == refs[0]
    assert ds.neighbour(refs[5], 2) is None
    assert [p.name for p in cache.iterdir()] == [refs[0].image.parent.name]  # no temporary folder left

    def no_decode(*a, **k):
        raise AssertionError("decoded twice")

    monkeypatch.setattr(video_mod, "_decode_frames", no_decode)
    again = open_dataset(clip, "val", kind="video")
    assert again.frames() == ds.frames()


def test_changed_video_is_decoded_again(tmp_path, cache):
    clip = _write_video(tmp_path / "a.avi", _frames(4))
    first = open_video(clip).frames()[0].image.parent
    _write_video(clip, _frames(6, seed=1))
    os.utime(clip, ns=(1, 1))  # a different mtime whatever the clock's resolution
    ds = open_video(clip)
    assert ds.num_frames == 6 and ds.frames()[0].image.parent != first


def test_frame_folder_natural_order_and_timestamps(tmp_path, cache):
    names = ["frame_10.png", "frame_2.png", "frame_1.png", "frame_9.jpg"]
    frames = _frames(4)
    _write_folder(tmp_path / "cam", frames, names)
    (tmp_path / "cam" / "notes.txt").write_text("not a frame")
    (tmp_path / "cam" / "timestamps.json").write_text(
        json.dumps({"frame_1.png": 0.0, "frame_2.png": 0.1, "frame_9.jpg": 0.25, "frame_10.png": 0.3})
    )
    ds = open_dataset(tmp_path / "cam", kind="video")
    order = [r.image.name for r in ds.sequences["cam"]]
    assert order == ["frame_1.png", "frame_2.png", "frame_9.jpg", "frame_10.png"]
    assert [ds.timestamp(r) for r in ds.sequences["cam"]] == [0.0, 0.1, 0.25, 0.3]
    assert not cache.exists()  # frame folders are read in place
    (tmp_path / "cam" / "timestamps.json").write_text(json.dumps([1, 2, 3, 4]))
    assert open_video(tmp_path / "cam").timestamp(ds.sequences["cam"][2]) == 3.0
    assert detect_kind(tmp_path / "cam") == "images"  # a plain image folder keeps its kind when not asked


def test_folder_of_clips(tmp_path, cache):
    root = tmp_path / "clips"
    root.mkdir()
    _write_video(root / "b_drive.avi", _frames(5))
    _write_folder(root / "a_walk", _frames(3, seed=2))
    (root / "LICENSE.txt").write_text("CC BY 4.0")
    (root / ".hidden").mkdir()
    assert detect_kind(root) == "video"
    ds = open_dataset(root, "train")
    assert ds.name == "video" and list(ds.sequences) == ["a_walk", "b_drive"]
    assert ds.num_frames == 8 and ds.clips["a_walk"].timestamps is None
    ds.check_offsets([-2, -1, 1, 2])
    with pytest.raises(VssegError, match=r"a_walk: clip has 3 frames, fewer than the 4 .* offset 3"):
        ds.check_offsets([-2, -1, 1, 2, 3])
    camvid = ds.with_label_set(CAMVID)
    assert camvid.label_set is CAMVID and camvid.frames() == ds.frames()


def test_flow_pairs_cover_every_frame_of_video(tmp_path, cache):
    from vsseg_edge.data.flow import DISFlow, flow_pairs, precompute_flows

    ds = open_video(_write_video(tmp_path / "c.avi", _frames(5)))
    pairs = {(a.index, b.index) for a, b in flow_pairs(ds, offsets=(-1, 2))}
    backward, skip2 = {(t + 1, t) for t in range(4)}, {(t, t + 2) for t in range(3)}
    consecutive = {(t, t + 1) for t in range(4)}
    assert pairs == backward | skip2 | consecutive
    source = DISFlow("ultrafast", tmp_path / "flow")
    stats = precompute_flows(ds, source, offsets=(-1, 2), progress=False)
    assert stats == {"pairs": 11, "computed": 11, "cached": 0}
    flow = source(ds, ds.sequences["c"][0], ds.sequences["c"][1])
    assert flow.shape == (H, W, 2) and source.hits == 1
    assert np.nanmedian(flow[6:10, 4:8, 0]) > 0.5  # the square moves right by 2 px per frame


def test_tc_on_video_with_the_models_classes(tmp_path, cache):
    from vsseg_edge.data.flow import DISFlow
    from vsseg_edge.metrics.evaluate import evaluate_predictions

    ds = open_video(_write_video(tmp_path / "c.avi", _frames(4))).with_label_set(CAMVID)
    report = evaluate_predictions(
        lambda ref: np.full((H, W), 10, np.uint8), ds, DISFlow("ultrafast", None), progress=False
    )
    assert report["miou"] is None and report["tc"] == pytest.approx(100.0)
    assert report["tc_detail"]["pairs"] == 3 and report["dataset"]["class_set"] == "camvid"


def test_eval_cli_finds_masks_of_each_clip_by_its_name(tmp_path, cache):
    from typer.testing import CliRunner

    from vsseg_edge.cli import app

    root = tmp_path / "clips"
    root.mkdir()
    _write_video(root / "one.avi", _frames(3))
    _write_video(root / "two.avi", _frames(3, seed=1))
    for clip, value in (("one", 3), ("two", 5)):
        for i in range(3):
            (tmp_path / "pred" / clip).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "pred" / clip / f"{i:06d}.png"), np.full((H, W), value, np.uint8))
    out = tmp_path / "tc.json"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            str(tmp_path / "pred"),
            "--dataset",
            str(root),
            "--classes",
            "camvid",
            "--flow-cache",
            str(tmp_path / "flow"),
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["tc_detail"]["pairs"] == 4 and report["tc"] == pytest.approx(100.0)
    assert set(report["tc_detail"]["per_class"]) == set(CAMVID.classes)


# --- bad input ---------------------------------------------------------------------------------------------


def test_a_clip_that_does_not_decode_leaves_nothing(tmp_path, cache):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    with pytest.raises(VssegError, match=r"broken\.mp4: does not decode"):
        open_dataset(bad)
    assert not cache.exists() or not any(cache.iterdir())


def test_interrupted_decode_leaves_no_folder(tmp_path, cache, monkeypatch):
    clip = _write_video(tmp_path / "c.avi", _frames(6))
    real, calls = cv2.imencode, []  # frames are encoded in memory, then written (core.fileio.write_image)

    def failing(ext, img, params=None):
        calls.append(ext)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(ext, img, params or [])

    monkeypatch.setattr(cv2, "imencode", failing)
    with pytest.raises(KeyboardInterrupt):
        open_video(clip)
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(cv2, "imencode", real)
    assert open_video(clip).num_frames == 6


def test_mixed_frame_sizes_empty_folders_and_short_clips(tmp_path, cache):
    _write_folder(tmp_path / "mixed", _frames(2) + _frames(1, hw=(H, W + 8)))
    with pytest.raises(VssegError, match=r"mixed/02\.png: frame is 24x40 \(HxW\) but 00\.png is 24x32"):
        open_dataset(tmp_path / "mixed", kind="video")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VssegError, match=r"empty: no clips found"):
        open_dataset(tmp_path / "empty", kind="video")
    clips = tmp_path / "clips"
    _write_folder(clips / "ok", _frames(3))
    (clips / "nothing").mkdir()
    with pytest.raises(VssegError, match=r"clips/nothing: no frames"):
        open_dataset(clips, kind="video")
    _write_folder(tmp_path / "single", _frames(1))
    with pytest.raises(VssegError, match=r"single: clip has 1 frame"):
        open_video(tmp_path / "single")
    with pytest.raises(VssegError, match=r"one\.avi: clip has 1 frame"):
        open_video(_write_video(tmp_path / "one.avi", _frames(1)))
    with pytest.raises(VssegError, match=r"nowhere: dataset folder not found \(expected a video file"):
        open_dataset(tmp_path / "nowhere", kind="video")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(VssegError, match=r"notes\.txt: not a video file"):
        open_dataset(tmp_path / "notes.txt")


def test_two_clips_with_one_name_and_bad_timestamps(tmp_path, cache):
    root = tmp_path / "clips"
    _write_folder(root / "a", _frames(2))
    _write_video(root / "a.avi", _frames(2))
    with pytest.raises(VssegError, match=r"two clips named 'a'"):
        open_video(root)
    folder = tmp_path / "ts"
    _write_folder(folder, _frames(3))
    for content, pattern in (
        ([0.0, 0.1], r"expected a list of 3 timestamps"),
        ([0.0, 0.2, 0.1], r"do not increase at frame 02\.png"),
        ({"00.png": 0}, r"no timestamp for frame 01\.png"),
        (["a", "b", "c"], r"must be numbers"),
    ):
        (folder / "timestamps.json").write_text(json.dumps(content))
        with pytest.raises(VssegError, match=pattern):
            open_video(folder)


def test_data_flow_cli_refuses_a_clip_shorter_than_the_offsets(tmp_path, cache):
    from typer.testing import CliRunner

    from vsseg_edge.cli import app

    clip = _write_video(tmp_path / "short.avi", _frames(3))
    res = CliRunner().invoke(
        app, ["data", "flow", str(clip), "--cache", str(tmp_path / "flow"), "--preset", "ultrafast"]
    )
    assert res.exit_code != 0 and "fewer than the 4 that the largest temporal offset 3 needs" in str(res.exception)
    assert not (tmp_path / "flow").exists()
    res = CliRunner().invoke(
        app,
        ["data", "flow", str(clip), "--offsets", "-1,1,2", "--cache", str(tmp_path / "flow"), "--preset", "ultrafast"],
    )
    assert res.exit_code == 0, res.output
    assert "5 pairs (5 computed" in res.output


def test_jpeg_header_size(tmp_path):
    img = _frames(1, hw=(37, 53))[0]
    cv2.imwrite(str(tmp_path / "a.jpg"), img)
    cv2.imwrite(str(tmp_path / "b.png"), img)
    assert image_hw(tmp_path / "a.jpg") == (37, 53) == image_hw(tmp_path / "b.png")


# --- real footage ------------------------------------------------------------------------------------------


def test_real_pandaset_frames_with_timestamps(cache):
    folder = shared_data("video", "pandaset_sf_front")
    ds = open_dataset(folder, kind="video")
    refs = ds.sequences["pandaset_sf_front"]
    assert len(refs) == 80 and refs[0].image.name == "00.jpg" and refs[79].image.name == "79.jpg"
    assert ds.image_hw(refs[0]) == (1080, 1920)
    gaps = np.diff([ds.timestamp(r) for r in refs])
    assert np.all(np.abs(gaps - 0.1) < 0.01)  # 10 Hz


@pytest.mark.slow
def test_real_folder_of_clips_decodes_the_mp4(cache):
    ds = open_dataset(shared_data("video"))  # cosmos_highway_sunset.mp4 + pandaset_sf_front/
    assert ds.name == "video" and list(ds.sequences) == ["cosmos_highway_sunset", "pandaset_sf_front"]
    cosmos = ds.clips["cosmos_highway_sunset"]
    assert len(cosmos.frames) == 233 and cosmos.fps == pytest.approx(24.0)
    assert cosmos.timestamps[24] == pytest.approx(1.0, abs=1e-3)
    assert ds.image_hw(ds.sequences["cosmos_highway_sunset"][0]) == (704, 1280)
