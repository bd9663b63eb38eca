"""Confusion-matrix mIoU and temporal consistency (TC). numpy + OpenCV only (no torch).

`evaluate_predictions` (in `evaluate.py`) runs both over a dataset; the trainer's validation, `vsseg-edge eval`
and the benchmark reports all call it.
"""

from .evaluate import PredictionDir, evaluate_predictions
from .miou import ConfusionMatrix
from .tc import MODES as TC_MODES
from .tc import TemporalConsistency, occlusion_mask, warp_labels

__all__ = ["evaluate_predictions", "PredictionDir", "ConfusionMatrix", "TemporalConsistency", "warp_labels", "occlusion_mask", "TC_MODES"]
