"""Training losses of ETC (temporally consistent per-frame segmentation) and SKD distillation.

One module per term, each an `nn.Module` whose docstring gives its formula; `compose.EtcLoss` sums the
terms whose weight in `LossWeights` is non-zero. Choices between the ETC paper and its code are stated
in each module.
"""

from .ce import ETC_CITYSCAPES_CLASS_WEIGHTS, cross_entropy
from .compose import EtcLoss, FrameOutputs, build_losses
from .config import LossConfig, LossWeights
from .fused_kd import FusedTargetLoss
from .kd_multiframe import ConvLSTMCell, MultiFrameKDLoss, self_cosine_graph
from .kd_pairwise_frames import PairwiseFramesKDLoss, cross_frame_affinity
from .kd_pixel import PixelKDLoss, class_balance_weights, kl_map, valid_from_labels
from .skd import (
    SkdPairwiseLoss,
    SkdPixelLoss,
    SpectralNormDiscriminator,
    discriminator_optimizer,
    gradient_penalty,
    holistic_discriminator_loss,
    holistic_generator_loss,
)
from .temporal import TemporalLoss, photometric_weight
from .warp import flow_validity, flow_warp, resize_flow

__all__ = [
    "ETC_CITYSCAPES_CLASS_WEIGHTS",
    "cross_entropy",
    "EtcLoss",
    "FrameOutputs",
    "build_losses",
    "LossConfig",
    "LossWeights",
    "FusedTargetLoss",
    "ConvLSTMCell",
    "MultiFrameKDLoss",
    "self_cosine_graph",
    "PairwiseFramesKDLoss",
    "cross_frame_affinity",
    "PixelKDLoss",
    "class_balance_weights",
    "kl_map",
    "valid_from_labels",
    "holistic_discriminator_loss",
    "holistic_generator_loss",
    "SkdPairwiseLoss",
    "SkdPixelLoss",
    "SpectralNormDiscriminator",
    "discriminator_optimizer",
    "gradient_penalty",
    "TemporalLoss",
    "photometric_weight",
    "flow_validity",
    "flow_warp",
    "resize_flow",
]
