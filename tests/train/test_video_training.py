"""Training on unlabelled video: VideoPairs, mixed batches, self-distillation, zoo names in recipes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vsseg_edge.core.errors import VssegError  # noqa: E402
from vsseg_edge.core.preprocess import PreprocessSpec  # noqa: E402
from vsseg_edge.data.datasets import open_dataset  # noqa: E402
from vsseg_edge.data.flow import DISFlow  # noqa: E402
from vsseg_edge.data.transforms import PairedAugment  # noqa: E402
from vsseg_edge.models import create_model  # noqa: E402
from vsseg_edge.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from vsseg_edge.train.clips import ClipSpec, VideoPairs  # noqa: E402
from vsseg_edge.train.config import load_recipe  # noqa: E402
from vsseg_edge.train.trainer import Trainer, train  # noqa: E402

SPEC = {"height": 64, "width": 128}


def _clip(folder: Path, n: int = 6, hw=(64, 128), seed: int = 0) -> Path:
    """A frame folder: a textured background panning right 2 px per frame."""
    rng = np.random.default_rng(seed)
    wide = cv2.GaussianBlur(rng.integers(0, 255, (hw[0], hw[1] + 4 * n, 3), dtype=np.uint8), (0, 0), 2)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"f{i}.png"), wide[:, 2 * i : 2 * i + hw[1]])
    return folder


@pytest.fixture(scope="module")
def start_ckpt(tmp_path_factory) -> Path:
    """An ESPNet (19 classes, 64x128) checkpoint to fine-tune: the 'pretrained' model and its own teacher."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("start") / "start.pt"
    save_checkpoint(
        path,
        create_model("espnet", 19),
        model_name="espnet",
        classes=[str(i) for i in range(19)],
        preprocess=PreprocessSpec(**SPEC),
    )
    return path


def _recipe(tmp_path, name: str, data: dict) -> Path:
    import yaml

    base = {
        "name": name,
        "iterations": 2,
        "batch_size": 1,
        "threads": 1,
        "log_every": 1,
        "ckpt_every": 0,
        "out_dir": str(tmp_path / "runs"),
        "val_max_sequences": 1,
        "val_tc": False,
        "data": {"crop": [64, 128], "scale_range": [0.9, 1.1], "workers": 0},
        "model": {"name": "espnet"},
        "preprocess": dict(SPEC),
    }
    for key, value in data.items():
        node = base
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_video_pairs_bring_frames_to_the_model_geometry(tmp_path):
    clip = open_dataset(_clip(tmp_path / "cam", n=4, hw=(96, 256)), kind="video")
    spec = PreprocessSpec(height=48, width=128)
    aug = PairedAugment(crop=(48, 128), scale_range=(1.0, 1.0), max_rotation=0, flip_prob=0, blur_prob=0)
    pairs = VideoPairs(clip, DISFlow("ultrafast", None), aug, spec, ClipSpec("one", (1,)))
    assert len(pairs) == 3  # the last frame has no t+1
    sample = pairs[(0, 7)]
    assert sample["image"].shape == (3, 48, 128) and sample["neighbours"].shape == (1, 3, 48, 128)
    flow = sample["flows"][0].numpy()
    assert flow.shape == (2, 48, 128) and "label" not in sample
    # the scene pans 2 px per frame at 256 px wide: 1 px at the model's 128 (vectors scaled with the frame)
    assert abs(float(np.nanmedian(flow[0, 8:40, 16:112])) + 1.0) < 0.3


def test_mixed_batches_self_distillation_and_video_tc(tmp_path, synth_root, start_ckpt):
    clips = _clip(tmp_path / "clips" / "street", n=6)
    held = _clip(tmp_path / "held" / "other", n=3, seed=1)
    cfg = load_recipe(
        _recipe(
            tmp_path,
            "mixed",
            {
                "data.root": str(synth_root),
                "video.root": str(clips.parent),
                "video.batch_size": 2,
                "video.offsets": [-1, 1, 2],
                "video.flow_cache": str(tmp_path / "flow"),
                "video.val_root": str(held.parent),
                "model.init_checkpoint": str(start_ckpt),
                "teacher.checkpoint": str(start_ckpt),
                "loss.weights": {"seg": 1.0, "aux": 0.4, "temporal": 1.0, "kd_pixel": 1.0},
            },
        )
    )
    trainer = Trainer(cfg, progress=False)
    assert trainer.loss.cfg.weights.active() == {"temporal": 1.0, "kd_pixel": 1.0}  # the video part's terms
    assert trainer.loss_labelled.cfg.weights.active() == {"seg": 1.0, "aux": 0.4, "kd_pixel": 1.0}
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    teacher = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    metrics = trainer.fit()
    logs = [json.loads(line) for line in (cfg.out_path / "metrics.jsonl").read_text().splitlines()]
    assert {"seg", "kd_pixel", "video_temporal", "video_kd_pixel", "total"} <= set(logs[0])
    assert logs[0]["video_temporal"] > 0 and logs[0]["video_kd_pixel"] >= 0
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(teacher[k], v) for k, v in trainer.teacher.state_dict().items())  # frozen
    assert 0 <= metrics["val_miou"] <= 100 and 0 <= metrics["val_video_tc"] <= 100
    assert metrics["tc_flow"].startswith("OpenCV DIS")
    assert (tmp_path / "flow").is_dir()  # video flow went to the configured cache, not into the clips
    saved = load_checkpoint(cfg.out_path / "model.pt")
    assert saved["config"]["video"]["root"] == str(clips.parent)


