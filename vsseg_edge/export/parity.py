"""Parity of an exported ONNX file with the torch model it came from, measured with onnxruntime.

Both sides see the same frames through the ONE preprocessing (`core.preprocess.preprocess`): torch gets
the float NCHW input of the checkpoint's spec, onnxruntime gets the input of the exported spec (float, or
raw uint8 NHWC pixels that the graph normalises itself). Figures: max and mean |Δlogit| (logit outputs
only) and the fraction of pixels whose argmax agrees.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.errors import VssegError
from ..core.preprocess import PreprocessSpec, preprocess_batch

SYNTHETIC_SEED = 0


@dataclass(frozen=True)
class ParityReport:
    """What the parity check measured and whether it passed its thresholds."""

    frames: str  # where the frames came from: "synthetic-smooth(seed=0)" or the folder
    num_frames: int
    max_abs_logit: float | None  # None when the graph outputs labels
    mean_abs_logit: float | None
    argmax_agreement: float
    ref_abs_max: float  # largest |logit| torch produced: the scale the differences compare with
    max_abs_logit_limit: float
    min_argmax_agreement: float

    @property
    def passed(self) -> bool:
        logits_ok = self.max_abs_logit is None or self.max_abs_logit <= self.max_abs_logit_limit
        return logits_ok and self.argmax_agreement >= self.min_argmax_agreement

    def describe(self) -> str:
        logit = "" if self.max_abs_logit is None else f"max |Δlogit| {self.max_abs_logit:.2e} " \
            f"(limit {self.max_abs_logit_limit:.0e}; logits up to {self.ref_abs_max:.3g}), "
        return (f"{logit}argmax agreement {100 * self.argmax_agreement:.3f} % "
                f"(limit {100 * self.min_argmax_agreement:.1f} %) on {self.num_frames} {self.frames} frames")

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def synthetic_frames(count: int, hw: tuple[int, int], seed: int = SYNTHETIC_SEED) -> list[np.ndarray]:
    """Deterministic random smooth BGR frames: coarse colour noise upsampled bilinearly, plus fine detail."""
    import cv2

    h, w = hw
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, size=(max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
        img += rng.normal(0, 8, size=(h, w, 3)).astype(np.float32)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def load_frames(source: str | Path | None, count: int, hw: tuple[int, int]) -> tuple[list[np.ndarray], str]:
    """`count` frames for the parity check and a description of where they came from.

    `source` is a folder of images or a dataset root (any layout `data.open_dataset` knows; the val split);
    None gives synthetic smooth frames of the export size.
    """
    if source is None:
        return synthetic_frames(count, hw), f"synthetic-smooth(seed={SYNTHETIC_SEED})"
    from ..data.datasets import open_dataset, sample_frames

    ds = open_dataset(Path(source), split="val")
    refs = sample_frames(ds, count, seed=SYNTHETIC_SEED)
    if not refs:
        raise VssegError(f"{source}: no frames for the parity check")
    return [ds.read_image(r) for r in refs], str(source)


def run_onnx(path: str | Path, inputs: np.ndarray, batched: bool, exact_qdq: bool = False) -> np.ndarray:
    """Run the graph's single output over `inputs` (all at once when `batched`, else one by one); with
    `exact_qdq`, without graph optimisation, so Q/DQ nodes compute as written (a QAT export's reference)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if exact_qdq:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    if batched:
        return sess.run(None, {name: inputs})[0]
    return np.concatenate([sess.run(None, {name: inputs[i:i + 1]})[0] for i in range(len(inputs))])


def torch_logits(model, frames: list[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """The torch model's logits on `frames`, prepared as float NCHW by the one preprocessing."""
    import torch

    ref_spec = spec.replace(dtype="float32", layout="nchw")
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(preprocess_batch([f], ref_spec))).numpy() for f in frames])


def compare(ref_logits: np.ndarray, onnx_out: np.ndarray, output: str) -> dict:
    """Figures for one comparison: logits against logits, or reference argmax against output labels."""
    ref_labels = np.argmax(ref_logits, axis=1)
    if output == "labels":
        if onnx_out.shape != ref_labels.shape:
            raise VssegError(f"exported labels have shape {onnx_out.shape}, torch gives {ref_labels.shape}")
        return {"max_abs_logit": None, "mean_abs_logit": None, "ref_abs_max": float(np.abs(ref_logits).max()),
                "argmax_agreement": float(np.mean(onnx_out.astype(np.int64) == ref_labels))}
    if onnx_out.shape != ref_logits.shape:
        raise VssegError(f"exported logits have shape {onnx_out.shape}, torch gives {ref_logits.shape}")
    diff = np.abs(onnx_out.astype(np.float64) - ref_logits)
    return {"max_abs_logit": float(diff.max()), "mean_abs_logit": float(diff.mean()),
            "ref_abs_max": float(np.abs(ref_logits).max()),
            "argmax_agreement": float(np.mean(np.argmax(onnx_out, axis=1) == ref_labels))}


def check_parity(onnx_path, model, frames: list[np.ndarray], frames_desc: str, *, model_spec: PreprocessSpec,
                 onnx_spec: PreprocessSpec, output: str, batched: bool, max_abs_logit: float,
                 min_argmax_agreement: float, exact_qdq: bool = False) -> ParityReport:
    """Measure torch vs onnxruntime on `frames`; the caller decides what a failed report means."""
    ref = torch_logits(model, frames, model_spec.replace(height=onnx_spec.height, width=onnx_spec.width))
    out = run_onnx(onnx_path, preprocess_batch(frames, onnx_spec), batched, exact_qdq)
    figures = compare(ref, out, output)
    return ParityReport(frames=frames_desc, num_frames=len(frames), max_abs_logit_limit=max_abs_logit,
                        min_argmax_agreement=min_argmax_agreement, **figures)

