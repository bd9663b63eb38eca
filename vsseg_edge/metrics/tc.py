"""Temporal consistency (TC) of predicted label maps, as the ETC paper measures it (after Lai et al.).

For each consecutive pair (t, t+1) the prediction of t+1 is warped into frame t with the forward flow
t → t+1 (pixel x of frame t looks up pred_{t+1} at x + flow(x)); per-class intersection and union between
pred_t and the warped map are summed over all pairs of all sequences and TC is the mean IoU over the
classes with a non-zero union. No ground truth is involved, so TC works on any video; it depends on the
flow, which every report names.

Differences from the paper's script (ETC `tool/eval_tc.py`), all deliberate and documented:

- Labels are warped nearest-neighbour by default. `mode="etc"` reproduces the script: bilinear sampling of
  the class *indices* (with FlowNet2 Resample2d's arithmetic, bit for bit) followed by uint8 truncation,
  which invents classes along boundaries (between road=0 and car=13 it yields 1..12) and so lowers TC for
  reasons that have nothing to do with flicker: ground-truth labels of the default synthetic val set with
  exact flow score 99.6 nearest but 69.6 in etc mode (wall 21, fence 18, rider 0.9 — classes invented
  between their neighbours).
- Pixels whose flow is NaN or points outside the frame are excluded in both modes (the script's
  Resample2d clamps to the border and counts them).
- Classes whose union is zero are NaN and left out of the mean (the script divides by union + 1e-10 and
  averages all 19 classes, counting such classes as 0).
- Pixels equal to the ignore index in pred_t or in the warped map are excluded (the script excludes
  them in the warped map only). Warped values outside 0..C-1 that etc-mode invents count as mismatches.
- An optional forward-backward occlusion check (Sundaram et al.: occluded where
  |f + b|² > α₁(|f|² + |b|²) + α₂, b the backward flow sampled at x + f(x)) feeds a *separate* figure,
  `tc_occ`; it is never mixed into `tc`.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import VssegError
from ..core.labels import IGNORE_INDEX
from ..data.warp import warp_backward

MODES = ("nearest", "etc")
_INTERPOLATION = {"nearest": "nearest", "etc": "resample2d"}


def warp_labels(
    labels_t1: np.ndarray, flow_t_t1: np.ndarray, mode: str = "nearest", ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the label map of frame t+1 into frame t with the forward flow t → t+1 (`data.warp`).

    Returns (warped uint8 HxW, valid bool HxW). `valid` is False where the flow is NaN or the sample point
    leaves the frame; warped holds `ignore_index` there. mode "nearest" picks the nearest pixel; mode "etc"
    interpolates class indices bilinearly (Resample2d's arithmetic) and truncates to uint8 like the ETC script.
    """
    if mode not in MODES:
        raise VssegError(f"--tc-mode {mode!r}: expected one of {list(MODES)}")
    labels_t1 = np.asarray(labels_t1)
    if labels_t1.shape != np.shape(flow_t_t1)[:2]:
        raise VssegError(f"label map {labels_t1.shape} and flow {np.shape(flow_t_t1)[:2]} differ in size")
    source = labels_t1.astype(np.uint8) if mode == "nearest" else labels_t1.astype(np.float32)
    warped, valid = warp_backward(source, flow_t_t1, _INTERPOLATION[mode], fill=ignore_index)
    if mode == "etc":  # truncation toward zero, as .astype(np.uint8) in the script
        warped = np.where(valid, np.clip(warped, 0, 255), ignore_index).astype(np.uint8)
    return warped, valid


def occluded_pixels(flow_fw: np.ndarray, flow_bw: np.ndarray, alpha1: float = 0.01, alpha2: float = 0.5) -> np.ndarray:
    """True where the forward-backward check fails (occluded or unreliable), after Sundaram et al. 2010."""
    fw = np.asarray(flow_fw, np.float32)
    bw = np.where(np.isfinite(flow_bw), flow_bw, np.nan).astype(np.float32)
    bw_at, inside = warp_backward(bw, fw, "linear", fill=np.nan)
    diff = ((fw + bw_at) ** 2).sum(axis=2)
    mag = (fw**2).sum(axis=2) + (bw_at**2).sum(axis=2)
    with np.errstate(invalid="ignore"):
        ok = diff <= alpha1 * mag + alpha2
    return ~(ok & inside)


