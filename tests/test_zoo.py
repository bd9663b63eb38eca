"""The model zoo: packaged checkpoints, name resolution (torch-free), `vsseg-edge models`, `import-weights`."""

from __future__ import annotations

import json
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import cv2
import numpy as np
import pytest
import tomllib
from typer.testing import CliRunner

from tests.conftest import REPO, shared_data
from vsseg_edge import zoo
from vsseg_edge.cli import app
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.fileio import sha256_file
from vsseg_edge.core.manifest import read_manifest


def test_every_entry_ships_a_checkpoint_that_matches_its_description():
    entries = zoo.entries()
    assert {"espnet-camvid", "espnet-cityscapes", "espnet-camvid-tc", "espnet-cityscapes-tc"} <= set(entries)
    for entry in entries.values():
        man = read_manifest(entry.path, "checkpoint")
        assert man["sha256"] == sha256_file(entry.path), entry.name
        assert len(man["classes"]) == entry.num_classes and man["model"] == entry.architecture
        pre = man["input"]["preprocess"]
        assert (pre["height"], pre["width"]) == entry.input_hw
        assert entry.path.stat().st_size < 2_000_000  # ~1.5 MB per model keeps the package small
        assert "MIT" in entry.licence and entry.source and entry.made_by
    licence = (zoo.ZOO_DIR / "LICENSE-ESPNet.txt").read_text()
    assert "Copyright (c) 2018 Sachin Mehta" in licence and "Permission is hereby granted" in licence


def test_package_data_ships_the_zoo():
    """pyproject's package-data must cover every zoo file, so a fresh `pip install` has them."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["vsseg_edge.zoo"]
    files = [
        p.relative_to(zoo.ZOO_DIR).as_posix()
        for p in zoo.ZOO_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".py"
    ]
    assert files and all(any(fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)


def test_resolve_names_paths_and_errors(tmp_path, monkeypatch):
    assert zoo.resolve("espnet-camvid") == zoo.get("espnet-camvid").path
    assert zoo.resolve(Path("espnet-cityscapes")).name == "espnet-cityscapes.pt"
    assert zoo.resolve(tmp_path / "absent.onnx") == tmp_path / "absent.onnx"  # the command's own error follows
    monkeypatch.chdir(tmp_path)
    Path("espnet-camvid").write_text("a file called like a zoo model")
    assert zoo.resolve("espnet-camvid") == Path("espnet-camvid")  # an existing path always wins
    assert not zoo.is_zoo_name("espnet-camvid")
    with pytest.raises(VssegError, match=r"espnet-kitti: no such file, and not a zoo model \(espnet-cityscapes"):
        zoo.resolve("espnet-kitti")
    with pytest.raises(VssegError, match=r"not a zoo model"):
        zoo.get("espnet-kitti")


@pytest.mark.parametrize("parent", ["espnet-camvid", "espnet-cityscapes"])
def test_the_temporally_fine_tuned_models_keep_their_parents_classes_and_input(parent):
    """`<parent>-tc`: the parent's architecture, classes and input size, its lineage in the manifest, and the TC
    it was measured at on the held-out clips next to the parent's (better or not: the description says which)."""
    entry, base = zoo.get(f"{parent}-tc"), zoo.get(parent)
    assert zoo.resolve(f"{parent}-tc") == entry.path and entry.path.name == f"{parent}-tc.pt"
    assert entry.parent == parent and base.parent is None
    assert (entry.architecture, entry.classes, entry.num_classes, entry.input_hw) == (
        base.architecture,
        base.classes,
        base.num_classes,
        base.input_hw,
    )
    assert read_manifest(entry.path, "checkpoint")["parent"] == {
        "file": base.path.name,
        "sha256": sha256_file(base.path),
    }
    tc = [m for m in entry.measured if m["metric"] == "TC"]
    assert len(tc) == 2 and all("held-out clip" in m["on"] and isinstance(m["before"], float) for m in tc)
    assert {m["on"] for m in tc} == {m["on"] for m in base.measured if m["metric"] == "TC"}
    assert "temporal_finetune.py" in tc[0]["command"] and entry.made_by.startswith("vsseg-edge train train/")


def test_espnet_cityscapes_tc_resolves_to_a_19_class_512x1024_model():
    entry = zoo.get("espnet-cityscapes-tc")
    assert (entry.classes, entry.num_classes, entry.input_hw) == ("cityscapes", 19, (512, 1024))
    assert entry.parent == "espnet-cityscapes" and "cityscapes_espnet_temporal.yaml" in entry.made_by
    man = read_manifest(entry.path, "checkpoint")
    assert len(man["classes"]) == 19 and man["classes"][0] == "road"
    assert (man["input"]["preprocess"]["height"], man["input"]["preprocess"]["width"]) == (512, 1024)


