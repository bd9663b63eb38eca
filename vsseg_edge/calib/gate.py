"""The accuracy gate: the INT8 Q/DQ model against its FP32 parent on held-out frames (onnxruntime, no torch).

Figures: argmax agreement between INT8 and FP32 (always), and, when the held-out frames have labels, the
mIoU of both against the ground truth (one confusion matrix over all pixels, `metrics.miou`), the mIoU drop
and the per-class IoU drop. The gate's criterion is the mIoU drop in points when labels exist, otherwise
100 − agreement (%); it passes when the criterion is ≤ the threshold (default 1.0).

The FP32 predictions are computed once and reused for every candidate model of the sensitivity search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.preprocess import PreprocessSpec, labels_to_frame_size, logits_to_labels, preprocess_batch
from ..metrics.miou import ConfusionMatrix
from .frames import Frame


@dataclass
class GateResult:
    """Outcome of one gate evaluation; `criterion` names what `drop` measures."""

    passed: bool
    threshold: float
    criterion: str  # "miou_drop" (points) | "disagreement" (% of pixels)
    drop: float
    agreement: float  # % of pixels where INT8 and FP32 predict the same class
    frames: int
    miou_fp32: float | None = None
    miou_int8: float | None = None
    per_class_drop: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "threshold": self.threshold, "criterion": self.criterion,
                "drop": round(self.drop, 4), "agreement": round(self.agreement, 4), "frames": self.frames,
                "miou_fp32": self.miou_fp32, "miou_int8": self.miou_int8, "per_class_drop": self.per_class_drop}

    def summary(self) -> str:
        head = (f"mIoU {self.miou_fp32:.2f} → {self.miou_int8:.2f} (drop {self.drop:.2f})"
                if self.criterion == "miou_drop" else f"disagreement {self.drop:.3f} %")
        verdict = "passes" if self.passed else "FAILS"
        return f"{head}, agreement {self.agreement:.3f} % on {self.frames} frames: {verdict} (threshold {self.threshold})"


def ort_session(path, threads: int = 0, exact_qdq: bool = False):
    """An onnxruntime CPU session: full graph optimisation (what the CPU target runs), or, with `exact_qdq`,
    none, so that Q/DQ nodes are computed as written (float arithmetic on quantised values) instead of by
    onnxruntime's fused integer kernels. The latter is how a TensorRT-flavour model is judged: TensorRT
    accumulates int8 products in int32, while onnxruntime's AVX2 u8×s8 kernel can saturate in int16.
    `path` may also be an in-memory `onnx.ModelProto` (the sensitivity search's candidates).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if exact_qdq
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    source = path.SerializeToString() if hasattr(path, "SerializeToString") else str(path)
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])


class Evaluator:
    """Runs models on a fixed list of held-out frames and compares them with the FP32 parent."""

    def __init__(self, fp32_path: str | Path, frames: Sequence[Frame], spec: PreprocessSpec,
                 class_names: Sequence[str], threads: int = 0, error_frames: int = 4, exact_qdq: bool = False):
        if not frames:
            raise ValueError("the accuracy gate needs at least one held-out frame")
        self.frames, self.spec, self.class_names, self.threads = list(frames), spec, list(class_names), threads
        self.labelled = all(f.read_label is not None for f in self.frames)
        self.exact_qdq = exact_qdq
        self.evaluated_with = ("exact Q/DQ arithmetic (onnxruntime, no graph optimisation)" if exact_qdq
                               else "onnxruntime CPU integer kernels (ORT_ENABLE_ALL)")
        self._fp32_preds, self._fp32_raw = self._predict(fp32_path, keep_raw=error_frames)

    def _predict(self, path, keep_raw: int = 0, exact_qdq: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Label maps at model resolution for all frames, and the raw outputs of the first `keep_raw`."""
        sess = ort_session(path, self.threads, exact_qdq)
        name = sess.get_inputs()[0].name
        preds, raws = [], []
        for i, frame in enumerate(self.frames):
            out = sess.run(None, {name: preprocess_batch([frame.read()], self.spec)})[0]
            preds.append(_to_labels(out))
            if i < keep_raw:
                raws.append(out)
        return preds, raws

    def gate(self, qdq_path: str | Path, threshold: float) -> GateResult:
        preds, _ = self._predict(qdq_path, exact_qdq=self.exact_qdq)
        same = sum(int((a == b).sum()) for a, b in zip(preds, self._fp32_preds))
        agreement = 100.0 * same / sum(p.size for p in preds)
        if not self.labelled:
            drop = 100.0 - agreement
            return GateResult(drop <= threshold, threshold, "disagreement", drop, agreement, len(preds))
        cm32, cm8 = self._confusion(self._fp32_preds), self._confusion(preds)
        iou32, iou8 = cm32.iou() * 100.0, cm8.iou() * 100.0
        miou32, miou8 = float(np.nanmean(iou32)), float(np.nanmean(iou8))
        drop = miou32 - miou8
        per_class = {n: round(float(a - b), 4) for n, a, b in zip(self.class_names, iou32, iou8)
                     if np.isfinite(a) and np.isfinite(b)}
        return GateResult(drop <= threshold, threshold, "miou_drop", drop, agreement, len(preds),
                          round(miou32, 4), round(miou8, 4), per_class)

    def _confusion(self, preds: list[np.ndarray]) -> ConfusionMatrix:
        cm = ConfusionMatrix(len(self.class_names))
        for frame, pred in zip(self.frames, preds):
            label = frame.read_label()
            cm.update(labels_to_frame_size(pred, label.shape[:2]), label, where=frame.key)
        return cm

    def output_error(self, qdq_path, num_frames: int) -> float:
        """Noise-to-signal of the outputs on the first frames: Σ(q − f)² / Σf² for logits, else disagreement.

        Uses at most the `error_frames` whose FP32 outputs were kept (raw logits are large at full size).
        `qdq_path` is a file or an in-memory `onnx.ModelProto`.
        """
        k = max(1, min(num_frames, len(self._fp32_raw)))
        sess = ort_session(qdq_path, self.threads, self.exact_qdq)
        name = sess.get_inputs()[0].name
        num = den = 0.0
        for frame, ref in zip(self.frames[:k], self._fp32_raw[:k]):
            out = sess.run(None, {name: preprocess_batch([frame.read()], self.spec)})[0]
            if np.issubdtype(ref.dtype, np.floating) and ref.ndim == 4:
                num += float(np.sum((out.astype(np.float64) - ref) ** 2))
                den += float(np.sum(ref.astype(np.float64) ** 2))
            else:
                num += float(np.sum(out != ref))
                den += float(ref.size)
        return num / max(den, 1e-30)


def _to_labels(out: np.ndarray) -> np.ndarray:
    """Model output → HxW label map: argmax of N×C×H×W logits, or an in-graph label map as is."""
    if np.issubdtype(out.dtype, np.floating) and out.ndim == 4:
        return logits_to_labels(out)[0]
    return np.asarray(out).reshape(out.shape[-2:]).astype(np.uint8)
