"""Training recipes: frozen dataclasses loaded from YAML (`train/*.yaml`), overridden from the CLI.

The resolved config is stored inside every checkpoint and its manifest. Paths in a recipe are resolved
relative to the recipe file (`resolve_paths`), never executed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..core.classes import is_class_file
from ..core.config import apply_overrides, from_dict, load_yaml
from ..core.errors import VssegError
from ..core.preprocess import PreprocessSpec
from ..data.flow import ETC_OFFSETS
from .losses.config import LossConfig


@dataclass(frozen=True)
class DataConfig:
    root: str | None = "../runs/synth"  # labelled dataset root (Cityscapes, synthetic, CamVid); null: none (video only)
    kind: str = "auto"  # auto | cityscapes | synthetic | camvid
    train_split: str = "train"
    val_split: str = "val"
    crop: tuple[int, int] = (128, 256)  # training crop H, W
    scale_range: tuple[float, float] = (0.5, 2.0)
    rotate_deg: float = 10.0
    blur_prob: float = 0.5
    flip: bool = True
    offsets: tuple[int, ...] = ETC_OFFSETS  # neighbour offsets k for the temporal loss
    flow: str = "auto"  # auto (exact on synthetic, else DIS) | exact | dis | a folder of precomputed flows
    flow_cache: str | None = None  # DIS cache folder (default: data.flow.flow_cache_dir(), shared with eval/bench)
    workers: int = 2


@dataclass(frozen=True)
class VideoConfig:
    """Unlabelled clips mixed into every batch: they give the temporal loss and distillation (no CE).

    The labelled source (`data`) gives the supervised terms and the distillation on its frames; each step
    draws `batch_size` labelled frames and `video.batch_size` unlabelled (t, t+k) pairs, so the two sizes
    set the ratio. Frames are cropped and augmented like the labelled ones (`data.crop`, scale, rotation …).
    """

    root: str | None = None  # a video file, a folder of frames or a folder of clips; null: off
    batch_size: int = 4  # unlabelled pairs per step
    offsets: tuple[int, ...] = (-2, -1, 1, 2, 3)  # ETC's k for (t, t+k)
    flow_cache: str | None = None  # DIS cache (default: the user flow cache eval and bench use)
    val_root: str | None = None  # held-out clips: TC after training (val_video_tc), with the model's classes
    val_max_frames: int | None = None  # per clip, the first N frames (quick TC checks)
    # fused targets (loss.weights.fused_kd > 0): the frozen teacher's predictions on t and t+k (k in fuse_offsets)
    # warped into t and averaged, weighted by flow validity · exp(−|Σ_c ΔI_c| / fuse_sigma)^fuse_mask_power
    # (train.targets); computed once before training into target_cache (default: the user cache's targets/)
    fuse_offsets: tuple[int, ...] = (-2, -1, 1, 2)
    fuse_sigma: float = 57.375
    fuse_mask_power: float = 1.0
    target_cache: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str = "pspnet18"
    backbone_weights: str | None = None  # torchvision-format ImageNet state dict (local file)
    init_checkpoint: str | None = None  # start from a vsseg-edge checkpoint's weights (a path or a zoo name)
    kwargs: dict = field(default_factory=dict)
    # BatchNorm frozen while training (eval mode: running statistics kept; affine weights not trained), as
    # detection fine-tuning does: with a few crops per step the statistics would be replaced by noisy ones, and
    # the BN biases take the largest gradient steps of a pretrained ESPNet (an unfrozen level-1 BN bias moved by
    # 100 % of its norm in 120 steps at lr 1e-3 and CamVid val mIoU fell from 69 to 39)
    freeze_bn: bool = False


@dataclass(frozen=True)
class TeacherConfig:
    checkpoint: str | None = None  # a vsseg-edge checkpoint or zoo name; needed when any KD weight is > 0


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # sgd (with momentum) | adam
    lr: float = 0.01
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    head_lr_mult: float = 10.0
    poly_power: float = 0.9
    grad_clip: float = 10.0  # max global grad norm; 0 disables
    # decay of an exponential moving average of the weights, which model.pt and the step snapshots hold
    # (last.pt keeps both); it smooths QAT's rounding oscillations. 0: off
    ema: float = 0.0

    def __post_init__(self):
        if self.name not in ("sgd", "adam"):
            raise VssegError(f"recipe: optim.name must be sgd or adam, got {self.name!r}")
        if not 0.0 <= self.ema < 1.0:
            raise VssegError(f"recipe: optim.ema must be in [0, 1) (0: off), got {self.ema}")


# QAT placements (train.quant): the inputs and weights of the convolutions TensorRT runs in int8 (NVIDIA
# ModelOpt's rule for small-channel convolutions; the default), or of every Conv/ConvTranspose (the first
# placement; its checkpoints still load)
PLACEMENTS = {"trt": "conv-input-weight-trt", "all": "conv-input-weight"}
CALIB_METHODS = ("max", "percentile")


@dataclass(frozen=True)
class QuantConfig:
    """Quantisation-aware training (`quant:` section of a recipe; `train.quant` has the design): fake INT8 on
    the input and weight of every convolution TensorRT runs in int8 (or of every one), ranges calibrated on
    training batches first."""

    enabled: bool = False
    placement: str = "trt"  # trt: the convolutions TensorRT runs in int8 (ModelOpt's rule) | all: every one
    calib_batches: int = 8  # training batches whose activations set each input amax before fine-tuning
    calib_method: str = "percentile"  # max | percentile (of |x|, per tensor, over the calibration batches)
    percentile: float = 99.999
    exclude: tuple[str, ...] = ()  # module names (e.g. "classifier") kept in float

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise VssegError(f"recipe: quant.placement must be one of {sorted(PLACEMENTS)}, got {self.placement!r}")
        if self.calib_method not in CALIB_METHODS:
            raise VssegError(f"recipe: quant.calib_method must be one of {CALIB_METHODS}, got {self.calib_method!r}")
        if self.calib_batches < 1:
            raise VssegError(f"recipe: quant.calib_batches must be ≥ 1, got {self.calib_batches}")
        if not 0.0 < self.percentile <= 100.0:
            raise VssegError(f"recipe: quant.percentile must be in (0, 100], got {self.percentile}")

    def record(self) -> dict:
        """What a checkpoint stores so that the model can be rebuilt with the same fake quantisers."""
        return {"placement": PLACEMENTS[self.placement], "bits": 8, "exclude": list(self.exclude)}


@dataclass(frozen=True)
class TrainConfig:
    name: str = "run"
    classes: str = "cityscapes"  # class set: cityscapes | camvid | a class file (core.classes)
    iterations: int = 1000
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    sync_bn: bool = False  # SyncBatchNorm under torchrun
    threads: int = 0  # torch CPU threads; 0 = torch's default
    out_dir: str = "../runs/train"
    log_every: int = 10
    ckpt_every: int = 500
    # also keep the weights at the start (QAT: once calibrated) and every N steps as step_NNNNNN.pt, to choose
    # among later (the start too: fine-tuning need not beat it); 0: off
    keep_every: int = 0
    val_every: int = 0  # 0 = validate once at the end
    val_max_sequences: int | None = None
    val_tc: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    quant: QuantConfig = field(default_factory=QuantConfig)

    def __post_init__(self):
        for name, ok in (
            ("iterations", self.iterations > 0),
            ("batch_size", self.batch_size > 0),
            ("data.crop", min(self.data.crop) > 0),
            ("video.batch_size", self.video.batch_size > 0),
        ):
            if not ok:
                raise VssegError(f"recipe: {name} must be positive")
        for name in ("ckpt_every", "keep_every", "val_every"):
            if getattr(self, name) < 0:
                raise VssegError(f"recipe: {name} must be ≥ 0 (0: off), got {getattr(self, name)}")
        if self.data.root is None and self.video.root is None:
            raise VssegError("recipe: no training data; set data.root (labelled) and/or video.root (unlabelled clips)")

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir) / self.name


_PATH_FIELDS = (
    ("data", "root"),
    ("data", "flow_cache"),
    ("video", "root"),
    ("video", "flow_cache"),
    ("video", "val_root"),
    ("video", "target_cache"),
    ("model", "backbone_weights"),
    ("model", "init_checkpoint"),
    ("teacher", "checkpoint"),
    ("out_dir",),
)


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a recipe YAML, apply `key=value` overrides, and make every path absolute.

    Paths written in a recipe are relative to that recipe file; paths given as overrides on the command
    line are relative to the current directory, as a user typing them expects. A recipe may start from
    another with `base: other.yaml` (relative to itself); its keys are merged over the base's, section
    by section, so a "+TL" recipe only states what it adds.
    """
    data = _load_with_base(Path(path)) if path else {}
    data = apply_overrides(data, overrides)
    cfg = from_dict(TrainConfig, data, str(path or "recipe"))
    return resolve_paths(cfg, Path.cwd())


