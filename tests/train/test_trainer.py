"""The trainer end to end on the tiny synthetic set: baseline, +TL, +TL+KD, exact resume, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from vsseg_edge.core.config import apply_overrides  # noqa: E402
from vsseg_edge.core.errors import VssegError  # noqa: E402
from vsseg_edge.models.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from vsseg_edge.train.config import load_recipe  # noqa: E402
from vsseg_edge.train.trainer import Trainer, train  # noqa: E402

BASE = {
    "iterations": 3,
    "batch_size": 2,
    "threads": 1,
    "log_every": 1,
    "ckpt_every": 2,
    "val_max_sequences": 1,
    "data": {"crop": [64, 128], "scale_range": [0.9, 1.1], "workers": 0, "offsets": [-1, 1, 2]},
    "model": {"name": "pspnet18"},
    "preprocess": {"height": 64, "width": 128},
}


def recipe(tmp_path, synth_root, name: str, **changes) -> object:
    import yaml

    data = json.loads(json.dumps(BASE))
    data.update(name=name, out_dir=str(tmp_path / "runs"))
    data["data"]["root"] = str(synth_root)
    data = apply_overrides(data, [f"{key}={json.dumps(value)}" for key, value in changes.items()])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_baseline_trains_saves_and_validates(tmp_path, synth_root):
    cfg = load_recipe(recipe(tmp_path, synth_root, "base"))
    metrics = train(cfg, progress=False)
    out = cfg.out_path
    assert (out / "model.pt").is_file() and (out / "model.pt.json").is_file() and (out / "last.pt").is_file()
    assert 0 <= metrics["val_miou"] <= 100 and 0 <= metrics["val_tc"] <= 100
    assert metrics["tc_flow"].startswith("exact")
    model, ckpt = model_from_checkpoint(out / "model.pt")
    assert ckpt["step"] == 3 and ckpt["config"]["name"] == "base" and ckpt["preprocess"]["height"] == 64
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs[:3]] == [1, 2, 3] and {"seg", "aux", "total", "lr"} <= set(logs[0])
    assert logs[1]["lr"] < logs[0]["lr"]  # poly decay


def test_keep_every_keeps_weight_snapshots(tmp_path, synth_root):
    cfg = load_recipe(recipe(tmp_path, synth_root, "keep", iterations=3, keep_every=1, ckpt_every=0))
    train(cfg, progress=False)
    out = cfg.out_path
    kept = sorted(p.name for p in out.glob("step_*.pt"))
    assert kept == ["step_000000.pt", "step_000001.pt", "step_000002.pt"]  # the start; the last step is model.pt
    start, _ = model_from_checkpoint(out / kept[0])
    first, ckpt = model_from_checkpoint(out / kept[1])
    assert ckpt["step"] == 1 and not ckpt.get("train_state")
    final, _ = model_from_checkpoint(out / "model.pt")
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), final.state_dict().values()))
    fresh = load_recipe(recipe(tmp_path, synth_root, "fresh", iterations=3))
    init = Trainer(fresh, progress=False).model  # the same seed builds the same start
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), init.state_dict().values()))
    again = load_recipe(recipe(tmp_path, synth_root, "keep", iterations=3, keep_every=0, ckpt_every=0))
    with pytest.raises(VssegError, match="step_000001.pt"):  # a previous run's snapshots count as that run
        train(again, progress=False)
    train(again, progress=False, overwrite=True)
    assert not list(out.glob("step_*.pt*"))  # --overwrite starts clean: no old snapshot to mistake for this run's
    with pytest.raises(VssegError, match="keep_every must be ≥ 0"):
        load_recipe(recipe(tmp_path, synth_root, "bad", keep_every=-1))


@pytest.mark.parametrize("optim", [{}, {"optim.name": "adam", "optim.lr": 1e-3, "optim.ema": 0.5}])
def test_resume_continues_exactly(tmp_path, synth_root, optim):
    straight = Trainer(load_recipe(recipe(tmp_path, synth_root, "straight", iterations=4, **optim)), progress=False)
    straight.fit()

    cfg = load_recipe(recipe(tmp_path, synth_root, "interrupted", iterations=4, **optim))
    first = Trainer(cfg, progress=False)
    step = first.train_step

    def stop_after_two(*batches):
        log = step(*batches)
        if first.step == 1:  # the loop increments after the step: stop once step 2 is done
            first.stop_requested = True
        return log

    first.train_step = stop_after_two
    assert first.fit() == {}  # interrupted: no final metrics
    assert load_checkpoint(cfg.out_path / "last.pt")["step"] == 2
    second = Trainer(cfg, resume=True, progress=False)
    assert second.step == 2
    second.fit()
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = straight.result_model.state_dict(), second.result_model.state_dict()  # the average too
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adam_and_the_weight_average(tmp_path, synth_root):
    """optim.ema: model.pt holds the average, last.pt the model being trained (and the average, to resume)."""
    cfg = load_recipe(recipe(tmp_path, synth_root, "ema", iterations=1, **{"optim.name": "adam", "optim.ema": 0.9}))
    trainer = Trainer(cfg, progress=False)
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    final = load_checkpoint(cfg.out_path / "model.pt")["state_dict"]
    last = load_checkpoint(cfg.out_path / "last.pt")
    live = last["state_dict"]
    assert all(torch.equal(final[k], last["train_state"]["ema"][k]) for k in final)
    params = {n for n, _ in trainer.model.named_parameters()}
    moved = [k for k in params if not torch.equal(live[k], start[k])]
    assert moved
    for k in moved:  # after one step: 0.9 · start + 0.1 · weights
        assert torch.allclose(final[k], 0.9 * start[k] + 0.1 * live[k], atol=1e-7)
    buffers = set(live) - params  # BatchNorm statistics are the model's own, not averaged
    assert all(torch.equal(final[k], live[k]) for k in buffers)
    with pytest.raises(VssegError, match="optim.ema must be in"):
        load_recipe(recipe(tmp_path, synth_root, "bad", **{"optim.ema": 1.0}))
    with pytest.raises(VssegError, match="optim.name must be sgd or adam"):
        load_recipe(recipe(tmp_path, synth_root, "bad", **{"optim.name": "lamb"}))


def test_temporal_loss_and_distillation_terms(tmp_path, synth_root):
    tl = load_recipe(recipe(tmp_path, synth_root, "tl", iterations=2, **{"loss.weights": {"seg": 1, "temporal": 0.1}}))
    metrics_tl = train(tl, progress=False)
    logs = [json.loads(x) for x in (tl.out_path / "metrics.jsonl").read_text().splitlines()]
    assert logs[0]["temporal"] > 0 and "val_miou" in metrics_tl

    teacher = tl.out_path / "model.pt"  # any vsseg-edge checkpoint of the same classes can teach
    kd = load_recipe(
        recipe(
            tmp_path,
            synth_root,
            "kd",
            iterations=2,
            **{
                "teacher.checkpoint": str(teacher),
                "loss.weights": {"seg": 1, "temporal": 0.1, "kd_pixel": 1, "kd_pairwise_frames": 1, "kd_multiframe": 1},
                "loss.multiframe_trainable": True,  # ETC's trainable ConvLSTM (the default is frozen)
            },
        )
    )
    trainer = Trainer(kd, progress=False)
    assert trainer.mode == "triplet" and trainer.teacher is not None
    assert any(g.get("name") == "loss" for g in trainer.optimizer.param_groups)  # the ConvLSTM is optimised
    trainer.fit()
    logs = [json.loads(x) for x in (kd.out_path / "metrics.jsonl").read_text().splitlines()]
    assert {"kd_pixel", "kd_pairwise_frames", "kd_multiframe", "temporal"} <= set(logs[0])


def test_recipe_errors(tmp_path, synth_root):
    with pytest.raises(VssegError, match="unknown key"):
        load_recipe(recipe(tmp_path, synth_root, "bad", **{"optim.lrr": 1}))
    with pytest.raises(VssegError, match="need a teacher"):
        Trainer(load_recipe(recipe(tmp_path, synth_root, "noteacher", **{"loss.weights": {"kd_pixel": 1}})))
    with pytest.raises(VssegError, match="unknown model 'nope'; valid models"):
        Trainer(load_recipe(recipe(tmp_path, synth_root, "nomodel", **{"model.name": "nope"})))
    with pytest.raises(VssegError, match="no .*last.pt to resume"):
        Trainer(load_recipe(recipe(tmp_path, synth_root, "noresume")), resume=True)


def test_cli_train_error_is_one_line(tmp_path, synth_root):
    path = recipe(tmp_path, synth_root, "cli", **{"model.name": "nope"})
    r = subprocess.run([sys.executable, "-m", "vsseg_edge.cli", "train", str(path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown model 'nope'" in r.stderr


@pytest.mark.slow
def test_distributed_gloo_two_processes(tmp_path, synth_root):
    path = recipe(tmp_path, synth_root, "ddp", iterations=2, val_tc=False)
    # no fixed port (another run holding it would fail the test): torchrun's c10d rendezvous on port 0 takes a
    # free port when it binds its store, which the workers' process group then uses
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "localhost:0",
        "-m",
        "vsseg_edge.cli",
        "train",
        str(path),
        "--no-progress",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "runs" / "ddp" / "model.pt")
    assert ckpt["step"] == 2


def test_recipe_paths_relative_to_recipe_and_overrides_to_cwd(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "base.yaml").write_text("data:\n  root: ../data/synth\nout_dir: ../runs\n")
    (tmp_path / "recipes" / "child.yaml").write_text("base: base.yaml\nname: child\n")
    cfg = load_recipe(tmp_path / "recipes" / "child.yaml")
    assert cfg.data.root == str(tmp_path / "data" / "synth") and cfg.out_dir == str(tmp_path / "runs")
    monkeypatch.chdir(tmp_path / "recipes")
    cfg = load_recipe(tmp_path / "recipes" / "child.yaml", ["data.root=elsewhere", "teacher.checkpoint=t.pt"])
    assert cfg.data.root == str(tmp_path / "recipes" / "elsewhere") and cfg.data.flow == "auto"
    assert cfg.teacher.checkpoint == str(tmp_path / "recipes" / "t.pt") and cfg.name == "child"


def test_temporal_loss_needs_neighbour_frames(tmp_path, synth_root):
    """A plain (non-sequence) Cityscapes layout has no neighbours: TL is refused in one line, baseline trains."""
    import shutil

    plain = tmp_path / "plain"
    for split in ("train", "val"):
        for img in sorted((synth_root / "leftImg8bit_sequence" / split).rglob("*_000002_leftImg8bit.png")):
            city = img.parent.name
            (plain / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (plain / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            shutil.copy(img, plain / "leftImg8bit" / split / city / img.name)
            stem = img.name.removesuffix("_leftImg8bit.png")
            lab = synth_root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
            shutil.copy(lab, plain / "gtFine" / split / city / lab.name)
    tl = load_recipe(recipe(tmp_path, plain, "tl_plain", **{"loss.weights": {"seg": 1, "temporal": 0.1}}))
    with pytest.raises(VssegError, match="no labelled frame .* has neighbour frames"):
        Trainer(tl, progress=False)


def test_a_log_record_cut_by_a_full_disk_is_not_kept(tmp_path):
    """metrics.jsonl holds whole records only: a write the disk cuts short is taken back, and the failure is the
    one line naming the log; an empty log the run made is removed at close, a resumed one is kept."""
    import errno
    import os

    from vsseg_edge.train import trainer as trainer_module

    path = tmp_path / "metrics.jsonl"
    fh = trainer_module._open_log(path)
    trainer_module._write_log(fh, None, {"step": 1, "loss": 0.5})

    class HalfThenFull:  # the disk takes half the record, then is full
        name, created = fh.name, fh.created

        def fileno(self):
            return fh.fileno()

        def write(self, data):
            if len(data) > 1:
                return os.write(fh.fileno(), data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(VssegError, match=r"metrics\.jsonl: cannot write \(No space left on device\)"):
        trainer_module._write_log(HalfThenFull(), None, {"step": 2, "loss": 0.25})
    trainer_module._close_log(fh)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1]

    empty = tmp_path / "empty" / "metrics.jsonl"
    empty.parent.mkdir()
    trainer_module._close_log(trainer_module._open_log(empty))
    assert not empty.exists()
    trainer_module._close_log(trainer_module._open_log(path))  # a previous run's log stays as it was
    assert len(path.read_text().splitlines()) == 1
