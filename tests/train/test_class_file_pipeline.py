"""A class file through the whole chain, by the CLI: train → run (masks) → eval → bench, on the user's classes.

The dataset is an images/ + labels/ folder whose labels use three classes of the user's own (ids 0..2, 9 =
not labelled), made from the synthetic set; nothing in it is Cityscapes or CamVid.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from vsseg_edge.cli import app  # noqa: E402

CLASS_FILE = """\
name: street3
ignore_index: 9
classes:
  - {name: ground, color: [200, 10, 10]}
  - {name: vehicle, color: [10, 200, 10]}
  - {name: other, color: [10, 10, 200]}
"""


def _folder_dataset(synth_root, root):
    """Synthetic frames with labels mapped to 3 classes: road/sidewalk → ground, car/truck/bus → vehicle."""
    import cv2

    from vsseg_edge.data.datasets import open_dataset

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lut = np.full(256, 2, np.uint8)
    lut[[0, 1]], lut[[13, 14, 15]], lut[255] = 0, 1, 9
    for split in ("train", "val"):
        ds = open_dataset(synth_root, split)
        for ref in ds.labelled():
            name = f"{ref.sequence.replace('_', '')}_{ref.index:06d}.png"
            cv2.imwrite(str(root / "images" / name), ds.read_image(ref))
            cv2.imwrite(str(root / "labels" / name), lut[ds.read_label(ref)])
    return root


def _cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.mark.slow
def test_class_file_through_train_run_eval_bench(tmp_path, synth_root):
    import cv2
    import yaml

    data = _folder_dataset(synth_root, tmp_path / "street3")
    (tmp_path / "street3.yaml").write_text(CLASS_FILE)
    recipe = {
        "name": "s3",
        "classes": "street3.yaml",
        "iterations": 3,
        "batch_size": 2,
        "threads": 1,
        "out_dir": "runs",
        "val_tc": False,
        "val_max_sequences": 1,
        "log_every": 1,
        "ckpt_every": 3,
        "data": {"root": "street3", "crop": [64, 128], "scale_range": [0.9, 1.1], "workers": 0},
        "model": {"name": "pspnet18"},
        "preprocess": {"height": 64, "width": 128},
    }
    (tmp_path / "s3.yaml").write_text(yaml.safe_dump(recipe))
    _cli("train", tmp_path / "s3.yaml", "--no-progress")  # paths in the recipe: relative to the recipe
    model = tmp_path / "runs" / "s3" / "model.pt"
    manifest = json.loads(model.with_name("model.pt.json").read_text())
    assert manifest["classes"] == ["ground", "vehicle", "other"]
    assert manifest["palette"] == [[200, 10, 10], [10, 200, 10], [10, 10, 200]]

    frames = f"{data}/images/*.png"
    _cli("run", model, "--source", frames, "--save-masks", tmp_path / "ids")
    _cli("run", model, "--source", frames, "--save-masks", tmp_path / "colour", "--mask-format", "color")
    ids_files = sorted((tmp_path / "ids").glob("*.png"))
    assert len(ids_files) == len(list((data / "images").glob("*.png")))
    ids = cv2.imread(str(ids_files[0]), cv2.IMREAD_UNCHANGED)
    colour = cv2.imread(str(tmp_path / "colour" / ids_files[0].name), cv2.IMREAD_COLOR)
    assert ids.max() <= 2
    palette_bgr = np.array([[10, 10, 200], [10, 200, 10], [200, 10, 10]], np.uint8)
    assert np.array_equal(colour, palette_bgr[ids])  # the class file's colours, not Cityscapes'

    out = _cli(
        "eval",
        tmp_path / "ids",
        "--dataset",
        data,
        "--classes",
        tmp_path / "street3.yaml",
        "--no-tc",
        "--json",
        tmp_path / "eval.json",
    )
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["dataset"]["class_set"] == "street3" and "vehicle" in out
    assert set(report["miou_detail"]["per_class"]) == {"ground", "vehicle", "other"}
    assert 0 <= report["miou"] <= 100

    # bench finds the same classes through the dataset's own class file
    (data / "classes.yaml").write_text(CLASS_FILE)
    _cli(
        "bench",
        model,
        "--dataset",
        data,
        "--backends",
        "torch",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--frames",
        "2",
        "--no-tc",
        "--out",
        tmp_path / "bench",
    )
    bench = json.loads((tmp_path / "bench" / "report.json").read_text())
    assert bench["dataset"]["classes"] == ["ground", "vehicle", "other"]
    entry = bench["entries"][0]
    assert entry["accuracy"]["miou"] == pytest.approx(report["miou"], abs=1e-6)  # the same predictions, scored alike