def test_listing_and_resolving_need_no_torch():
    code = (
        "import sys, vsseg_edge.zoo as z, vsseg_edge.zoo.commands; p = z.resolve('espnet-camvid'); "
        "assert p.is_file() and z.get('espnet-cityscapes').num_classes == 19; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_models_command_lists_the_zoo_and_architectures():
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0, res.output
    for text in ("espnet-camvid-tc", "espnet-cityscapes-tc", "camvid (11)", "cityscapes (19)", "512x1024", "pspnet18"):
        assert text in res.output, text
    res = CliRunner().invoke(app, ["models", "--json"])
    data = json.loads(res.output)
    camvid = next(e for e in data["zoo"] if e["name"] == "espnet-camvid")
    assert camvid["num_classes"] == 11 and camvid["published"]["value"] == 55.6
    assert "espnet" in data["architectures"]


def test_zoo_names_in_recipes_stay_names(tmp_path):
    from vsseg_edge.train.config import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name: espnet, init_checkpoint: espnet-camvid}\nteacher: {checkpoint: espnet-camvid}\n"
        "data: {root: data}\n"
    )
    cfg = load_recipe(recipe)
    assert cfg.model.init_checkpoint == "espnet-camvid" and cfg.teacher.checkpoint == "espnet-camvid"
    assert cfg.data.root == str(tmp_path / "data")  # other paths are still made absolute


# --- with torch ------------------------------------------------------------------------------------------------


def test_zoo_checkpoints_build_the_published_architectures():
    torch = pytest.importorskip("torch")
    from vsseg_edge.models.checkpoint import model_from_checkpoint

    model, ckpt = model_from_checkpoint(zoo.resolve("espnet-camvid"))
    assert ckpt["model_kwargs"] == {"p": 2, "q": 8, "width": 12, "fuse_input": "level1_cat"}
    assert ckpt["preprocess"]["channel_order"] == "bgr" and ckpt["classes"][0] == "sky"
    model, ckpt = model_from_checkpoint(zoo.resolve("espnet-cityscapes"))
    assert ckpt["model_kwargs"]["width"] == 20 and ckpt["num_classes"] == 19
    for parent in ("espnet-camvid", "espnet-cityscapes"):  # fine-tuned: the same network, other weights
        _, base = model_from_checkpoint(zoo.resolve(parent))
        _, tc = model_from_checkpoint(zoo.resolve(f"{parent}-tc"))
        assert (tc["model_kwargs"], tc["preprocess"], tc["classes"]) == (
            base["model_kwargs"],
            base["preprocess"],
            base["classes"],
        )
        assert tc["state_dict"].keys() == base["state_dict"].keys()
        assert any(not torch.equal(v, base["state_dict"][k]) for k, v in tc["state_dict"].items())


def test_import_weights_of_plain_state_dicts(tmp_path):
    torch = pytest.importorskip("torch")
    from vsseg_edge.models import create_model
    from vsseg_edge.models.checkpoint import load_checkpoint, model_from_checkpoint

    torch.manual_seed(0)
    net = create_model("bisenetv2", 11)
    plain = tmp_path / "bisenet.pth"
    torch.save({"state_dict": net.state_dict()}, plain)
    with pytest.raises(VssegError, match=r"bisenet\.pth: not a vsseg-edge checkpoint .*vsseg-edge import-weights"):
        load_checkpoint(plain)
    runner = CliRunner()
    res = runner.invoke(app, ["import-weights", str(plain), "--out", str(tmp_path / "m.pt")])
    assert res.exit_code != 0 and "name its architecture with --model" in str(res.exception)
    res = runner.invoke(
        app,
        [
            "import-weights",
            str(plain),
            "--out",
            str(tmp_path / "m.pt"),
            "--model",
            "bisenetv2",
            "--classes",
            "camvid",
            "--preprocess",
            "imagenet",
            "--size",
            "64x128",
        ],
    )
    assert res.exit_code == 0, res.output
    model, ckpt = model_from_checkpoint(tmp_path / "m.pt")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in model.state_dict().items())
    assert ckpt["preprocess"]["height"] == 64 and ckpt["classes"][0] == "sky"
    man = read_manifest(tmp_path / "m.pt")
    assert man["parent"] == {"file": "bisenet.pth", "sha256": sha256_file(plain)}
    res = runner.invoke(
        app,
        [
            "import-weights",
            str(plain),
            "--out",
            str(tmp_path / "n.pt"),
            "--model",
            "bisenetv2",
            "--preprocess",
            "imagenet",
        ],
    )
    assert "--classes" in str(res.exception) and not (tmp_path / "n.pt").exists()
    res = runner.invoke(
        app,
        [
            "import-weights",
            str(plain),
            "--out",
            str(plain.with_suffix(".pt")),
            "--model",
            "bisenetv2",
            "--classes",
            "camvid",
            "--backbone",
            "--preprocess",
            "imagenet",
        ],
    )
    assert "backbone" in str(res.exception) and not plain.with_suffix(".pt").exists()