def test_video_only_from_a_zoo_model_with_frozen_batchnorm(tmp_path):
    clips = _clip(tmp_path / "clips" / "street", n=5)
    cfg = load_recipe(
        _recipe(
            tmp_path,
            "zoo",
            {
                "classes": "camvid",
                "data.root": None,
                "video.root": str(clips.parent),
                "video.offsets": [-1, 1],
                "video.flow_cache": str(tmp_path / "flow"),
                "video.val_root": str(clips.parent),
                "video.val_max_frames": 3,
                "model.init_checkpoint": "espnet-camvid",
                "teacher.checkpoint": "espnet-camvid",
                "model.freeze_bn": True,
                "preprocess": {
                    **SPEC,
                    "channel_order": "bgr",
                    "scale": 1 / 255,
                    "mean": [110.3310546875, 108.40888977050781, 105.03321838378906],
                    "std": [72.12568664550781, 72.69076538085938, 69.90434265136719],
                },
                "loss.weights": {"seg": 0.0, "aux": 0.0, "temporal": 1.0, "kd_pixel": 1.0},
            },
        )
    )
    assert cfg.model.init_checkpoint == "espnet-camvid"  # a zoo name is not made a path beside the recipe
    trainer = Trainer(cfg, progress=False)
    assert trainer.model_kwargs == {"p": 2, "q": 8, "width": 12, "fuse_input": "level1_cat"}
    bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    metrics = trainer.fit()
    assert torch.equal(bn.running_mean, stats)  # frozen BatchNorm keeps the published statistics
    assert metrics["val_miou"] is None and 0 <= metrics["val_video_tc"] <= 100
    logs = [json.loads(line) for line in (cfg.out_path / "metrics.jsonl").read_text().splitlines()]
    assert {"temporal", "kd_pixel"} <= set(logs[0]) and "seg" not in logs[0]


def test_bad_video_recipes_are_one_line_errors(tmp_path, synth_root, start_ckpt):
    clips = _clip(tmp_path / "clips" / "short", n=3)
    common = {
        "video.root": str(clips.parent),
        "video.flow_cache": str(tmp_path / "flow"),
        "model.init_checkpoint": str(start_ckpt),
        "teacher.checkpoint": str(start_ckpt),
    }
    with pytest.raises(VssegError, match=r"short: clip has 3 frames, fewer than the 4"):
        Trainer(
            load_recipe(
                _recipe(
                    tmp_path,
                    "a",
                    {
                        **common,
                        "data.root": None,
                        "video.offsets": [1, 3],
                        "loss.weights": {"seg": 0, "aux": 0, "temporal": 1.0},
                    },
                )
            )
        )
    with pytest.raises(VssegError, match=r"video.root is set but none of .*temporal"):
        Trainer(load_recipe(_recipe(tmp_path, "b", {**common, "data.root": str(synth_root), "video.offsets": [1]})))
    with pytest.raises(VssegError, match=r"no training data"):
        load_recipe(_recipe(tmp_path, "c", {"data.root": None}))
    with pytest.raises(VssegError, match=r"preprocessing differs .*mean"):
        Trainer(
            load_recipe(
                _recipe(
                    tmp_path,
                    "d",
                    {
                        **common,
                        "data.root": None,
                        "video.offsets": [1],
                        "preprocess": {**SPEC, "mean": [0, 0, 0]},
                        "loss.weights": {"seg": 0, "aux": 0, "temporal": 1.0},
                    },
                )
            )
        )


def test_train_cli_with_a_video_only_recipe(tmp_path, start_ckpt):
    from typer.testing import CliRunner

    from vsseg_edge.cli import app

    clips = _clip(tmp_path / "clips" / "street", n=4)
    path = _recipe(
        tmp_path,
        "cli",
        {
            "data.root": None,
            "video.root": str(clips.parent),
            "video.offsets": [1],
            "video.flow_cache": str(tmp_path / "flow"),
            "model.init_checkpoint": str(start_ckpt),
            "loss.weights": {"seg": 0, "aux": 0, "temporal": 0.5},
        },
    )
    res = CliRunner().invoke(app, ["train", str(path), "--no-progress", "--override", "iterations=1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "cli" / "model.pt").is_file()
    assert train  # the module-level entry point stays importable


def test_the_temporal_recipes_start_from_the_zoo_and_distil_from_it():
    from tests.conftest import REPO

    camvid = load_recipe(REPO / "train" / "camvid_espnet_temporal.yaml")
    cityscapes = load_recipe(REPO / "train" / "cityscapes_espnet_temporal.yaml")
    for cfg, zoo_name in ((camvid, "espnet-camvid"), (cityscapes, "espnet-cityscapes")):
        assert cfg.model.init_checkpoint == cfg.teacher.checkpoint == zoo_name  # self-distillation
        w = cfg.loss.weights
        assert cfg.video.root and (w.temporal > 0 or w.fused_kd > 0) and (w.kd_pixel > 0 or w.fused_kd > 0)
        assert cfg.model.freeze_bn
    assert camvid.loss.weights.seg > 0 and camvid.data.kind == "camvid"
    assert cityscapes.data.root is None and cityscapes.loss.weights.seg == 0  # no Cityscapes labels needed
    # the base recipe's fused_kd must not leak into the Cityscapes one through the section merge
    assert cityscapes.loss.weights.fused_kd == 0 and cityscapes.loss.weights.temporal > 0
    # ESPNet's out_s8 is its encoder's map, not the decoder's output: KD there let the output collapse (round 3)
    assert cityscapes.loss.kd_resolution == "full"
    assert cityscapes.preprocess.size == (512, 1024) and camvid.preprocess.size == (360, 480)
