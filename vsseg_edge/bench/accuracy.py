"""Accuracy of one backend on a dataset: mIoU, per-class IoU and TC through the project's one evaluator.

The prediction of every frame is the end-to-end path the latency harness times (`latency.end_to_end`), so
the accuracy reported is the accuracy of what was timed.
"""

from __future__ import annotations

from ..core.errors import VssegError
from .latency import end_to_end


def backend_pred_fn(backend, dataset):
    """`pred_fn(ref)` for `evaluate_predictions`: read the frame, run the backend, labels at the frame's size."""

    def pred_fn(ref):
        return end_to_end(backend, dataset.read_image(ref))

    return pred_fn


def check_classes(backend, dataset) -> None:
    """A model scored on a dataset must predict that dataset's class ids (same number of classes)."""
    n_model, n_data = len(backend.classes), dataset.label_set.num_classes
    if n_model and n_model != n_data:
        raise VssegError(f"{backend.artifact}: model predicts {n_model} classes, the {dataset.name} "
                         f"{dataset.split} split has {n_data} ({dataset.label_set.name}); it cannot be scored there")


def evaluate_backend(backend, dataset, flow_source, *, tc: bool = True, max_sequences: int | None = None,
                     progress: bool = True) -> dict:
    """mIoU (+ per class) and TC (+ per class, flow named) of `backend` on `dataset`, as a compact dict."""
    from ..metrics.evaluate import evaluate_predictions

    check_classes(backend, dataset)
    rep = evaluate_predictions(backend_pred_fn(backend, dataset), dataset, flow_source, tc=tc,
                               max_sequences=max_sequences, progress=progress)
    miou, tcd = rep.get("miou_detail") or {}, rep.get("tc_detail") or {}
    return {
        "miou": rep["miou"],
        "pixel_accuracy": miou.get("pixel_accuracy"),
        "per_class_iou": miou.get("per_class"),
        "nan_classes": miou.get("nan_classes", []),
        "classes_in_mean": miou.get("classes_in_mean"),
        "labelled_frames": rep["dataset"]["labelled_frames"],
        "tc": rep["tc"],
        "tc_per_class": tcd.get("per_class"),
        "tc_pairs": tcd.get("pairs"),
        "tc_mode": tcd.get("mode"),
        "flow": tcd.get("flow"),
        "frames_predicted": rep["dataset"]["frames_predicted"],
        "sequences": rep["dataset"]["sequences"],
        "seconds": rep["seconds"],
    }
