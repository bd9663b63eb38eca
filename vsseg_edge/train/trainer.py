"""One readable training loop for ETC students: baseline, +temporal loss, +distillation.

    frames ─► TrainClips (paired augmentation) ─► student (+ frozen teacher) ─► EtcLoss ─► SGD, poly LR
    video  ─► VideoPairs (unlabelled t, t+k) ─┘                    every ckpt_every: last.pt (resumable)
                                                                   every keep_every: step_NNNNNN.pt (and step 0)
      └─► FusedTargets (teacher fused over t±k, once, cached) ─┘   every val_every / at the end: mIoU + TC

Mixed batches (`video.root` set): each step stacks `batch_size` labelled frames and `video.batch_size`
unlabelled pairs into ONE forward pass. The labelled frames get the supervised terms and the per-frame
distillation terms; the video pairs get the temporal loss and the distillation terms over frames (no CE:
they have no labels). With `teacher.checkpoint` = `model.init_checkpoint` the distillation is
self-distillation from the frozen starting model, which keeps a pretrained model's accuracy where there are
no labels while the temporal loss makes it consistent on the user's footage. `fused_kd` distils towards the
teacher's temporally fused predictions (`train.targets`), computed once before the first step; with it alone
on the video part, a video sample is frame t only (no neighbours, no online teacher).

Determinism: seeded model init, and batches drawn from (seed, sample number) so `--resume` continues
exactly. Ctrl-C or SIGTERM finishes the current step, saves `last.pt` and exits 130 / 143 (`train` raises
`Interrupted`, so `train && export` stops there). A run folder that holds a previous run is refused unless
`--resume` continues it or `--overwrite` starts again. Distributed training
runs under `torchrun` (DDP; gloo on CPU, NCCL on CUDA); rank 0 logs, validates and saves.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..core.classes import is_class_file, resolve_classes
from ..core.config import to_dict
from ..core.errors import Interrupted, VssegError
from ..core.fileio import atomic_write, write_errors
from ..data.datasets import open_dataset
from ..data.flow import open_flow_source
from ..data.transforms import PairedAugment
from ..models import create_model
from ..models.checkpoint import checkpoint_preprocess, load_checkpoint, model_from_checkpoint, save_checkpoint
from ..zoo import resolve as resolve_model
from .clips import ClipSpec, SampleStream, TrainClips, VideoPairs
from .config import TrainConfig
from .losses.compose import FrameOutputs, build_losses
from .losses.config import KD_TERMS

# mixed batches: the terms each part of a step computes (a term that needs labels or frame pairs)
LABELLED_TERMS = ("seg", "aux", "kd_pixel", "skd_pixel", "skd_pairwise")
VIDEO_TERMS = (
    "temporal",
    "kd_pixel",
    "kd_pairwise_frames",
    "kd_multiframe",
    "skd_pixel",
    "skd_pairwise",
    "skd_holistic",
    "fused_kd",
)
_VIDEO_SEED = 1_000_003  # the video sample stream's seed offset: its augmentation draws differ from the labelled


def neighbour_mode(cfg: TrainConfig) -> str:
    w = cfg.loss.weights
    if w.kd_multiframe or w.kd_pairwise_frames or (w.kd_pixel and cfg.loss.kd_neighbour_weight):
        return "triplet"
    return "one" if w.temporal else "none"


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> Dist:
    """Join a torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(pref: str, d: Dist) -> torch.device:
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise VssegError(f"device {pref!r}: CUDA is not available on this machine (use device=cpu)")
        return torch.device(f"cuda:{d.local_rank}" if pref == "cuda" else pref)
    return torch.device(pref)


def poly_lr(base: float, step: int, total: int, power: float) -> float:
    return base * (1 - min(step, total) / total) ** power


