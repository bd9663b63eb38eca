"""Loss configuration: which terms are on (weight > 0) and how they are computed.

`LossWeights` holds one weight per term; a weight of 0 switches the term off entirely — its module is
not built and nothing is computed. Values known from the reference code (for recipes):

    seg 1.0, aux 0.4                                ETC / PSPNet deep supervision
    temporal 0.1                                    ETC cityscapes_pspnet18_flow.yaml (its SD yaml: 0.01)
    skd_pixel 10, skd_pairwise 0.5, skd_holistic 0.1   SKD run_train_val.sh (λ_pi, λ_pa, λ_d)
    kd_pixel, kd_pairwise_frames, kd_multiframe     unknown: ETC's distillation script is not released
    fused_kd                                        ours: distillation towards the temporally fused teacher
                                                    (`fused_kd.py`); its target is precomputed, so no online
                                                    teacher is needed for it

`LossConfig` adds the knobs of each term (see the term's module for the formulas); both load from YAML
through `vsseg_edge.core.config.from_dict` (unknown keys rejected).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ...core.labels import IGNORE_INDEX
from .fused_kd import MODES as FUSED_MODES
from .temporal import ON_CHOICES

KD_TERMS = ("kd_pixel", "kd_pairwise_frames", "kd_multiframe", "skd_pixel", "skd_pairwise", "skd_holistic")
RESOLUTIONS = ("full", "s8")  # temporal_resolution / kd_resolution


@dataclass(frozen=True)
class LossWeights:
    """Weight of every loss term; 0 = off (not computed)."""

    seg: float = 1.0
    aux: float = 0.4
    temporal: float = 0.0
    kd_pixel: float = 0.0
    kd_pairwise_frames: float = 0.0
    kd_multiframe: float = 0.0
    skd_pixel: float = 0.0
    skd_pairwise: float = 0.0
    skd_holistic: float = 0.0
    fused_kd: float = 0.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"loss weight {f.name} must be a number >= 0, got {value!r}")

    def active(self) -> dict[str, float]:
        """The terms with a non-zero weight."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name)}

    @property
    def needs_teacher(self) -> bool:
        return any(getattr(self, name) for name in KD_TERMS)


@dataclass(frozen=True)
class LossConfig:
    """Weights plus the options of each term (defaults follow ETC's / SKD's code)."""

    weights: LossWeights = field(default_factory=LossWeights)
    ignore_index: int = IGNORE_INDEX
    class_weights: tuple[float, ...] | None = None
    # temporal loss
    temporal_on: str = "logits"  # "logits" (ETC code) | "probs" (paper)
    temporal_resolution: str = "full"  # "full": out + image-res flow (ETC) | "s8": out_s8, flow resized
    temporal_square_mask: bool = True  # ETC code MSE(M·z, M·ẑ) = M²(·)²; False: paper's M(·)²
    temporal_detach_neighbour: bool = False  # ETC: gradient through both frames
    temporal_exclude_out_of_frame: bool = True
    # distillation
    kd_temperature: float = 1.0
    kd_neighbour_weight: float = 0.4
    kd_reduction: str = "pixel"  # "pixel" true KL | "element" ETC's KLDivLoss scale (÷ C)
    kd_ignore_unlabelled: bool = False  # drop ignore pixels of frame t from the pixel KD
    # pixel KD weighted by the inverse share of the teacher's class at each pixel, to the power β (kd_pixel.py):
    # 1 = every class the teacher predicts weighs the same, as mIoU and TC weigh them; 0 = off (ETC)
    kd_class_balance: float = 0.0
    # "s8": pixel KD on the stride-8 logits (ETC); "full": on the final logits, e.g. for QAT, where what must match
    # the FP32 teacher is the argmax the deployed model outputs (ESPNet's decoder refines its stride-8 map)
    kd_resolution: str = "s8"
    pairwise_etc_compat: bool = False  # ETC's swapped-norm affinity (a bug), for comparison only
    pairwise_pool: int = 1
    multiframe_pool: int = 16
    # frozen by default: a ConvLSTM trained with the loss it computes can learn to ignore its input (the loss
    # is 0 for any input-independent cell; see kd_multiframe.py). True reproduces ETC's trainable cell.
    multiframe_trainable: bool = False
    skd_pool_scale: float = 0.5
    skd_pixel_batch_sum: bool = False
    skd_gp_weight: float = 10.0
    skd_disc_lr: float = 4e-4
    skd_disc_channels: int = 64
    skd_disc_layers: int = 4
    # distillation towards precomputed (temporally fused) targets
    fused_kd_mode: str = "soft"  # "soft": KL(q̄ ‖ p) | "hard": CE on argmax q̄
    fused_kd_threshold: float = 0.0  # hard: pixels whose max q̄ is below it are left out

    def __post_init__(self):
        if self.temporal_on not in ON_CHOICES:
            raise ValueError(f"temporal_on must be one of {ON_CHOICES}, got {self.temporal_on!r}")
        if self.temporal_resolution not in RESOLUTIONS:
            raise ValueError(f"temporal_resolution must be one of {RESOLUTIONS}, got {self.temporal_resolution!r}")
        if self.kd_resolution not in RESOLUTIONS:
            raise ValueError(f"kd_resolution must be one of {RESOLUTIONS}, got {self.kd_resolution!r}")
        if self.kd_reduction not in ("pixel", "element"):
            raise ValueError(f"kd_reduction must be 'pixel' or 'element', got {self.kd_reduction!r}")
        if self.fused_kd_mode not in FUSED_MODES:
            raise ValueError(f"fused_kd_mode must be one of {FUSED_MODES}, got {self.fused_kd_mode!r}")
        if not 0 <= self.fused_kd_threshold < 1:
            raise ValueError(f"fused_kd_threshold must be in [0, 1), got {self.fused_kd_threshold}")
        if self.kd_temperature <= 0:
            raise ValueError(f"kd_temperature must be > 0, got {self.kd_temperature}")
        if self.kd_class_balance < 0:
            raise ValueError(f"kd_class_balance must be ≥ 0 (0 = off), got {self.kd_class_balance}")
        if not 0 < self.skd_pool_scale <= 1:
            raise ValueError(f"skd_pool_scale must be in (0, 1], got {self.skd_pool_scale}")
        for name in ("pairwise_pool", "multiframe_pool", "skd_disc_layers", "skd_disc_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
