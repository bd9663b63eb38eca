"""One evaluation over a dataset: mIoU on the labelled frames and TC over consecutive frame pairs.

The trainer's validation, `vsseg-edge eval` (predictions read from PNGs) and the benchmark reports all call
`evaluate_predictions` with their own `pred_fn`, so every figure in the project is computed the same way.
numpy only at import time; the dataset and flow readers come from `vsseg_edge.data` through the objects the
caller passes (a flow source given by name is opened lazily).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..core.errors import VssegError
from .miou import ConfusionMatrix
from .tc import TemporalConsistency

PredFn = Callable[[object], "np.ndarray | None"]


def evaluate_predictions(
    pred_fn: PredFn,
    dataset,
    flow_source=None,
    tc: bool = True,
    max_sequences: int | None = None,
    progress: bool = True,
    tc_mode: str = "nearest",
    occlusion: bool = False,
) -> dict:
    """Evaluate `pred_fn(ref) -> uint8 HxW label map (training ids)` on `dataset`; returns a JSON-ready report.

    - mIoU: one confusion matrix over every labelled frame of the evaluated sequences.
    - TC (when `tc`): every pair (ref, dataset.neighbour(ref, 1)) of those sequences, warped with
      `flow_source(dataset, ref, next)` (a flow-source object, or a name for `open_flow_source`, default
      "auto"). With `occlusion`, the backward flow is also computed and `tc_occ` is reported beside `tc`.
    - `pred_fn` may return None for an unlabelled frame it has no prediction for: pairs touching it are
      skipped and counted; None for a labelled frame is an error.
    - `max_sequences` keeps the first N sequences (sorted by name), for quick validation passes.
    Each frame's prediction is computed once; only the previous one is kept in memory.
    """
    sequences = dict(list(dataset.sequences.items())[:max_sequences] if max_sequences else dataset.sequences)
    classes = dataset.label_set.classes
    cm = ConfusionMatrix(len(classes), dataset.label_set.ignore_index)
    meter = TemporalConsistency(len(classes), tc_mode, dataset.label_set.ignore_index) if tc else None
    flow = _open_flow(flow_source, dataset) if tc else None
    frames = [r for refs in sequences.values() for r in refs if tc or r.label is not None]
    stats = {"frames_predicted": 0, "labelled_frames": 0, "pairs_skipped_missing_prediction": 0}
    t0 = time.perf_counter()
    prev_ref, prev_pred = None, None
    for ref in _progress(frames, progress):
        pred = pred_fn(ref)
        if pred is not None:
            pred = _check_pred(pred, ref)
            stats["frames_predicted"] += 1
        if ref.label is not None:
            if pred is None:
                raise VssegError(f"{ref.image}: no prediction for this labelled frame")
            cm.update(pred, dataset.read_label(ref), where=str(ref.image))
            stats["labelled_frames"] += 1
        if meter is not None and prev_ref is not None and dataset.neighbour(prev_ref, 1) == ref:
            if prev_pred is None or pred is None:
                stats["pairs_skipped_missing_prediction"] += 1
            else:
                _update_tc(meter, flow, dataset, prev_ref, ref, prev_pred, pred, occlusion)
        prev_ref, prev_pred = ref, pred
    return _report(dataset, sequences, cm, meter, flow, stats, time.perf_counter() - t0)


def _update_tc(meter, flow, dataset, ref_a, ref_b, pred_a, pred_b, occlusion: bool) -> None:
    fw = _check_flow(flow(dataset, ref_a, ref_b), pred_a.shape, flow, ref_a)
    bw = _check_flow(flow(dataset, ref_b, ref_a), pred_a.shape, flow, ref_b) if occlusion else None
    meter.update(pred_a, pred_b, fw, bw)


def _open_flow(flow_source, dataset):
    if flow_source is None or isinstance(flow_source, str):
        from ..data.flow import open_flow_source

        return open_flow_source(flow_source or "auto", dataset)
    return flow_source


def _check_pred(pred, ref) -> np.ndarray:
    pred = np.asarray(pred)
    if pred.ndim != 2:
        raise VssegError(f"{ref.image}: prediction has shape {pred.shape}, expected an HxW label map")
    if pred.dtype != np.uint8:
        if pred.size and (pred.min() < 0 or pred.max() > 255):
            raise VssegError(f"{ref.image}: prediction values {pred.min()}..{pred.max()} are not uint8 class ids")
        pred = pred.astype(np.uint8)
    return pred


def _check_flow(flow: np.ndarray, hw: tuple[int, int], source, ref) -> np.ndarray:
    if flow.shape != (*hw, 2):
        raise VssegError(
            f"{ref.image}: flow from {getattr(source, 'name', source)} has shape {flow.shape}, "
            f"expected {hw[0]}x{hw[1]}x2 (the prediction's size)"
        )
    return flow


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="evaluate", unit="frame", leave=False)


def _report(dataset, sequences, cm, meter, flow, stats, seconds: float) -> dict:
    classes = list(dataset.label_set.classes)
    miou = cm.to_dict(classes) if stats["labelled_frames"] else None
    tc = None
    if meter is not None:
        tc = {
            "flow": getattr(flow, "name", str(flow)),
            **meter.to_dict(classes),
            "pairs_skipped_missing_prediction": stats["pairs_skipped_missing_prediction"],
        }
    return {
        "dataset": {
            "name": dataset.name,
            "root": str(dataset.root),
            "split": dataset.split,
            "class_set": dataset.label_set.name,
            "sequences": len(sequences),
            "frames_predicted": stats["frames_predicted"],
            "labelled_frames": stats["labelled_frames"],
        },
        "miou": miou["miou"] if miou else None,
        "tc": tc["tc"] if tc else None,
        "tc_occ": tc["tc_occ"] if tc else None,
        "miou_detail": miou,
        "tc_detail": tc,
        "seconds": round(seconds, 3),
    }


def class_table(report: dict) -> list[tuple[str, float | None, float | None]]:
    """(class, IoU %, TC %) rows of a report, for printing; None where a figure is absent or NaN."""
    miou, tc = report.get("miou_detail") or {}, report.get("tc_detail") or {}
    names = list((miou.get("per_class") or tc.get("per_class") or {}).keys())
    return [(n, (miou.get("per_class") or {}).get(n), (tc.get("per_class") or {}).get(n)) for n in names]


class PredictionDir:
    """Predicted label PNGs (training ids) in a folder, found by the name of each dataset image.

    Accepted names for an image `<stem>.<ext>`: `<stem>.png`, and for Cityscapes frames
    `<prefix>_leftImg8bit.png` also `<prefix>_pred.png`. Files may lie flat in the folder or in any
    subfolders (e.g. mirroring `{city}/`); a name found in several subfolders is resolved by the image's
    parent folder name or its sequence's name (a video clip's masks in `<clip name>/`), otherwise it is an
    error.
    """

    def __init__(self, root, dataset=None):
        from pathlib import Path

        self.root = Path(root)
        self.dataset = dataset  # when given, each prediction's size is checked against its image
        if not self.root.is_dir():
            raise VssegError(f"{self.root}: prediction folder not found (expected label PNGs named like the images)")
        self._by_name: dict[str, list] = {}
        for path in sorted(self.root.rglob("*.png")):
            self._by_name.setdefault(path.name, []).append(path)

    @staticmethod
    def candidate_names(ref) -> list[str]:
        stem = ref.image.stem
        names = [f"{stem}.png"]
        if stem.endswith("_leftImg8bit"):
            names.append(f"{stem[: -len('_leftImg8bit')]}_pred.png")
        return names

    def find(self, ref):
        """The prediction file of `ref`, or None."""
        for name in self.candidate_names(ref):
            paths = self._by_name.get(name, [])
            if len(paths) > 1:
                paths = [p for p in paths if p.parent.name in (ref.image.parent.name, ref.sequence)]
                if len(paths) != 1:
                    raise VssegError(
                        f"{self.root}: several files named {name}; mirror the image folders to disambiguate"
                    )
            if paths:
                return paths[0]
        return None

    def check_labelled(self, refs) -> None:
        """Raise one line naming the first missing prediction of a labelled frame and how many are missing."""
        missing = [r for r in refs if r.label is not None and self.find(r) is None]
        if missing:
            names = " or ".join(self.candidate_names(missing[0]))
            raise VssegError(
                f"{self.root}: no prediction {names} for labelled frame {missing[0].image} "
                f"({len(missing)} of {sum(r.label is not None for r in refs)} labelled frames missing)"
            )

    def __call__(self, ref):
        """pred_fn for `evaluate_predictions`: the label map, or None when the file is absent."""
        from ..core.fileio import read_label

        path = self.find(ref)
        if path is None:
            return None
        return read_label(path, expected_hw=self.dataset.image_hw(ref) if self.dataset is not None else None)