class Trainer:
    """Builds everything a recipe names, then `fit()`s. Attributes are public for tests and notebooks."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True, overwrite: bool = False):
        self.cfg, self.progress = cfg, progress
        self.stop_signal: int | None = None
        self.dist = init_distributed(cfg.device)
        self.device = pick_device(cfg.device, self.dist)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.label_set = resolve_classes(cfg.classes)
        self.out = cfg.out_path
        self.mode = neighbour_mode(cfg)
        self._build_data()
        self._build_models()
        self._build_optim()
        self.step = 0
        if self.dist.main:
            check_run_folder(self.out, self.model, resume=resume, overwrite=overwrite)
        if resume:
            self._resume()
        self.stop_requested = False

    # ------------------------------------------------------------------ construction

    def _data_classes(self):
        """A class file in the recipe says how the dataset's labels are numbered; a built-in name does not
        (the dataset's layout does, and the check below compares the two)."""
        return self.label_set if is_class_file(self.cfg.classes) else None

    def _build_data(self) -> None:
        cfg = self.cfg
        self.mixed = cfg.video.root is not None
        augment = PairedAugment(
            crop=tuple(cfg.data.crop),
            scale_range=tuple(cfg.data.scale_range),
            max_rotation=cfg.data.rotate_deg,
            flip_prob=0.5 if cfg.data.flip else 0.0,
            blur_prob=cfg.data.blur_prob,
        )
        self.train_set = self.clips = self.video_pairs = flow = None
        if cfg.data.root is not None:
            self.train_set = open_dataset(
                cfg.data.root, cfg.data.train_split, cfg.data.kind, classes=self._data_classes()
            )
            if self.train_set.label_set.classes != self.label_set.classes:
                raise VssegError(
                    f"{cfg.data.root}: dataset classes are {self.train_set.label_set.name!r}, "
                    f"the recipe says classes={cfg.classes!r}"
                )
            mode = "none" if self.mixed else self.mode  # mixed: frame pairs come from the video
            if mode != "none":
                flow = open_flow_source(cfg.data.flow, self.train_set, cache_dir=cfg.data.flow_cache)
            self.clips = TrainClips(self.train_set, flow, augment, cfg.preprocess, ClipSpec(mode, cfg.data.offsets))
        self.targets = None
        if self.mixed:
            video = open_dataset(cfg.video.root, "train", kind="video").with_label_set(self.label_set)
            flow = open_flow_source(cfg.data.flow, video, cache_dir=cfg.video.flow_cache)
            if cfg.loss.weights.fused_kd:
                self.targets = self._build_targets(video, flow)
            # frame t alone when no term looks at a neighbour (fused targets need none: one forward per frame)
            self.video_pairs = VideoPairs(
                video, flow, augment, cfg.preprocess, ClipSpec(self.mode, cfg.video.offsets), targets=self.targets
            )
        self.flow_name = getattr(flow, "name", None)

    def _build_targets(self, video, flow):
        """The fused self-distillation targets of the training clips, computed now into the cache (once: a
        later run with the same clips, teacher and settings reads them)."""
        from .targets import FusedTargets, FusionSpec

        cfg = self.cfg
        if not cfg.teacher.checkpoint:
            raise VssegError(
                "recipe: loss.weights.fused_kd > 0 needs teacher.checkpoint (the model whose fused "
                "predictions are the targets)"
            )
        fusion = FusionSpec(cfg.video.fuse_offsets, cfg.video.fuse_sigma, cfg.video.fuse_mask_power)
        targets = FusedTargets.from_checkpoint(
            video,
            resolve_model(cfg.teacher.checkpoint),
            cfg.preprocess,
            flow,
            fusion,
            cfg.video.target_cache,
            str(self.device),
            num_classes=self.label_set.num_classes,
        )
        t0 = time.perf_counter()
        stats = targets.build(progress=self.progress and self.dist.main)
        self.target_stats = {**stats, "seconds": round(time.perf_counter() - t0, 1)}
        targets.teacher = None  # built: training reads the cache only (a missing entry is an error from here)
        return targets

    def _build_models(self) -> None:
        cfg = self.cfg
        kwargs = dict(cfg.model.kwargs)
        if cfg.model.backbone_weights:
            kwargs["backbone_weights"] = cfg.model.backbone_weights
        init = None
        if cfg.model.init_checkpoint:
            path = resolve_model(cfg.model.init_checkpoint)
            init, ckpt = model_from_checkpoint(path, num_classes=self.label_set.num_classes, model_name=cfg.model.name)
            _check_same_normalisation(checkpoint_preprocess(ckpt, str(path)), cfg.preprocess, path)
        if init is not None and not kwargs:
            model = init  # the starting checkpoint's own architecture (e.g. a zoo model's decoder width)
        else:
            model = create_model(cfg.model.name, self.label_set.num_classes, **kwargs)
            if init is not None:
                model.load_state_dict(init.state_dict())
        # what rebuilds this architecture (no weight paths): stored in every checkpoint
        self.model_kwargs = dict(getattr(model, "arch_kwargs", {}))
        self.check_size(model)
        if cfg.model.freeze_bn:
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.requires_grad_(False)
        if self.dist.world > 1 and cfg.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if cfg.quant.enabled:  # QAT: fake INT8 on the convolutions (train/quant.py); ranges set in fit()
            from .quant import quantize_modules, quantized_modules

            if not quantized_modules(model):  # (a QAT checkpoint to start from comes back quantised)
                quantize_modules(model, cfg.quant)
        self.model = model.to(self.device)
        self.teacher = None
        if cfg.loss.weights.needs_teacher:
            if not cfg.teacher.checkpoint:
                active = [t for t in KD_TERMS if getattr(cfg.loss.weights, t)]
                raise VssegError(f"recipe: loss weights {active} need a teacher; set teacher.checkpoint")
            teacher, _ = model_from_checkpoint(
                resolve_model(cfg.teacher.checkpoint), num_classes=self.label_set.num_classes
            )
            self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        self._build_losses()
        self.ddp = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DDP(self.model, device_ids=ids)

    def _build_losses(self) -> None:
        """One EtcLoss, or in mixed mode one per part of the batch (each with only the terms it can compute).

        `self.loss` is the one whose trainable parts (multi-frame ConvLSTM, discriminator) the optimizers and
        checkpoints hold: the video part's in mixed mode, where the frame-pair terms live."""
        cfg, n = self.cfg, self.label_set.num_classes
        w = cfg.loss.weights
        self.loss_labelled = None
        if w.fused_kd and not self.mixed:
            raise VssegError("recipe: loss.weights.fused_kd > 0 needs unlabelled clips (video.root)")
        if not self.mixed:
            self.loss = build_losses(cfg.loss, n).to(self.device)
            return

        def keep(terms):  # the loss config with every other term's weight at 0
            zero = {f.name: 0.0 for f in dataclasses.fields(w) if f.name not in terms}
            return dataclasses.replace(cfg.loss, weights=dataclasses.replace(w, **zero))

        video = keep(VIDEO_TERMS)
        if not video.weights.active():
            raise VssegError(
                f"recipe: video.root is set but none of {list(VIDEO_TERMS)} has a weight > 0; "
                "unlabelled clips only feed the temporal loss and distillation"
            )
        self.loss = build_losses(video, n).to(self.device)
        if self.clips is not None:
            labelled = keep(LABELLED_TERMS)
            if not labelled.weights.active():
                raise VssegError(f"recipe: data.root is set but none of {list(LABELLED_TERMS)} has a weight > 0")
            self.loss_labelled = build_losses(labelled, n).to(self.device)

    def set_train_mode(self) -> None:
        """Training mode; with `model.freeze_bn`, BatchNorm layers stay in eval mode (running statistics kept;
        their affine weights were excluded from training in `_build_models`)."""
        self.model.train()
        if self.cfg.model.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def check_size(self, model) -> None:
        m = getattr(model, "input_multiple", 1)
        for what, (h, w) in (("data.crop", self.cfg.data.crop), ("preprocess height/width", self.cfg.preprocess.size)):
            if h % m or w % m:
                raise VssegError(f"recipe: {what} {h}x{w} is not a multiple of {m}, which {self.cfg.model.name} needs")

    def _build_optim(self) -> None:
        o = self.cfg.optim
        groups = self.model.param_groups(o.lr)
        for g in groups:
            g["lr"] = o.lr * (o.head_lr_mult if g.get("name") == "heads" else 1.0)
        extra = list(self.loss.student_side_parameters())
        if extra:
            groups.append({"params": extra, "lr": o.lr * o.head_lr_mult, "name": "loss"})
        for g in groups:
            g["base_lr"] = g["lr"]
        if o.name == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        self.ema: torch.nn.Module | None = None  # optim.ema's average of the weights (made in fit)
        self.disc_optimizer = self.loss.make_discriminator_optimizer(o.weight_decay)
        self.use_amp = self.cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    # ------------------------------------------------------------------ checkpoints

    def train_state(self) -> dict:
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loss": self.loss.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.disc_optimizer is not None:
            state["disc_optimizer"] = self.disc_optimizer.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    @property
    def result_model(self) -> torch.nn.Module:
        """What model.pt, the step snapshots and validation hold: the weights' average with optim.ema."""
        return self.ema if self.ema is not None else self.model

    def start_ema(self) -> None:
        """optim.ema: the average starts as a copy of the model (after QAT's ranges are set)."""
        if self.cfg.optim.ema and self.ema is None:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema is None:
            return
        for avg, p in zip(self.ema.parameters(), self.model.parameters()):
            avg.lerp_(p.detach(), 1.0 - self.cfg.optim.ema)
        for avg, b in zip(self.ema.buffers(), self.model.buffers()):
            avg.copy_(b)  # BatchNorm statistics, QAT ranges: the model's own

    def save(self, name: str, metrics: dict | None = None, with_state: bool = True) -> Path:
        """A checkpoint under out/: last.pt holds the model being trained (and the trainer's state, with the
        average), every other name the result (`result_model`)."""
        path = self.out / name
        model = self.model if name == "last.pt" else self.result_model
        q = self.cfg.quant
        if q.enabled:
            from .quant import quant_record
        save_checkpoint(
            path,
            model,
            model_name=self.cfg.model.name,
            classes=list(self.label_set.classes),
            palette=self.label_set.palette_list(),
            preprocess=self.cfg.preprocess,
            model_kwargs=self.model_kwargs,
            config=to_dict(self.cfg),
            metrics=metrics or {},
            step=self.step,
            train_state=self.train_state() if with_state else None,
            quantization=quant_record(model, q) if q.enabled else None,
            parent=resolve_model(self.cfg.model.init_checkpoint)
            if q.enabled and self.cfg.model.init_checkpoint
            else None,
        )
        return path

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            raise VssegError(f"--resume: no {path} to resume from (train once without --resume)")
        ckpt = load_checkpoint(path)
        if ckpt["model"] != self.cfg.model.name or ckpt["num_classes"] != self.label_set.num_classes:
            raise VssegError(
                f"{path}: checkpoint is {ckpt['model']} with {ckpt['num_classes']} classes, the recipe "
                f"trains {self.cfg.model.name} with {self.label_set.num_classes}"
            )
        state = ckpt.get("train_state")
        if not state:
            raise VssegError(f"{path}: has no trainer state to resume from")
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.loss.load_state_dict(state["loss"])
        if self.disc_optimizer is not None and "disc_optimizer" in state:
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.step = int(state["step"])
        if "ema" in state:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])  # dropout draws continue as in an uninterrupted run
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    # ------------------------------------------------------------------ one step

    def _outputs(self, net, x: torch.Tensor, sizes: list[int]) -> list[dict]:
        """Run `net` once on the stacked frames and split every output back into parts of `sizes`."""
        out = net(x, return_features=True)
        parts = [dict() for _ in sizes]
        for key, value in out.items():
            for i, piece in enumerate(value.split(sizes) if value is not None else [None] * len(sizes)):
                parts[i][key] = piece
        return parts

    def _clip_frames(self, batch: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The frames of a batch (t first, then each neighbour) and the flows t → neighbour."""
        dev = self.device
        frames, flows = [batch["image"].to(dev, non_blocking=True)], []
        if "neighbours" in batch:
            nbs, fl = batch["neighbours"].to(dev), batch["flows"].to(dev)
            frames += [nbs[:, k] for k in range(nbs.shape[1])]
            flows = [fl[:, k] for k in range(fl.shape[1])]
        return frames, flows

    @staticmethod
    def _clip_outputs(student, teacher, frames, flows, target=None) -> tuple[FrameOutputs, list[FrameOutputs]]:
        signs = [-1, 1] if len(flows) == 2 else [1]  # triplet t−k, t+k or one neighbour t+k
        frame_t = FrameOutputs(student[0], teacher[0], image=frames[0], offset=0, target=target)
        neighbours = [
            FrameOutputs(student[i + 1], teacher[i + 1], image=frames[i + 1], flow=flows[i], offset=signs[i])
            for i in range(len(flows))
        ]
        return frame_t, neighbours

    def train_step(self, batch: dict | None, video_batch: dict | None = None) -> dict[str, float]:
        """One optimizer step on a labelled batch, an unlabelled video batch, or both (one forward pass)."""
        parts = []  # (frames, flows, label, fused target) of each part present
        if batch is not None:
            parts.append((*self._clip_frames(batch), batch["label"].to(self.device, non_blocking=True), None))
        if video_batch is not None:
            target = video_batch.get("target")
            parts.append((*self._clip_frames(video_batch), None, None if target is None else target.to(self.device)))
        all_frames = [f for frames, _, _, _ in parts for f in frames]
        sizes = [len(f) for f in all_frames]
        x = torch.cat(all_frames)
        self.set_train_mode()
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.use_amp else nullcontext()
        with autocast:
            student = self._outputs(self.ddp, x, sizes)
            teacher = [None] * len(sizes)
            if self.teacher is not None:
                with torch.no_grad():
                    teacher = self._outputs(self.teacher, x, sizes)
            terms, log, start, disc_frame = [], {}, 0, None
            for frames, flows, label, target in parts:
                n = len(frames)
                frame_t, neighbours = self._clip_outputs(
                    student[start : start + n], teacher[start : start + n], frames, flows, target
                )
                start += n
                video_part = label is None
                loss = self.loss if video_part or not self.mixed else self.loss_labelled
                part_total, part_log = loss(frame_t, label, neighbours)
                if loss is self.loss:
                    disc_frame = frame_t  # the holistic critic belongs to self.loss
                prefix = "video_" if video_part and batch is not None else ""
                terms.append(part_total)
                log.update({f"{prefix}{k}": v for k, v in part_log.items() if k != "total"})
            total = torch.stack(terms).sum()
            log["total"] = float(total.detach())
        frame_t = disc_frame
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            log["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.disc_optimizer is not None:
            frame_t.student = {k: (v.detach() if v is not None else None) for k, v in frame_t.student.items()}
            self.disc_optimizer.zero_grad(set_to_none=True)
            d_loss = self.loss.discriminator_loss(frame_t)
            d_loss.backward()
            self.disc_optimizer.step()
            log["disc"] = float(d_loss.detach())
        if not math.isfinite(log["total"]):
            raise VssegError(f"step {self.step}: loss is {log['total']} (diverged); lower optim.lr or check the data")
        return log

    def set_lr(self) -> float:
        o = self.cfg.optim
        for g in self.optimizer.param_groups:
            g["lr"] = poly_lr(g["base_lr"], self.step, self.cfg.iterations, o.poly_power)
        return self.optimizer.param_groups[0]["lr"]

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> dict:
        """mIoU (+ TC) on the labelled val split, and with `video.val_root` TC on held-out clips (under "video"),
        through the measurement core: a torch runner around the module being trained (FP32, labels at the
        frame's size), scored by `measure.evaluate_runner`. Returns the evaluator's report (`val_report.json`)."""
        from ..measure.accuracy import evaluate_runner
        from ..runtime.backends.torch_backend import TorchBackend

        cfg = self.cfg
        runner = TorchBackend(
            self.result_model,
            preprocess_spec=cfg.preprocess,
            classes=self.label_set.classes,
            artifact=f"{cfg.name} (training)",
            device=str(self.device),
            fp16=False,
            channels_last=False,
        )
        report: dict = {}
        try:
            if cfg.data.root is not None:
                val = open_dataset(cfg.data.root, cfg.data.val_split, cfg.data.kind, classes=self._data_classes())
                flow = open_flow_source(cfg.data.flow, val, cache_dir=cfg.data.flow_cache) if cfg.val_tc else None
                report = evaluate_runner(
                    runner, val, flow, tc=cfg.val_tc, max_sequences=cfg.val_max_sequences, progress=False
                ).report
            if cfg.video.val_root is not None:
                clips = open_dataset(cfg.video.val_root, "val", kind="video").with_label_set(self.label_set)
                if cfg.video.val_max_frames:
                    clips = _first_frames(clips, cfg.video.val_max_frames)
                flow = open_flow_source(cfg.data.flow, clips, cache_dir=cfg.video.flow_cache)
                report["video"] = evaluate_runner(runner, clips, flow, tc=True, progress=False).report
        finally:
            self.set_train_mode()
        return report

    # ------------------------------------------------------------------ the loop

    def data_loader(self, samples=None, batch_size: int | None = None, seed: int | None = None):
        """Batches of `samples` (default: the labelled clips), resumable at `self.step`."""
        samples = self.clips if samples is None else samples
        seed = self.cfg.seed if seed is None else seed
        stream = SampleStream(
            len(samples),
            batch_size or self.cfg.batch_size,
            seed,
            start_batch=self.step,
            rank=self.dist.rank,
            world=self.dist.world,
        )
        workers = self.cfg.data.workers
        # the loader's own generator: creating its iterator must not draw from the global RNG (dropout's),
        # or a resumed run would diverge from an uninterrupted one
        generator = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(
            samples,
            batch_sampler=stream,
            num_workers=workers,
            generator=generator,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=2 if workers else None,
        )

    def calibrate_quantizers(self) -> dict[str, float]:
        """QAT: set each fake quantiser's input range from `quant.calib_batches` training batches before the
        first step (frame t of each sample, augmented as in training; the unlabelled clips' when there are any,
        since they are the footage the model will see, else the labelled frames')."""
        from .quant import calibrate_inputs

        if self.video_pairs is not None:
            loader = iter(self.data_loader(self.video_pairs, self.cfg.video.batch_size, self.cfg.seed + _VIDEO_SEED))
        else:
            loader = iter(self.data_loader())
        images = [next(loader)["image"].to(self.device) for _ in range(self.cfg.quant.calib_batches)]
        return calibrate_inputs(self.model, images, self.cfg.quant)

    def _install_signal_handlers(self):
        def request_stop(signum, frame):
            if self.stop_requested:  # a second Ctrl-C interrupts at once
                raise Interrupted(signum)
            self.stop_requested = True
            self.stop_signal = signum

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, request_stop)
        return previous

    def fit(self) -> dict:
        """Train to `iterations`; returns the final metrics. Writes last.pt, model.pt and metrics.jsonl under out/."""
        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        log_file = _open_log(self.out / "metrics.jsonl") if self.dist.main else None
        tb = _tensorboard(self.out) if self.dist.main else None
        bar = _progress(cfg.iterations, self.step, enabled=self.progress and self.dist.main)
        previous = self._install_signal_handlers() if _in_main_thread() else {}
        metrics: dict = {}
        t_start, step_times = time.perf_counter(), []
        try:
            if cfg.quant.enabled and self.step == 0:
                self.calibrate_quantizers()
            self.start_ema()
            if cfg.keep_every and self.step == 0 and self.dist.main:  # the start (QAT: calibrated) is a candidate
                self.save("step_000000.pt", with_state=False)
            batches = iter(self.data_loader()) if self.clips is not None else None
            videos = (
                iter(self.data_loader(self.video_pairs, cfg.video.batch_size, cfg.seed + _VIDEO_SEED))
                if self.video_pairs is not None
                else None
            )
            while self.step < cfg.iterations and not self.stop_requested:
                batch = next(batches) if batches is not None else None
                video_batch = next(videos) if videos is not None else None
                lr = self.set_lr()
                t0 = time.perf_counter()
                log = self.train_step(batch, video_batch)
                self.update_ema()
                self.step += 1
                step_times.append(time.perf_counter() - t0)
                log.update(step=self.step, lr=lr, step_time=step_times[-1])
                if self.dist.main:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in log.items() if k not in ("step", "lr", "step_time")})
                    if self.step % cfg.log_every == 0 or self.step == cfg.iterations:
                        _write_log(log_file, tb, log)
                    if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                        self.save("last.pt")
                    if cfg.keep_every and self.step % cfg.keep_every == 0 and self.step < cfg.iterations:
                        self.save(f"step_{self.step:06d}.pt", with_state=False)  # a snapshot to choose among later
                    if cfg.val_every and self.step % cfg.val_every == 0 and self.step < cfg.iterations:
                        _write_log(log_file, tb, {"step": self.step, **_val_summary(self.validate())})
            if self.dist.main:
                self.save("last.pt")
                if self.stop_requested:
                    bar.write(f"interrupted at step {self.step}: saved {self.out / 'last.pt'} (resume with --resume)")
                else:
                    report = self.validate()
                    tc_detail = report.get("tc_detail") or (report.get("video") or {}).get("tc_detail") or {}
                    metrics = {**_val_summary(report), "tc_flow": tc_detail.get("flow")}
                    metrics["train_seconds_per_step"] = (time.perf_counter() - t_start) / max(len(step_times), 1)
                    # the step alone (data loading excluded), median over this run's steps
                    metrics["train_step_seconds_p50"] = float(np.median(step_times)) if step_times else None
                    if getattr(self, "target_stats", None):
                        metrics["fused_targets"] = self.target_stats  # frames, computed, cached, seconds
                    _write_log(log_file, tb, {"step": self.step, **metrics})
                    self.save("model.pt", metrics, with_state=False)
                    with atomic_write(self.out / "val_report.json", "w") as fh:
                        json.dump(report, fh, indent=2, default=float)
        finally:
            bar.close()
            if log_file:
                _close_log(log_file)
            if tb:
                tb.close()
            for s, h in previous.items():
                signal.signal(s, h)
        return metrics


