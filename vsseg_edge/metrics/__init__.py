"""Confusion-matrix mIoU and temporal consistency (TC). numpy + OpenCV only (no torch).

`evaluate_predictions` (in `evaluate.py`) runs both over a dataset; the trainer's validation, `vsseg-edge eval`
and the benchmark reports all call it. The names below load on first use, so importing the CLI's
`vsseg_edge.metrics.commands` does not import numpy (`vsseg-edge --help` stays fast).
"""

import importlib

_EXPORTS = {
    "evaluate_predictions": "evaluate",
    "PredictionDir": "evaluate",
    "ConfusionMatrix": "miou",
    "TemporalConsistency": "tc",
    "warp_labels": "tc",
    "occluded_pixels": "tc",
}

__all__ = [*_EXPORTS, "TC_MODES"]


def __getattr__(name):
    if name == "TC_MODES":
        return importlib.import_module(".tc", __name__).MODES
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
