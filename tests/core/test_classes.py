"""Class files: formats, colours, one-line errors, and datasets read with the user's classes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vsseg_edge.core.classes import load_class_file, resolve_classes
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.labels import CAMVID, CITYSCAPES, generated_palette, label_set_for


def test_yaml_class_file_with_colours_names_and_ignore(tmp_path):
    path = tmp_path / "lot.yaml"
    path.write_text(
        "name: parking-lot\nignore_index: 9\nclasses:\n"
        "  - {name: asphalt, color: [10, 20, 30]}\n  - {name: car, color: '#00008e'}\n  - person\n"
    )
    ls = load_class_file(path)
    assert ls.name == "parking-lot" and ls.classes == ("asphalt", "car", "person")
    assert ls.palette[:2] == ((10, 20, 30), (0, 0, 142))
    assert ls.palette[2] == generated_palette(3)[2]  # a missing colour comes from the fixed generator
    assert ls.label_ignore == 9 and ls.ignore_index == 255


def test_plain_lists_json_and_txt(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(["road", "car"]))
    (tmp_path / "b.txt").write_text("# jetson-inference style\nroad\n\ncar\n")
    (tmp_path / "c.yml").write_text("- road\n- car\n")
    sets = [load_class_file(tmp_path / n) for n in ("a.json", "b.txt", "c.yml")]
    assert all(s.classes == ("road", "car") for s in sets)
    assert sets[0].palette == sets[1].palette == sets[2].palette  # same names, same colours everywhere
    assert sets[1].name == "b"


@pytest.mark.parametrize(
    "text, message",
    [
        ("classes: []\n", "non-empty list"),
        ("classes: [a, a]\n", r"\['a'\] appear more than once"),
        ("classes: [a, b]\nignore_index: 1\n", "ignore_index 1; expected an integer in 2..255"),
        ("classes: [{name: a, color: [1, 2]}]\n", r"colour \[1, 2\]"),
        ("classes: [{name: a, color: '#zzzzzz'}]\n", "colour '#zzzzzz'"),
        ("classes: [a]\ncolours: []\n", r"unknown key\(s\) \['colours'\]"),
        ("classes: [{label: a}]\n", r"class 0: expected \{name, color\}"),
        ("just text\n", "expected a list of class names or a mapping"),
        ("classes: [a\n", "not valid YAML"),
    ],
)
def test_bad_class_files_fail_in_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(VssegError, match=message) as info:
        load_class_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_resolve_names_files_and_errors(tmp_path):
    assert resolve_classes("cityscapes") is CITYSCAPES and resolve_classes("camvid") is CAMVID
    (tmp_path / "mine.yaml").write_text("[x, y]\n")
    assert resolve_classes("mine.yaml", base=tmp_path).classes == ("x", "y")
    with pytest.raises(VssegError, match="class file not found"):
        resolve_classes(tmp_path / "missing.yaml")
    with pytest.raises(VssegError, match=r"classes 'kitti': expected one of \['camvid', 'cityscapes'\] or a class"):
        resolve_classes("kitti")


def test_label_set_for_keeps_builtin_sets_and_applies_a_palette():
    assert label_set_for(list(CITYSCAPES.classes)) is CITYSCAPES
    recoloured = label_set_for(list(CITYSCAPES.classes), [[1, 2, 3]] + [None] * 18)
    assert recoloured.palette[0] == (1, 2, 3) and recoloured.classes == CITYSCAPES.classes
    assert CITYSCAPES.is_cityscapes and not CAMVID.is_cityscapes
    assert label_set_for(list(CITYSCAPES.classes) + ["background"]).is_cityscapes


def _write_pairs(root, n=3, void=9):
    """A flat images/ + labels/ dataset with 3 classes and `void` in a corner of every label."""
    import cv2

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        img = np.full((16, 24, 3), 40 * i, np.uint8)
        lab = np.zeros((16, 24), np.uint8)
        lab[:, 8:16], lab[:, 16:] = 1, 2
        lab[:2, :2] = void
        cv2.imwrite(str(root / "images" / f"seq_{i:04d}.png"), img)
        cv2.imwrite(str(root / "labels" / f"seq_{i:04d}.png"), lab)
    return root


def test_a_folder_with_its_own_class_file_is_read_in_its_classes(tmp_path):
    from vsseg_edge.data.datasets import open_dataset

    root = _write_pairs(tmp_path / "d")
    (root / "classes.yaml").write_text("ignore_index: 9\nclasses: [ground, wall, tree]\n")
    ds = open_dataset(root, "train")
    assert ds.label_set.classes == ("ground", "wall", "tree") and ds.name == "folder"
    lab = ds.read_label(ds.labelled()[0])
    assert lab[0, 0] == 255 and set(np.unique(lab)) == {0, 1, 2, 255}  # the file's void 9 → ignore 255
    # the same folder without the class file reads as CamVid, where 9 is a class ("pedestrian")
    (root / "classes.yaml").unlink()
    assert open_dataset(root, "train").read_label(ds.labelled()[0])[0, 0] == 9


def test_an_explicit_class_set_wins_and_a_label_outside_it_is_named(tmp_path):
    from vsseg_edge.data.datasets import open_dataset

    root = _write_pairs(tmp_path / "d", void=7)
    (tmp_path / "two.json").write_text(json.dumps({"classes": ["a", "b"], "ignore_index": 9}))
    ds = open_dataset(root, "train", classes=tmp_path / "two.json")
    with pytest.raises(VssegError, match=r"unknown class id\(s\) \[2, 7\]; expected 0..1 or 255"):
        ds.read_label(ds.labelled()[0])


def test_cityscapes_layouts_refuse_other_classes(synth_root, tmp_path):
    from vsseg_edge.data.datasets import open_dataset

    (tmp_path / "three.yaml").write_text("[a, b, c]\n")
    with pytest.raises(VssegError, match="holds Cityscapes label ids; the class set 'three'"):
        open_dataset(synth_root, "val", classes=tmp_path / "three.yaml")
    assert open_dataset(synth_root, "val", classes="cityscapes").label_set is CITYSCAPES