def test_import_of_a_torchvision_backbone(tmp_path):
    torch = pytest.importorskip("torch")
    from vsseg_edge.models.checkpoint import model_from_checkpoint
    from vsseg_edge.models.resnet import ResNet

    backbone = ResNet("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save({**backbone.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, path)
    res = CliRunner().invoke(
        app,
        [
            "import-weights",
            str(path),
            "--out",
            str(tmp_path / "s.pt"),
            "--model",
            "pspnet18",
            "--classes",
            "cityscapes",
            "--backbone",
            "--preprocess",
            "imagenet",
        ],
    )
    assert res.exit_code == 0, res.output
    model, _ = model_from_checkpoint(tmp_path / "s.pt")
    assert torch.equal(model.backbone.layer1[0].conv1.weight, backbone.layer1[0].conv1.weight)


def test_import_reproduces_the_zoo_from_the_published_file(tmp_path):
    torch = pytest.importorskip("torch")
    weights = shared_data("weights", "espnet_p_2_q_8_camvid.pth")
    res = CliRunner().invoke(app, ["import-weights", str(weights), "--out", str(tmp_path / "c.pt")])
    assert res.exit_code == 0, res.output
    from vsseg_edge.models.checkpoint import load_checkpoint

    mine, packaged = load_checkpoint(tmp_path / "c.pt"), load_checkpoint(zoo.resolve("espnet-camvid"))
    assert mine["preprocess"] == packaged["preprocess"] and mine["model_kwargs"] == packaged["model_kwargs"]
    assert all(torch.equal(mine["state_dict"][k], v) for k, v in packaged["state_dict"].items())
    assert (
        read_manifest(tmp_path / "c.pt")["parent"]["sha256"]
        == read_manifest(zoo.resolve("espnet-camvid"))["parent"]["sha256"]
    )


@pytest.mark.parametrize("name, num_classes", [("espnet-camvid", 11), ("espnet-cityscapes-tc", 19)])
def test_run_and_eval_with_a_zoo_name(tmp_path, name, num_classes):
    pytest.importorskip("torch")
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(frames / f"f{i}.png"), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    res = CliRunner().invoke(app, ["run", name, "--source", str(frames), "--save-masks", str(tmp_path / "masks")])
    assert res.exit_code == 0, res.output
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert [m.name for m in masks] == ["f0.png", "f1.png"]
    labels = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (90, 120) and labels.max() < num_classes


def test_calibrate_exports_a_zoo_model_once_into_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from vsseg_edge.export import onnx_export

    monkeypatch.setenv("VSSEG_EDGE_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_export(ckpt, out, preset):
        calls.append(Path(ckpt))
        Path(out).write_bytes(b"onnx")
        Path(f"{out}.json").write_text("{}")

    monkeypatch.setattr(onnx_export, "export_checkpoint", fake_export)
    first = zoo.onnx_for("espnet-camvid")
    assert first.parent == tmp_path / "cache" / "zoo" and first.name.startswith("espnet-camvid-")
    assert zoo.onnx_for("espnet-camvid") == first and calls == [zoo.get("espnet-camvid").path]
    assert zoo.onnx_for(tmp_path / "model.onnx") == tmp_path / "model.onnx"


@pytest.mark.slow
def test_zoo_model_scores_the_camvid_sample_like_the_published_file(tmp_path):
    """The packaged checkpoint through the project's own run + eval gives the published file's figure."""
    pytest.importorskip("torch")
    sample = shared_data("camvid_sample")
    res = CliRunner().invoke(
        app, ["run", "espnet-camvid", "--source", str(sample / "images"), "--save-masks", str(tmp_path / "pred")]
    )
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        app, ["eval", str(tmp_path / "pred"), "--dataset", str(sample), "--no-tc", "--json", str(tmp_path / "r.json")]
    )
    assert res.exit_code == 0, res.output
    miou = json.loads((tmp_path / "r.json").read_text())["miou"]
    assert 75.0 < miou < 78.0  # tests/models/test_espnet.py measures 76.3 loading the published file directly
