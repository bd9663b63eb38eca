"""Temporally fused self-distillation: the fusion, its cache, the loss term, and training on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vsseg_edge.core.errors import VssegError  # noqa: E402
from vsseg_edge.core.preprocess import PreprocessSpec  # noqa: E402
from vsseg_edge.data.datasets import open_dataset  # noqa: E402
from vsseg_edge.data.flow import FlowSource  # noqa: E402
from vsseg_edge.data.transforms import PairedAugment, make_params  # noqa: E402
from vsseg_edge.models import create_model  # noqa: E402
from vsseg_edge.models.checkpoint import save_checkpoint  # noqa: E402
from vsseg_edge.train.config import load_recipe  # noqa: E402
from vsseg_edge.train.losses import FusedTargetLoss, LossConfig, LossWeights, build_losses  # noqa: E402
from vsseg_edge.train.losses.compose import FrameOutputs  # noqa: E402
from vsseg_edge.train.targets import FusedTargets, FusionSpec, fuse_probabilities  # noqa: E402
from vsseg_edge.train.trainer import Trainer  # noqa: E402

H, W, C = 16, 24, 3


def _probs(label_map: np.ndarray, confidence: float = 0.8) -> torch.Tensor:
    """1×C×H×W probabilities with `confidence` on the class of each pixel, the rest spread evenly."""
    q = np.full((C, *label_map.shape), (1 - confidence) / (C - 1), np.float32)
    for c in range(C):
        q[c][label_map == c] = confidence
    return torch.from_numpy(q)[None]


def _image(value: float = 100.0) -> torch.Tensor:
    return torch.full((1, 3, H, W), value)


def _flow(u: float = 0.0, v: float = 0.0) -> torch.Tensor:
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0], flow[:, 1] = u, v
    return flow


# ---------------------------------------------------------------------------------------------- the fusion


def test_the_fused_target_of_a_static_clip_is_the_teachers_own_prediction():
    labels = np.random.default_rng(0).integers(0, C, (H, W))
    q = _probs(labels)
    fused, weight = fuse_probabilities(q, _image(), [(q.clone(), _image(), _flow()) for _ in range(4)])
    assert torch.allclose(fused, q, atol=1e-6)
    assert torch.allclose(weight, torch.full_like(weight, 4.0))  # every neighbour valid, photometrically exact


def test_a_one_frame_flicker_of_the_teacher_is_voted_down():
    steady = np.zeros((H, W), np.int64)
    flicker = steady.copy()
    flicker[5, 7] = 2  # one pixel
    flicker[9:12, 14:17] = 1  # a small blob
    q_t = _probs(flicker)
    assert q_t.argmax(1)[0, 5, 7] == 2 and q_t.argmax(1)[0, 10, 15] == 1
    fused, _ = fuse_probabilities(q_t, _image(), [(_probs(steady), _image(), _flow()) for _ in range(4)])
    assert bool((fused.argmax(1) == 0).all())  # the neighbours' steady class wins everywhere
    assert torch.allclose(fused.sum(1), torch.ones(1, H, W), atol=1e-6)


def test_neighbours_are_warped_with_the_flow_into_frame_t():
    labels = np.zeros((H, W), np.int64)
    labels[:, 10:13] = 1  # a vertical bar at x = 10..12 in frame t
    moved = np.zeros((H, W), np.int64)
    moved[:, 13:16] = 1  # the same bar 3 px to the right in the neighbour: flow t → n is +3 px
    q_t = _probs(labels, 0.6)
    fused, weight = fuse_probabilities(q_t, _image(), [(_probs(moved, 0.9), _image(), _flow(u=3.0))])
    inside = fused[..., : W - 3]  # where x + 3 stays inside the frame
    assert bool((inside.argmax(1) == _probs(labels).argmax(1)[..., : W - 3]).all())
    assert float(inside.max(1).values.min()) > 0.6  # more confident than frame t alone: the neighbour agrees
    assert float(weight[..., W - 2 :].max()) == 0.0  # x + 3 beyond the last column: out of frame


def test_out_of_frame_and_occluded_neighbours_get_zero_weight():
    q_t = _probs(np.zeros((H, W), np.int64))
    other = _probs(np.ones((H, W), np.int64))
    # every vector leaves the frame
    fused, weight = fuse_probabilities(q_t, _image(), [(other, _image(), _flow(u=-float(W) - 5))])
    assert float(weight.max()) == 0.0 and torch.allclose(fused, q_t)
    # a photometric mismatch of 200 grey levels in each channel: M = exp(-600 / 57.375) ~ 3e-5
    fused, weight = fuse_probabilities(q_t, _image(20.0), [(other, _image(220.0), _flow())])
    assert float(weight.max()) < 1e-4 and bool((fused.argmax(1) == 0).all())
    # NaN vectors (unknown flow) are invalid too
    nan_flow = _flow()
    nan_flow[..., :4] = float("nan")
    _, weight = fuse_probabilities(q_t, _image(), [(other, _image(), nan_flow)])
    assert float(weight[..., :4].max()) == 0.0 and float(weight[..., 8:].min()) == 1.0


def test_fusion_settings_are_checked():
    assert FusionSpec(offsets=(-1, 0, 1)).offsets == (-1, 1)  # t itself is always in
    with pytest.raises(VssegError, match="sigma"):
        FusionSpec(sigma=0)
    with pytest.raises(VssegError, match="do not match"):
        fuse_probabilities(
            _probs(np.zeros((H, W), np.int64)),
            _image(),
            [(_probs(np.zeros((H, W), np.int64)), _image(), torch.zeros(1, 2, H, W + 1))],
        )


# ---------------------------------------------------------------------------------------------- the cache


class ZeroFlow(FlowSource):
    name = "zero (test)"

    def __init__(self):
        self.calls = 0

    def __call__(self, dataset, ref_a, ref_b):
        self.calls += 1
        return np.zeros((*dataset.image_hw(ref_a), 2), np.float32)


class MeanColourTeacher(torch.nn.Module):
    """Logits from the input's channels: a deterministic stand-in for a segmentation model."""

    def forward(self, x):
        return torch.cat([x, -x.sum(1, keepdim=True)], dim=1)[:, :C] * 20.0


