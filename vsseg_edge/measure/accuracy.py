"""Accuracy of one runner on a dataset: mIoU, per-class IoU and TC through the project's one evaluator.

The prediction of every frame is the end-to-end path the latency harness times (`prediction.end_to_end`), so
the accuracy reported is the accuracy of what was timed. `bench` scores its entries with it and the
trainer validates its student with it (a torch runner around the module being trained).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import VssegError
from .prediction import end_to_end


@dataclass(frozen=True)
class Accuracy:
    """mIoU and TC of one runner (percent; None where not measured), and the evaluator's full report."""

    miou: float | None
    pixel_accuracy: float | None
    per_class_iou: dict | None
    nan_classes: list
    classes_in_mean: int | None
    labelled_frames: int
    tc: float | None
    tc_per_class: dict | None
    tc_pairs: int | None
    tc_mode: str | None
    flow: str | None
    frames_predicted: int
    sequences: int
    seconds: float
    report: dict = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_report(cls, rep: dict) -> Accuracy:
        """The record of a `metrics.evaluate.evaluate_predictions` report (which it keeps as `report`)."""
        miou, tcd = rep.get("miou_detail") or {}, rep.get("tc_detail") or {}
        return cls(
            rep["miou"],
            miou.get("pixel_accuracy"),
            miou.get("per_class"),
            miou.get("nan_classes", []),
            miou.get("classes_in_mean"),
            rep["dataset"]["labelled_frames"],
            rep["tc"],
            tcd.get("per_class"),
            tcd.get("pairs"),
            tcd.get("mode"),
            tcd.get("flow"),
            rep["dataset"]["frames_predicted"],
            rep["dataset"]["sequences"],
            rep["seconds"],
            rep,
        )

    @classmethod
    def not_measured(cls) -> Accuracy:
        """The record of a run that measured speed only: every figure None, nothing evaluated."""
        return cls(None, None, None, [], None, 0, None, None, 0, None, None, 0, 0, 0.0)

    def to_dict(self) -> dict:
        """The bench entry's `accuracy` (the evaluator's full report is left out)."""
        return {k: v for k, v in self.__dict__.items() if k != "report"}


def check_classes(runner, dataset) -> None:
    """A model scored on a dataset must predict that dataset's class ids (same number of classes)."""
    n_model, n_data = len(runner.classes), dataset.label_set.num_classes
    if n_model and n_model != n_data:
        raise VssegError(
            f"{runner.artifact}: model predicts {n_model} classes, the {dataset.name} "
            f"{dataset.split} split has {n_data} ({dataset.label_set.name}); it cannot be scored there"
        )


def evaluate_runner(
    runner, dataset, flow_source, *, tc: bool = True, max_sequences: int | None = None, progress: bool = True
) -> Accuracy:
    """mIoU (+ per class) and TC (+ per class, flow named) of `runner` on `dataset`.

    Unlabelled video has no class set of its own: it is scored in the runner's classes (TC only)."""
    from ..core.labels import label_set_for
    from ..metrics.evaluate import evaluate_predictions

    if len(dataset) == 0 and runner.classes and hasattr(dataset, "with_label_set"):
        dataset = dataset.with_label_set(label_set_for(runner.classes))  # unlabelled video: the model's classes
    check_classes(runner, dataset)
    rep = evaluate_predictions(
        lambda ref: end_to_end(runner, dataset.read_image(ref)),
        dataset,
        flow_source,
        tc=tc,
        max_sequences=max_sequences,
        progress=progress,
    )
    return Accuracy.from_report(rep)
