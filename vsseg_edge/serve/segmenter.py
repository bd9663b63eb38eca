"""Raw camera frames in, label maps out: what the served model computes, without Triton.

    frames  N×H×W×3 uint8, BGR (as OpenCV and most camera SDKs give them), any H×W
      └─► core.preprocess (the artifact's own spec, from its manifest: resize, colour order, mean/std, layout)
          └─► backend.infer in chunks of at most backend.max_batch ─► backend.to_labels
              └─► labels_to_frame_size (nearest neighbour)
    labels  N×H×W uint8 class ids, at the frames' size

So a client sends what its camera gives and gets labels for that image, exactly what `vsseg-edge run
--save-masks` writes for the same frame; the preprocessing comes from the artifact, the client never repeats it.
One request holds frames of one size (Triton batches only requests of equal shape together). A model whose
preprocessing does not resize (`resize: none`) takes only frames of its input size (one-line error otherwise).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import VssegError
from ..core.preprocess import labels_to_frame_size, preprocess_batch


def check_frames(frames) -> np.ndarray:
    """Refuse, in one line, anything but a non-empty N×H×W×3 uint8 array."""
    if not isinstance(frames, np.ndarray):
        raise VssegError(f"frames: expected a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise VssegError(f"frames: expected N×H×W×3 uint8 BGR (N, H, W ≥ 1), got {frames.dtype} {frames.shape}")
    return frames


class FrameSegmenter:
    """frames → labels through one backend (see the module docstring); one per model instance, not shared."""

    def __init__(self, backend):
        self.backend = backend

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = check_frames(frames)
        be, hw = self.backend, frames.shape[1:3]
        step = be.max_batch or len(frames)
        out = []
        for i in range(0, len(frames), step):
            labels = be.to_labels(be.infer(preprocess_batch(list(frames[i : i + step]), be.preprocess_spec)))
            out.extend(labels_to_frame_size(lab, hw) for lab in labels)
        return np.ascontiguousarray(np.stack(out))