class _IoUCounts:
    """Per-class intersection and the two areas, summed over pairs."""

    def __init__(self, num_classes: int):
        self.inter = np.zeros(num_classes, np.int64)
        self.area_a = np.zeros(num_classes, np.int64)
        self.area_b = np.zeros(num_classes, np.int64)
        self.pixels = 0
        self.pairs = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Add one pair; returns its own counts, rows (intersection, area of a, area of b) by class."""
        c = self.inter.size
        self.pixels += a.size
        self.pairs += 1
        pair = np.stack(
            [
                np.bincount(a[(a == b) & (a < c)], minlength=c)[:c],
                np.bincount(a[a < c], minlength=c)[:c],
                np.bincount(b[b < c], minlength=c)[:c],
            ]
        ).astype(np.int64)
        self.inter += pair[0]
        self.area_a += pair[1]
        self.area_b += pair[2]
        return pair

    def counts(self) -> np.ndarray:
        """(3, C): intersection, area a, area b — what `class_iou` and `tc_of_counts` read."""
        return np.stack([self.inter, self.area_a, self.area_b])

    def iou(self) -> np.ndarray:
        return class_iou(self.counts())


def class_iou(counts: np.ndarray) -> np.ndarray:
    """Per-class IoU from counts (..., 3, C) — rows intersection, area a, area b; NaN where the union is 0."""
    inter, union = counts[..., 0, :], counts[..., 1, :] + counts[..., 2, :] - counts[..., 0, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def tc_of_counts(counts: np.ndarray) -> np.ndarray:
    """TC (mean IoU over the classes with a union, 0..1) of summed counts (..., 3, C), as `TemporalConsistency.tc`;
    NaN where no class has one."""
    iou = class_iou(counts)
    n = np.isfinite(iou).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.nansum(iou, axis=-1) / np.maximum(n, 1), np.nan)


class TemporalConsistency:
    """Accumulates TC over frame pairs; `tc()` and `tc_occ()` are means over classes, in 0..1."""

    def __init__(self, num_classes: int, mode: str = "nearest", ignore_index: int = IGNORE_INDEX):
        if mode not in MODES:
            raise VssegError(f"--tc-mode {mode!r}: expected one of {list(MODES)}")
        self.num_classes = num_classes
        self.mode = mode
        self.ignore_index = ignore_index
        self.all = _IoUCounts(num_classes)
        self.noc = _IoUCounts(num_classes)
        self.total_pixels = 0
        self._pairs: list[np.ndarray] = []  # each pair's own counts (for confidence bounds over pairs)

    def update(
        self, pred_t: np.ndarray, pred_t1: np.ndarray, flow_t_t1: np.ndarray, flow_t1_t: np.ndarray | None = None
    ) -> None:
        """Add the pair (t, t+1): predictions of both frames and the forward flow (backward optional)."""
        pred_t = np.asarray(pred_t)
        if pred_t.shape != np.shape(pred_t1):
            raise VssegError(f"predictions of a pair differ in size: {pred_t.shape} vs {np.shape(pred_t1)}")
        self._check_ids(pred_t)
        self._check_ids(pred_t1)
        warped, valid = warp_labels(pred_t1, flow_t_t1, self.mode, self.ignore_index)
        keep = valid & (pred_t != self.ignore_index) & (warped != self.ignore_index)
        self.total_pixels += pred_t.size
        self._pairs.append(self.all.add(pred_t[keep], warped[keep]))
        if flow_t1_t is not None:
            keep_noc = keep & ~occluded_pixels(flow_t_t1, flow_t1_t)
            self.noc.add(pred_t[keep_noc], warped[keep_noc])

    def _check_ids(self, pred: np.ndarray) -> None:
        ids = np.unique(pred)
        bad = ids[((ids < 0) | (ids >= self.num_classes)) & (ids != self.ignore_index)]
        if bad.size:
            raise VssegError(
                f"prediction holds class id(s) {bad[:5].tolist()}; expected 0..{self.num_classes - 1}"
                f" or {self.ignore_index}"
            )

    def pair_counts(self) -> np.ndarray:
        """Each pair's counts in the order added, (pairs, 3, C): rows intersection, area of pred_t, area of the
        warped map (`tc_of_counts` of their sum is `tc()`)."""
        return np.stack(self._pairs) if self._pairs else np.zeros((0, 3, self.num_classes), np.int64)

    def per_class(self) -> np.ndarray:
        """Per-class TC IoU in 0..1; NaN for classes that never occur in either map."""
        return self.all.iou()

    def tc(self) -> float:
        return float(tc_of_counts(self.all.counts()))

    def tc_occ(self) -> float:
        """TC restricted to pixels passing the forward-backward check; NaN without backward flow."""
        return float(tc_of_counts(self.noc.counts()))

    def to_dict(self, class_names: list[str] | tuple[str, ...] | None = None) -> dict:
        """A JSON-ready report in percent; the caller adds the flow source's name."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        per = self.per_class()
        return {
            "tc": _pct(self.tc()),
            "tc_occ": _pct(self.tc_occ()),
            "mode": self.mode,
            "pairs": self.all.pairs,
            "pairs_with_occlusion_check": self.noc.pairs,
            "valid_pixel_fraction": round(self.all.pixels / self.total_pixels, 6) if self.total_pixels else None,
            "per_class": {n: _pct(v) for n, v in zip(names, per)},
            "nan_classes": [n for n, v in zip(names, per) if np.isnan(v)],
        }


def _pct(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x) * 100.0, 4)