def _clip(folder: Path, n: int = 5, hw=(32, 48), flicker_frame: int | None = 2) -> Path:
    """A still scene the teacher calls class 0 (B > G, R), except a blob of one frame where G and B swap: the
    teacher flips to class 1 there, while the signed channel sum (ETC's photometric mask) does not change."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (np.array([130, 100, 100]) + rng.integers(-3, 4, (*hw, 3))).astype(np.uint8)
    for i in range(n):
        img = base.copy()
        if i == flicker_frame:
            img[10:14, 20:26] = img[10:14, 20:26][..., [1, 0, 2]]
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return folder


def _targets(clip: Path, cache: Path, teacher=None, flow=None) -> FusedTargets:
    ds = open_dataset(clip, kind="video")
    spec = PreprocessSpec(height=16, width=24, mean=(0, 0, 0), std=(255, 255, 255), channel_order="bgr")
    return FusedTargets(
        ds,
        teacher or MeanColourTeacher(),
        "teacher-a",
        spec,
        flow or ZeroFlow(),
        FusionSpec(offsets=(-2, -1, 1, 2)),
        cache,
    )


def test_targets_are_built_once_and_read_from_the_cache(tmp_path):
    clip = _clip(tmp_path / "clip")
    targets = _targets(clip, tmp_path / "cache")
    assert targets.build() == {"frames": 5, "computed": 5, "cached": 0}
    refs = targets.dataset.frames()
    again = _targets(clip, tmp_path / "cache", flow=ZeroFlow())
    assert again.build() == {"frames": 5, "computed": 0, "cached": 5} and again.flow_source.calls == 0
    q = again.load(refs[2])
    assert q.shape == (16, 24, C) and q.dtype == np.float32
    assert np.allclose(q.sum(axis=2), 1.0, atol=1e-5)
    exact, _ = targets.fuse(refs[2])
    assert np.abs(q - exact[0].permute(1, 2, 0).numpy()).max() < 2 / 255  # uint8 storage
    # the blob of frame 2 is voted down by its four neighbours; the teacher alone keeps it
    single = targets._predict(refs[2], {}, {})[0].argmax(1)[0].numpy()
    assert (single != q.argmax(axis=2)).sum() > 0
    assert (q.argmax(axis=2) == targets._predict(refs[0], {}, {})[0].argmax(1)[0].numpy()).all()


def test_the_cache_key_follows_the_frames_the_teacher_and_the_settings(tmp_path):
    clip = _clip(tmp_path / "clip")
    targets = _targets(clip, tmp_path / "cache")
    refs = targets.dataset.frames()
    key = targets.key(refs[2])
    other_teacher = FusedTargets(
        targets.dataset, MeanColourTeacher(), "teacher-b", targets.spec, ZeroFlow(), targets.fusion, tmp_path / "cache"
    )
    assert other_teacher.key(refs[2]) != key
    fewer = FusedTargets(
        targets.dataset,
        MeanColourTeacher(),
        "teacher-a",
        targets.spec,
        ZeroFlow(),
        FusionSpec(offsets=(-1, 1)),
        tmp_path / "cache",
    )
    assert fewer.key(refs[2]) != key
    st = os.stat(refs[3].image)  # a neighbour changes: frame 2's target is stale
    os.utime(refs[3].image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert targets.key(refs[2]) != key
    assert targets.key(refs[0]) == _targets(clip, tmp_path / "cache").key(refs[0])


def test_a_missing_entry_after_the_build_is_a_one_line_error(tmp_path):
    targets = _targets(_clip(tmp_path / "clip"), tmp_path / "cache")
    targets.build()
    targets.teacher = None  # as the trainer leaves it
    ref = targets.dataset.frames()[1]
    targets.path(ref).unlink()
    with pytest.raises(VssegError, match=r"001.png: no fused target in .*rebuild"):
        targets.load(ref)
    targets.path(targets.dataset.frames()[2]).write_bytes(b"not an npz")
    with pytest.raises(VssegError, match="damaged fused-target cache entry"):
        targets.load(targets.dataset.frames()[2])


def test_augmented_targets_are_nan_where_the_crop_has_no_source():
    probs = np.random.default_rng(0).dirichlet(np.ones(C), size=(20, 30)).astype(np.float32)
    aug = PairedAugment(crop=(20, 30))
    shifted = make_params((20, 30), (20, 30), 1.0, 0.0, False, offset=(-5, 0))  # 5 px of padding on the left
    out = aug.apply_probs(shifted, probs)
    assert out.shape == (20, 30, C) and np.isnan(out[:, :5]).all()
    assert np.allclose(out[:, 6:], probs[:, 1:25], atol=1e-5)


# ---------------------------------------------------------------------------------------------- the loss


def test_the_fused_kd_term_is_zero_at_the_target_and_skips_pixels_without_one():
    target = torch.softmax(torch.randn(2, C, 8, 8), dim=1)
    loss = FusedTargetLoss("soft")
    assert float(loss(torch.log(target), target)) == pytest.approx(0.0, abs=1e-5)
    logits = torch.randn(2, C, 8, 8, requires_grad=True)
    value = loss(logits, target)
    value.backward()
    assert float(value.detach()) > 0 and logits.grad.abs().sum() > 0
    holes = target.clone()
    holes[:, :, :4] = float("nan")  # no target in the top half
    wrong = logits.detach().clone()
    wrong[:, :, :4] = 1e3 * (1 - target[:, :, :4])  # wildly wrong where there is no target
    assert float(loss(wrong, holes)) == pytest.approx(
        float(loss(logits.detach()[:, :, 4:], target[:, :, 4:])), rel=1e-5
    )


def test_hard_fused_kd_trains_only_on_confident_pixels():
    target = torch.full((1, C, 2, 2), 0.1)
    target[0, 0, 0, 0] = 0.8  # one confident pixel (class 0)
    target[0, :, 0, 0] /= target[0, :, 0, 0].sum()
    target[0, :, 1:, :] = 1 / C  # unsure
    logits = torch.zeros(1, C, 2, 2)
    logits[0, 1, 1, 1] = 50.0  # very wrong, but on an unsure pixel
    hard = FusedTargetLoss("hard", threshold=0.5)
    assert float(hard(logits, target)) == pytest.approx(float(np.log(C)), rel=1e-5)
    with pytest.raises(ValueError, match="threshold"):
        FusedTargetLoss("hard", threshold=1.0)
    with pytest.raises(ValueError, match="fused_kd_mode"):
        LossConfig(fused_kd_mode="sharp")


def test_the_composed_loss_asks_for_the_target():
    loss = build_losses(LossWeights(seg=0, aux=0, fused_kd=2.0))
    out = {"out": torch.zeros(1, C, 4, 4)}
    with pytest.raises(VssegError, match="fused_kd > 0 needs frame t's fused target"):
        loss(FrameOutputs(out), None)
    total, log = loss(FrameOutputs(out, target=torch.full((1, C, 4, 4), 1 / C)), None)
    assert set(log) == {"fused_kd", "total"} and float(total) == pytest.approx(0.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def start_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("start") / "start.pt"
    save_checkpoint(
        path,
        create_model("espnet", 19),
        model_name="espnet",
        classes=[str(i) for i in range(19)],
        preprocess=PreprocessSpec(height=64, width=128),
    )
    return path


def _recipe(tmp_path: Path, name: str, extra: dict) -> Path:
    import yaml

    recipe = {
        "name": name,
        "iterations": 2,
        "batch_size": 1,
        "threads": 1,
        "log_every": 1,
        "ckpt_every": 0,
        "out_dir": str(tmp_path / "runs"),
        "val_tc": False,
        "data": {"root": None, "crop": [64, 128], "scale_range": [0.9, 1.1], "workers": 0},
        "video": {
            "batch_size": 2,
            "offsets": [-1, 1],
            "flow_cache": str(tmp_path / "flow"),
            "target_cache": str(tmp_path / "targets"),
            "fuse_offsets": [-1, 1],
        },
        "model": {"name": "espnet"},
        "preprocess": {"height": 64, "width": 128},
    }
    for key, value in extra.items():
        node = recipe
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_training_on_fused_targets_needs_one_forward_per_frame_and_no_online_teacher(tmp_path, start_ckpt):
    clips = _clip(tmp_path / "clips" / "street", n=5, hw=(64, 128))
    cfg = load_recipe(
        _recipe(
            tmp_path,
            "fused",
            {
                "video.root": str(clips.parent),
                "model.init_checkpoint": str(start_ckpt),
                "teacher.checkpoint": str(start_ckpt),
                "model.freeze_bn": True,
                "loss.weights": {"seg": 0.0, "aux": 0.0, "fused_kd": 1.0},
            },
        )
    )
    trainer = Trainer(cfg, progress=False)
    assert trainer.teacher is None  # the targets are precomputed
    assert trainer.video_pairs.clip.neighbours == "none"
    sample = trainer.video_pairs[(0, 3)]
    assert "neighbours" not in sample and sample["target"].shape == (19, 64, 128)
    assert len(list((tmp_path / "targets").rglob("*.npz"))) == 5
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    metrics = trainer.fit()
    logs = [json.loads(line) for line in (cfg.out_path / "metrics.jsonl").read_text().splitlines()]
    assert logs[0]["fused_kd"] > 0 and "temporal" not in logs[0]
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert metrics["fused_targets"]["computed"] == 5
    # a second run reads the same targets from the cache
    again = Trainer(
        load_recipe(
            _recipe(
                tmp_path,
                "fused2",
                {
                    "video.root": str(clips.parent),
                    "model.init_checkpoint": str(start_ckpt),
                    "teacher.checkpoint": str(start_ckpt),
                    "loss.weights": {"seg": 0.0, "aux": 0.0, "fused_kd": 1.0},
                },
            )
        ),
        progress=False,
    )
    assert again.target_stats["computed"] == 0 and again.target_stats["cached"] == 5


def test_fused_targets_with_the_temporal_loss_and_labels(tmp_path, synth_root, start_ckpt):
    clips = _clip(tmp_path / "clips" / "street", n=5, hw=(64, 128))
    cfg = load_recipe(
        _recipe(
            tmp_path,
            "mixed",
            {
                "data.root": str(synth_root),
                "video.root": str(clips.parent),
                "model.init_checkpoint": str(start_ckpt),
                "teacher.checkpoint": str(start_ckpt),
                "val_max_sequences": 1,
                "loss.weights": {"seg": 1.0, "aux": 0.0, "temporal": 1.0, "fused_kd": 1.0},
            },
        )
    )
    trainer = Trainer(cfg, progress=False)
    assert trainer.video_pairs.clip.neighbours == "one"
    trainer.fit()
    logs = [json.loads(line) for line in (cfg.out_path / "metrics.jsonl").read_text().splitlines()]
    assert {"seg", "video_temporal", "video_fused_kd"} <= set(logs[0])


def test_fused_kd_recipes_without_a_teacher_or_clips_are_one_line_errors(tmp_path, synth_root, start_ckpt):
    clips = _clip(tmp_path / "clips" / "street", n=5, hw=(64, 128))
    with pytest.raises(VssegError, match="fused_kd > 0 needs teacher.checkpoint"):
        Trainer(
            load_recipe(
                _recipe(
                    tmp_path,
                    "a",
                    {
                        "video.root": str(clips.parent),
                        "model.init_checkpoint": str(start_ckpt),
                        "loss.weights": {"seg": 0.0, "aux": 0.0, "fused_kd": 1.0},
                    },
                )
            )
        )
    with pytest.raises(VssegError, match=r"fused_kd > 0 needs unlabelled clips \(video.root\)"):
        Trainer(
            load_recipe(
                _recipe(
                    tmp_path,
                    "b",
                    {
                        "data.root": str(synth_root),
                        "teacher.checkpoint": str(start_ckpt),
                        "loss.weights": {"seg": 1.0, "aux": 0.0, "fused_kd": 1.0},
                    },
                )
            )
        )
