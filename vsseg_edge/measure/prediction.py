"""A runner over BGR frames: raw outputs and label maps, through the one preprocessing and the one argmax.

The per-frame path is always the same three steps, whoever measures:

    preprocess_batch(frame, runner.preprocess_spec) → runner.infer → labels_from_output (→ frame size)

`end_to_end` is that path for one frame (what a camera loop does, and what `bench` times end to end);
`predict` runs it over many frames and can keep the raw outputs of the first few (the gate's output error,
export parity's logit differences). Frames may be any iterable of BGR uint8 arrays, so a caller with lazy
readers never holds all frames in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..core.preprocess import labels_to_frame_size, preprocess_batch

STAGES = ("preprocess", "infer", "postprocess")


def run_frame(runner, frame_bgr: np.ndarray) -> np.ndarray:
    """The runner's raw output for one frame (batch of one): logits N×C×H×W or labels, as the runner gives."""
    return runner.infer(preprocess_batch([frame_bgr], runner.preprocess_spec))


def end_to_end(
    runner,
    frame_bgr: np.ndarray,
    *,
    at_frame_size: bool = True,
    stages: list | None = None,
    clock: Callable[[], float] | None = None,
) -> np.ndarray:
    """BGR frame → uint8 label map, at the frame's size (default) or the model's.

    With `stages` (a list) and `clock`, appends the (preprocess, infer, postprocess) durations in ms.
    """
    t0 = clock() if stages is not None else 0.0
    batch = preprocess_batch([frame_bgr], runner.preprocess_spec)
    t1 = clock() if stages is not None else 0.0
    out = runner.infer(batch)
    t2 = clock() if stages is not None else 0.0
    labels = runner.to_labels(out)[0]
    if at_frame_size:
        labels = labels_to_frame_size(labels, frame_bgr.shape[:2])
    if stages is not None:
        stages.append(((t1 - t0) * 1e3, (t2 - t1) * 1e3, (clock() - t2) * 1e3))
    return labels


@dataclass
class Predictions:
    """Label maps of every frame, and the raw outputs of the first `keep_outputs` frames."""

    labels: list[np.ndarray] = field(default_factory=list)
    outputs: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def predict(runner, frames: Iterable[np.ndarray], *, at_frame_size: bool = True, keep_outputs: int = 0) -> Predictions:
    """Run `runner` on every frame; label maps at the frame's (or the model's) size, raw outputs of the first
    `keep_outputs` frames."""
    out = Predictions()
    for i, frame in enumerate(frames):
        raw = run_frame(runner, frame)
        labels = runner.to_labels(raw)[0]
        out.labels.append(labels_to_frame_size(labels, frame.shape[:2]) if at_frame_size else labels)
        if i < keep_outputs:
            out.outputs.append(raw)
    return out