def _load_with_base(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise VssegError(f"{path}: recipe 'base' chain loops back to itself")
    data = _absolute_paths(load_yaml(path), path.parent)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise VssegError(f"{path}: 'base' must be the path of another recipe (relative to this one), got {base!r}")
    return _merge(_load_with_base(path.parent / base, seen + (path,)), data)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fix(value, base: Path):
    if value is None or not isinstance(value, str) or value in _FLOW_KEYWORDS:
        return value
    if _is_zoo_name(value, base):
        return value  # resolved where it is used (vsseg_edge.zoo.resolve)
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


_FLOW_KEYWORDS = ("auto", "exact", "dis")


def _is_zoo_name(value: str, base: Path) -> bool:
    """A zoo model's name with no file of that name beside the recipe (a file wins, as everywhere)."""
    from ..zoo import names

    return value in names() and not (base / value).exists()


def _absolute_paths(data: dict, base: Path) -> dict:
    """The recipe dict with its path fields made absolute against `base` (the recipe's folder)."""
    data = dict(data)
    for parts in _PATH_FIELDS + (("data", "flow"), ("model", "kwargs", "weights")):
        node = data
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and parts[-1] in node:
            node[parts[-1]] = _fix(node[parts[-1]], base)
    if isinstance(data.get("classes"), str) and is_class_file(data["classes"]):
        data["classes"] = _fix(data["classes"], base)
    return data


def resolve_paths(cfg: TrainConfig, base: Path) -> TrainConfig:
    """Make the config's remaining relative paths absolute against `base`."""
    fix = lambda v: _fix(v, base)  # noqa: E731
    data = cfg.data
    data = dataclasses.replace(data, root=fix(data.root), flow_cache=fix(data.flow_cache), flow=fix(data.flow))
    v = cfg.video
    video = dataclasses.replace(
        v, root=fix(v.root), flow_cache=fix(v.flow_cache), val_root=fix(v.val_root), target_cache=fix(v.target_cache)
    )
    kwargs = dict(cfg.model.kwargs)
    if kwargs.get("weights"):
        kwargs["weights"] = fix(kwargs["weights"])
    model = dataclasses.replace(
        cfg.model,
        backbone_weights=fix(cfg.model.backbone_weights),
        init_checkpoint=fix(cfg.model.init_checkpoint),
        kwargs=kwargs,
    )
    teacher = dataclasses.replace(cfg.teacher, checkpoint=fix(cfg.teacher.checkpoint))
    classes = fix(cfg.classes) if is_class_file(cfg.classes) else cfg.classes
    return dataclasses.replace(
        cfg, data=data, video=video, model=model, teacher=teacher, out_dir=fix(cfg.out_dir), classes=classes
    )
