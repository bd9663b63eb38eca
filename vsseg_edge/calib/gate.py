"""The accuracy gate: the INT8 Q/DQ model against its FP32 parent on held-out frames (onnxruntime, no torch).

Figures: the label agreement between INT8 and FP32 at model resolution (always), and, when the held-out
frames have labels, the mIoU of both against the ground truth (one confusion matrix over all pixels,
`metrics.miou`), the mIoU drop and the per-class IoU drop. The gate's criterion is the mIoU drop in points
when labels exist, otherwise 100 − agreement (%); it passes when the criterion is ≤ the threshold.

Both models run through the measurement core (`measure`): runners from `runtime.backends.open_backend`
(a file, or a candidate held in memory), labels and comparisons from `measure.predict` / `measure.compare`.
The FP32 predictions are computed once and reused for every candidate model of the sensitivity search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.preprocess import PreprocessSpec, labels_to_frame_size
from ..measure.compare import agreement, compare_outputs
from ..measure.prediction import predict
from ..metrics.miou import ConfusionMatrix
from .frames import SampledFrame

HOW = {
    True: "exact Q/DQ arithmetic (onnxruntime, no graph optimisation)",
    False: "onnxruntime CPU integer kernels (ORT_ENABLE_ALL)",
}


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
        return {
            "passed": self.passed,
            "threshold": self.threshold,
            "criterion": self.criterion,
            "drop": round(self.drop, 4),
            "agreement": round(self.agreement, 4),
            "frames": self.frames,
            "miou_fp32": self.miou_fp32,
            "miou_int8": self.miou_int8,
            "per_class_drop": self.per_class_drop,
        }

    def summary(self) -> str:
        head = (
            f"mIoU {self.miou_fp32:.2f} → {self.miou_int8:.2f} (drop {self.drop:.2f})"
            if self.criterion == "miou_drop"
            else f"disagreement {self.drop:.3f} %"
        )
        verdict = "passes" if self.passed else "FAILS"
        return (
            f"{head}, agreement {self.agreement:.3f} % on {self.frames} frames: {verdict} (threshold {self.threshold})"
        )


class Evaluator:
    """Runs models on a fixed list of held-out frames and compares them with the FP32 parent.

    Every model runs on onnxruntime's CPU provider; with `exact_qdq` the Q/DQ models run without graph
    optimisation (how a TensorRT-flavour model is judged: see `runtime.backends.ort`).
    """

    def __init__(
        self,
        fp32_path: str | Path,
        frames: Sequence[SampledFrame],
        spec: PreprocessSpec,
        class_names: Sequence[str],
        threads: int = 0,
        error_frames: int = 4,
        exact_qdq: bool = False,
    ):
        if not frames:
            raise ValueError("the accuracy gate needs at least one held-out frame")
        self.frames, self.spec, self.class_names, self.threads = list(frames), spec, list(class_names), threads
        self.labelled = all(f.read_label is not None for f in self.frames)
        self.exact_qdq = exact_qdq
        self.evaluated_with = HOW[exact_qdq]
        self.output_kind = "logits"
        fp32 = self._predict(fp32_path, keep_outputs=error_frames, exact_qdq=False)
        self._fp32_preds, self._fp32_raw = fp32.labels, fp32.outputs

    def use_kernels(self) -> None:
        """Run the candidates from now on as deployed on onnxruntime (its integer kernels), not exactly."""
        self.exact_qdq, self.evaluated_with = False, HOW[False]

    @property
    def fp32_labels(self) -> list[np.ndarray]:
        """The FP32 parent's label maps of the frames, at model resolution."""
        return self._fp32_preds

    def _runner(self, model, exact_qdq: bool):
        """An onnxruntime CPU runner: a file with its manifest, or a candidate without one (in memory, or a
        file the calibration has not yet given a manifest), described by the FP32 parent's spec."""
        from ..core.manifest import manifest_path
        from ..runtime.backends import is_in_memory_onnx, open_backend

        options = {"providers": ["CPUExecutionProvider"], "threads": self.threads, "exact_qdq": exact_qdq}
        if is_in_memory_onnx(model) or not manifest_path(model).is_file():
            name = "candidate Q/DQ model" if is_in_memory_onnx(model) else str(model)
            model = model if is_in_memory_onnx(model) else Path(model).read_bytes()
            return open_backend(
                model, spec=self.spec, output_kind=self.output_kind, classes=self.class_names, name=name, **options
            )
        runner = open_backend(model, "ort", shift_int8=False, **options)
        self.output_kind = runner.output_kind
        return runner

    def _predict(self, model, keep_outputs: int = 0, exact_qdq: bool = False):
        """Label maps at model resolution for all frames, and the raw outputs of the first `keep_outputs`."""
        with self._runner(model, exact_qdq) as runner:
            return predict(runner, (f.read() for f in self.frames), at_frame_size=False, keep_outputs=keep_outputs)

    def labels(self, model, frames, exact_qdq: bool | None = None) -> list[np.ndarray]:
        """Label maps at model resolution of `model` (a file or in-memory candidate) on other BGR frames (the
        TC gate's clips), run as the gate runs candidates (`exact_qdq` None) or as given (False: the FP32 parent)."""
        exact = self.exact_qdq if exact_qdq is None else exact_qdq
        with self._runner(model, exact) as runner:
            return predict(runner, frames, at_frame_size=False).labels

    def gate(self, qdq_path, threshold: float) -> GateResult:
        """Judge a Q/DQ model (a file or an in-memory `onnx.ModelProto`) against the FP32 predictions."""
        preds = self._predict(qdq_path, exact_qdq=self.exact_qdq).labels
        agree = agreement(preds, self._fp32_preds).percent
        if not self.labelled:
            drop = 100.0 - agree
            return GateResult(drop <= threshold, threshold, "disagreement", drop, agree, len(preds))
        cm32, cm8 = self._confusion(self._fp32_preds), self._confusion(preds)
        iou32, iou8 = cm32.iou() * 100.0, cm8.iou() * 100.0
        miou32, miou8 = float(np.nanmean(iou32)), float(np.nanmean(iou8))
        drop = miou32 - miou8
        per_class = {
            n: round(float(a - b), 4)
            for n, a, b in zip(self.class_names, iou32, iou8)
            if np.isfinite(a) and np.isfinite(b)
        }
        return GateResult(
            drop <= threshold,
            threshold,
            "miou_drop",
            drop,
            agree,
            len(preds),
            round(miou32, 4),
            round(miou8, 4),
            per_class,
        )

    def _confusion(self, preds: list[np.ndarray]) -> ConfusionMatrix:
        cm = ConfusionMatrix(len(self.class_names))
        for frame, pred in zip(self.frames, preds):
            label = frame.read_label()
            cm.update(labels_to_frame_size(pred, label.shape[:2]), label, where=frame.key)
        return cm

    def output_error(self, qdq_model, num_frames: int) -> float:
        """Noise-to-signal of the outputs on the first frames: Σ(q − f)² / Σf² for logits, else disagreement.

        Uses at most the `error_frames` whose FP32 outputs were kept (raw logits are large at full size).
        `qdq_model` is a file or an in-memory `onnx.ModelProto`.
        """
        k = max(1, min(num_frames, len(self._fp32_raw)))
        with self._runner(qdq_model, self.exact_qdq) as runner:
            outs = predict(runner, (f.read() for f in self.frames[:k]), at_frame_size=False, keep_outputs=k).outputs
        return compare_outputs(outs, self._fp32_raw[:k], runner.output_kind).noise_to_signal
