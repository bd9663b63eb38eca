"""Parity of an exported ONNX file with the torch model it came from, measured with onnxruntime.

Both sides are runners of the measurement core and see the same frames through the ONE preprocessing:
the torch runner (logits, FP32, CPU) gets the float NCHW input of the checkpoint's spec, the onnxruntime
runner the input of the exported spec (float, or raw uint8 NHWC pixels that the graph normalises itself).
Figures (`measure.compare.compare_outputs`): max and mean |Δlogit| (logit outputs only) and the fraction of
pixels whose argmax agrees.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.errors import VssegError
from ..core.preprocess import PreprocessSpec

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
        logit = (
            ""
            if self.max_abs_logit is None
            else f"max |Δlogit| {self.max_abs_logit:.2e} "
            f"(limit {self.max_abs_logit_limit:.0e}; logits up to {self.ref_abs_max:.3g}), "
        )
        return (
            f"{logit}argmax agreement {100 * self.argmax_agreement:.3f} % "
            f"(limit {100 * self.min_argmax_agreement:.1f} %) on {self.num_frames} {self.frames} frames"
        )

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

    `source` is anything `data.frame_source` opens (a dataset root's val split, a folder of images, a video);
    None gives synthetic smooth frames of the export size.
    """
    if source is None:
        return synthetic_frames(count, hw), f"synthetic-smooth(seed={SYNTHETIC_SEED})"
    from ..data.datasets import sample_frames
    from ..data.frame_source import open_frame_source

    ds = open_frame_source(Path(source), "val", flag="--parity-frames")
    refs = sample_frames(ds, count, seed=SYNTHETIC_SEED)
    if not refs:
        raise VssegError(f"{source}: no frames for the parity check")
    return [ds.read_image(r) for r in refs], str(source)


def onnx_outputs(
    path: str | Path,
    frames: list[np.ndarray],
    spec: PreprocessSpec,
    output: str,
    batched: bool,
    exact_qdq: bool = False,
) -> list[np.ndarray]:
    """The exported graph's output for each frame (all frames in one batch when `batched`, else one by one).

    The file has no manifest yet (it is still being written), so the export's own spec describes it. With
    `exact_qdq` its Q/DQ nodes compute as written (a QAT export's reference: what torch's fake INT8 trained).
    """
    from ..core.preprocess import preprocess_batch
    from ..measure.prediction import run_frame
    from ..runtime.backends import open_backend

    with open_backend(
        Path(path).read_bytes(),
        spec=spec,
        output_kind=output,
        name=str(path),
        providers=["CPUExecutionProvider"],
        threads=min(4, os.cpu_count() or 1),
        exact_qdq=exact_qdq,
    ) as runner:
        if batched:
            out = runner.infer(preprocess_batch(frames, spec))
            return [out[i : i + 1] for i in range(len(frames))]
        return [run_frame(runner, f) for f in frames]


def torch_logits(model, frames: list[np.ndarray], spec: PreprocessSpec) -> list[np.ndarray]:
    """The torch model's logits for each frame, prepared as float NCHW by the one preprocessing (FP32, CPU)."""
    from ..measure.prediction import run_frame
    from ..runtime.backends.torch_backend import TorchBackend

    ref_spec = spec.replace(dtype="float32", layout="nchw")
    with TorchBackend(
        model, preprocess_spec=ref_spec, device="cpu", fp16=False, channels_last=False, logits=True, classes=()
    ) as runner:
        return [run_frame(runner, f) for f in frames]


def check_parity(
    onnx_path,
    model,
    frames: list[np.ndarray],
    frames_desc: str,
    *,
    model_spec: PreprocessSpec,
    onnx_spec: PreprocessSpec,
    output: str,
    batched: bool,
    max_abs_logit: float,
    min_argmax_agreement: float,
    exact_qdq: bool = False,
) -> ParityReport:
    """Measure torch vs onnxruntime on `frames`; the caller decides what a failed report means."""
    from ..measure.compare import compare_outputs

    ref = torch_logits(model, frames, model_spec)
    out = onnx_outputs(onnx_path, frames, onnx_spec, output, batched, exact_qdq)
    cmp = compare_outputs(out, ref, output, "logits")
    return ParityReport(
        frames=frames_desc,
        num_frames=len(frames),
        max_abs_logit=cmp.max_abs,
        mean_abs_logit=cmp.mean_abs,
        argmax_agreement=cmp.agreement.fraction,
        ref_abs_max=cmp.ref_abs_max,
        max_abs_logit_limit=max_abs_logit,
        min_argmax_agreement=min_argmax_agreement,
    )