def _val_summary(report: dict) -> dict:
    out = {"val_miou": report.get("miou")}
    if report.get("tc") is not None:
        out["val_tc"] = report["tc"]
    if report.get("video"):
        out["val_video_tc"] = report["video"]["tc"]
    return out


def _first_frames(dataset, n: int):
    """The same clips cut to their first `n` frames (quick TC checks during training)."""
    from ..data.video import VideoDataset

    clips = [
        dataclasses.replace(c, frames=c.frames[:n], timestamps=c.timestamps[:n] if c.timestamps else None)
        for c in dataset.clips.values()
    ]
    return VideoDataset(dataset.root, dataset.split, clips, dataset.label_set)


def _check_same_normalisation(start, recipe, path) -> None:
    """The recipe must feed a starting checkpoint what it was trained on (the input size may differ)."""
    start.replace(height=recipe.height, width=recipe.width).require_same(recipe, f"{path} (model.init_checkpoint)")


def _open_log(path: Path):
    """metrics.jsonl, appended to (a resumed run adds its records), unbuffered: a record is on disk when
    `_write_log` returns, and a failed one leaves nothing behind to be retried at close."""
    with write_errors(path):
        fh = open(path, "ab", buffering=0)
    fh.created = fh.tell() == 0  # an empty log is removed at close if no record reached it
    return fh


