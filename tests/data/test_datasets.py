"""Dataset readers: layouts, label mapping, neighbours, errors, the seeded sampler, real CamVid frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import shared_data
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.labels import CAMVID, CITYSCAPES, cityscapes_train_ids_to_ids
from vsseg_edge.data.datasets import FrameRef, open_dataset, sample_frames

H, W = 16, 32


def _frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _write_cityscapes(
    root: Path,
    split: str,
    snippets: dict[str, range],
    labelled: set[str] | None,
    sequence_layout: bool = True,
    synth: bool = False,
) -> dict[str, np.ndarray]:
    """A tiny Cityscapes tree: snippets {city_seq: frame range}; labels (labelIds) for stems in `labelled`
    (None = every frame). Returns the trainId maps written, by stem."""
    img_top = "leftImg8bit_sequence" if sequence_layout else "leftImg8bit"
    written = {}
    for seq, frames in snippets.items():
        city = seq.rsplit("_", 1)[0]
        for f in frames:
            stem = f"{seq}_{f:06d}"
            d = root / img_top / split / city
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{stem}_leftImg8bit.png"), _frame(f))
            if labelled is None or stem in labelled:
                train = np.random.default_rng(f).integers(0, 19, (H, W)).astype(np.uint8)
                train[0, :4] = 255
                ids = cityscapes_train_ids_to_ids(train)
                g = root / "gtFine" / split / city
                g.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(g / f"{stem}_gtFine_labelIds.png"), ids)
                written[stem] = train
    if synth:
        (root / "synth.json").write_text(json.dumps({"generator": "test"}))
    return written


@pytest.fixture()
def cs_root(tmp_path) -> tuple[Path, dict]:
    """Two 30-frame-style snippets (here 6 frames each, frame 4 labelled) of two cities."""
    snippets = {"aachen_000001": range(6), "bochum_000003": range(10, 16)}
    written = _write_cityscapes(tmp_path, "train", snippets, {"aachen_000001_000004", "bochum_000003_000014"})
    return tmp_path, written


def test_cityscapes_sequences_labels_and_neighbours(cs_root):
    root, written = cs_root
    ds = open_dataset(root, "train")
    assert ds.name == "cityscapes" and ds.label_set is CITYSCAPES and ds.split == "train"
    assert sorted(ds.sequences) == ["aachen_000001", "bochum_000003"]
    assert [r.index for r in ds.sequences["bochum_000003"]] == list(range(10, 16))
    assert len(ds) == 2 and ds.num_frames == 12
    ref = ds.labelled()[0]
    assert (ref.sequence, ref.index) == ("aachen_000001", 4)
    lab = ds.read_label(ref)
    np.testing.assert_array_equal(lab, written["aachen_000001_000004"])  # labelIds → trainIds round trip
    assert ds.read_image(ref).shape == (H, W, 3)
    assert ds.neighbour(ref, 1).index == 5 and ds.neighbour(ref, -3).index == 1
    assert ds.neighbour(ref, 2) is None  # frame 6 does not exist
    assert ds.neighbour(ref, -2).label is None


def test_cityscapes_label_mapping_matches_cityscapesscripts(tmp_path):
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    _write_cityscapes(tmp_path, "val", {"lindau_000000": range(19, 20)}, None, sequence_layout=False)
    ids = np.arange(0, 34, dtype=np.uint8).repeat(W)[: H * W].reshape(H, W)
    path = next(tmp_path.glob("gtFine/val/*/*_labelIds.png"))
    cv2.imwrite(str(path), ids)
    ds = open_dataset(tmp_path, "val")
    expected = np.vectorize(lambda i: labels.id2label[int(i)].trainId % 256)(ids).astype(np.uint8)
    np.testing.assert_array_equal(ds.read_label(ds.labelled()[0]), expected)


def test_plain_layout_every_frame_labelled_and_train_ids_fallback(tmp_path):
    written = _write_cityscapes(tmp_path, "val", {"lindau_000000": range(19, 21)}, None, sequence_layout=False)
    ds = open_dataset(tmp_path, "val")
    assert len(ds) == 2
    # labelTrainIds is used only when labelIds is absent
    path = next(tmp_path.glob("gtFine/val/*/*_000019_gtFine_labelIds.png"))
    path.unlink()
    cv2.imwrite(str(path).replace("labelIds", "labelTrainIds"), written["lindau_000000_000019"])
    ds = open_dataset(tmp_path, "val")
    np.testing.assert_array_equal(ds.read_label(ds.labelled()[0]), written["lindau_000000_000019"])


def test_synthetic_root_every_frame_labelled(tmp_path):
    _write_cityscapes(tmp_path, "val", {"synth_000000": range(3)}, None, synth=True)
    ds = open_dataset(tmp_path, "val")
    assert ds.name == "synthetic" and len(ds) == 3
    (next(tmp_path.glob("gtFine/val/*/*_000001_gtFine_labelIds.png"))).unlink()
    with pytest.raises(VssegError, match="image has no label"):
        open_dataset(tmp_path, "val")


def _one_line_error(fn, pattern):
    with pytest.raises(VssegError, match=pattern) as info:
        fn()
    assert "\n" not in str(info.value)


def test_errors_are_one_line(tmp_path, cs_root):
    root, _ = cs_root
    _one_line_error(lambda: open_dataset(tmp_path / "nope", kind="cityscapes"), "dataset folder not found.*cityscapes")
    _one_line_error(lambda: open_dataset(root, "val"), r"split 'val' not found; splits present: \['train'\]")
    _one_line_error(lambda: open_dataset(tmp_path / "nope"), "dataset folder not found")
    ds = open_dataset(root, "train")
    ref, ref2 = ds.labelled()
    cv2.imwrite(str(ref.label), np.zeros((H + 1, W), np.uint8))
    _one_line_error(lambda: ds.read_label(ref), "label is 17x32.*expected 16x32")
    cv2.imwrite(str(ref.label), np.full((H, W), 19, np.uint8))  # labelId 19 → trainId 6
    assert (ds.read_label(ref) == 6).all()
    ref2.image.write_bytes(b"not a png")
    _one_line_error(lambda: ds.read_image(ref2), "not a readable image")
    # a label without its image in the sequence layout
    ref.image.unlink()
    _one_line_error(lambda: open_dataset(root, "train"), "label has no image")


def test_unknown_class_id_rejected(tmp_path):
    root = tmp_path / "camvid"
    for d in ("train", "trainannot"):
        (root / d).mkdir(parents=True)
    cv2.imwrite(str(root / "train" / "0016E5_00390.png"), _frame(0))
    cv2.imwrite(str(root / "trainannot" / "0016E5_00390.png"), np.full((H, W), 12, np.uint8))
    ds = open_dataset(root, "train")
    with pytest.raises(VssegError, match=r"unknown class id\(s\) \[12\]"):
        ds.read_label(ds.labelled()[0])
    with pytest.raises(VssegError, match=r"splits present: \['train'\]"):
        open_dataset(root, "test")
    for name in ("Seq05VD_f00000.png", "Seq05VD_f00030.png"):  # the other CamVid naming
        cv2.imwrite(str(root / "train" / name), _frame(1))
        cv2.imwrite(str(root / "trainannot" / name), np.full((H, W), 11, np.uint8))
    ds = open_dataset(root, "train")
    assert [r.index for r in ds.sequences["Seq05VD"]] == [0, 30] and list(ds.sequences) == ["0016E5", "Seq05VD"]
    assert (ds.read_label(ds.sequences["Seq05VD"][0]) == 255).all()  # void → ignore
    (root / "train" / "0016E5_00420.png").write_bytes((root / "train" / "0016E5_00390.png").read_bytes())
    with pytest.raises(VssegError, match="0016E5_00420.png: image has no label"):
        open_dataset(root, "train")


def test_camvid_sample_real_frames():
    root = shared_data("camvid_sample")
    ds = open_dataset(root)
    assert ds.name == "camvid" and ds.label_set is CAMVID
    assert len(ds) == 24 and list(ds.sequences) == ["0001TP"]
    refs = ds.labelled()
    assert refs[0].index == 6690 and refs[1].index == 6720
    assert ds.neighbour(refs[0], 1) == refs[1] and ds.neighbour(refs[0], -1) is None
    img = ds.read_image(refs[0])
    assert img.shape == (360, 480, 3) and img.dtype == np.uint8
    raw = cv2.imread(str(refs[0].label), cv2.IMREAD_UNCHANGED)
    lab = ds.read_label(refs[0])
    assert lab.shape == (360, 480) and set(np.unique(raw)) <= set(range(12))
    assert (lab == 255).sum() == (raw == 11).sum() > 0 and lab[lab != 255].max() <= 10


def test_images_folder_and_sampler(tmp_path):
    for i in range(7):
        cv2.imwrite(str(tmp_path / f"f{i:02d}.jpg"), _frame(i))
    ds = open_dataset(tmp_path)
    assert ds.name == "images" and len(ds) == 0 and ds.num_frames == 7
    refs = ds.sequences[tmp_path.name]
    assert [r.image.name for r in refs] == [f"f{i:02d}.jpg" for i in range(7)]
    assert ds.neighbour(refs[2], 3) == refs[5]
    a, b = sample_frames(ds, 4, seed=1), sample_frames(ds, 4, seed=1)
    assert a == b and len(set(a)) == 4 and all(isinstance(r, FrameRef) for r in a)
    assert {tuple(sample_frames(ds, 4, seed=s)) for s in range(6)} != {tuple(a)}  # the seed matters
    assert sample_frames(ds, 100, seed=0) == ds.frames()


def test_sampler_covers_unlabelled_frames(cs_root):
    ds = open_dataset(cs_root[0], "train")
    picked = sample_frames(ds, 8, seed=0)
    assert sum(r.label is None for r in picked) >= 6  # drawn from all 12 frames, only 2 labelled


def test_generated_synthetic_set(synth_root):
    """The generator's labelIds, mapped by the reader, equal the labelTrainIds it wrote beside them."""
    ds = open_dataset(synth_root, "train")
    assert ds.name == "synthetic" and len(ds.sequences) == 2 and len(ds) == ds.num_frames == 12
    for ref in ds.labelled()[::5]:
        assert ref.label.name.endswith("_gtFine_labelIds.png")
        train_ids = cv2.imread(str(ref.label).replace("labelIds", "labelTrainIds"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ds.read_label(ref), train_ids)
        assert ds.read_image(ref).shape == (64, 128, 3)
    assert len(open_dataset(synth_root, "val").sequences) == 1