def _write_log(fh, tb, record: dict) -> None:
    line = memoryview((json.dumps(record, default=float) + "\n").encode())
    with write_errors(fh.name):
        start = os.fstat(fh.fileno()).st_size
        try:
            while line:
                line = line[fh.write(line) :]
        except OSError:  # a full disk mid-record: the log keeps whole records only
            with contextlib.suppress(OSError):
                os.ftruncate(fh.fileno(), start)
            raise
    if tb is not None:
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)) and v is not None:
                tb.add_scalar(k, v, record["step"])


def _close_log(fh) -> None:
    fh.close()
    if fh.created:
        with contextlib.suppress(OSError):
            if os.path.getsize(fh.name) == 0:  # no record reached it (the disk was full): no empty log stays
                os.unlink(fh.name)


def _tensorboard(out: Path):
    from .events import open_event_writer  # optional: its failure is a warning naming the event file

    return open_event_writer(out / "tb")


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def check_run_folder(out: Path, model, *, resume: bool, overwrite: bool) -> None:
    """Before training: `out` must be a writable folder with room for the checkpoints, and a previous run in it
    is continued (`resume`), replaced (`overwrite`: its model, checkpoints, log and report go first, so none
    of them can pass for this run's) or refused."""
    from ..core.fileio import check_output

    params = sum(p.numel() * p.element_size() for p in model.parameters())
    check_output(out, "out_dir", folder=True, need_bytes=4 * params + (1 << 20))  # last.pt + model.pt + momentum
    previous = [n for n in RUN_FILES if (out / n).exists()]
    previous += sorted(p.name for p in out.glob("step_[0-9]*.pt*"))  # keep_every's snapshots
    if not previous or resume:
        return
    if not overwrite:
        raise VssegError(
            f"{out}: holds a previous run ({', '.join(previous)}); pass --resume to continue it or "
            "--overwrite to start again (or change the recipe's name / out_dir)"
        )
    for n in previous:
        (out / n).unlink()


RUN_FILES = ("model.pt", "model.pt.json", "last.pt", "last.pt.json", "metrics.jsonl", "val_report.json")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, overwrite: bool = False) -> dict:
    """Train `cfg`; return the final metrics. Raises `Interrupted` after saving last.pt when a signal stopped it."""
    trainer = Trainer(cfg, resume=resume, progress=progress, overwrite=overwrite)
    try:
        metrics = trainer.fit()
    finally:
        if trainer.dist.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if trainer.stop_signal is not None:
        raise Interrupted(
            trainer.stop_signal, f"saved {trainer.out / 'last.pt'} at step {trainer.step}; continue with --resume"
        )
    return metrics
