"""The one preprocessing implementation.

Evaluation, calibration, training and every runtime backend turn a camera frame into model input
through `preprocess`. Its parameters (`PreprocessSpec`) are written into every manifest, and a backend
refuses input prepared differently from what its artifact was built with (`PreprocessSpec.require_same`).

Frames enter as OpenCV gives them: BGR uint8 HxWx3. The model input is
    x = ((frame[..., order] - mean) / std) * scale,    laid out NCHW or NHWC, float32,
or, for models with normalisation inside the graph (`dtype="uint8"`), the resized frame in `order`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Sequence

import numpy as np

from .errors import VssegError

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)

_INTERPOLATIONS = ("linear", "area", "nearest")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a BGR uint8 frame becomes model input. mean/std are in pixel units (0–255), in `channel_order`."""

    height: int = 256
    width: int = 512
    channel_order: str = "rgb"  # "rgb" | "bgr": the order of the channels the model sees
    mean: tuple[float, float, float] = IMAGENET_MEAN_RGB
    std: tuple[float, float, float] = IMAGENET_STD_RGB
    scale: float = 1.0  # applied after (x - mean) / std; ESPNet's published weights want 1/255
    resize: str = "stretch"  # "stretch" to height×width | "none": frames must already be height×width
    interpolation: str = "linear"  # "linear" | "area" | "nearest"
    layout: str = "nchw"  # "nchw" | "nhwc"
    dtype: str = "float32"  # "float32" | "uint8" (raw pixels; the graph normalises)

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        checks = [
            (self.height > 0 and self.width > 0, f"height/width must be positive, got {self.height}x{self.width}"),
            (self.channel_order in ("rgb", "bgr"), f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}"),
            (len(self.mean) == 3 and len(self.std) == 3, "mean and std need 3 values each"),
            (all(s > 0 for s in self.std), f"std values must be positive, got {self.std}"),
            (self.resize in ("stretch", "none"), f"resize must be 'stretch' or 'none', got {self.resize!r}"),
            (self.interpolation in _INTERPOLATIONS, f"interpolation must be one of {_INTERPOLATIONS}"),
            (self.layout in ("nchw", "nhwc"), f"layout must be 'nchw' or 'nhwc', got {self.layout!r}"),
            (self.dtype in ("float32", "uint8"), f"dtype must be 'float32' or 'uint8', got {self.dtype!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise VssegError(f"preprocessing: {msg}")

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        if self.layout == "nchw":
            return (batch, 3, self.height, self.width)
        return (batch, self.height, self.width, 3)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "preprocessing") -> PreprocessSpec:
        """Build from a manifest's or a config's mapping; a key of the wrong type is one line naming it."""
        if not isinstance(d, dict):
            raise VssegError(f"{where}: expected a mapping, got {d!r}"[:300])
        valid = {f.name for f in fields(cls)}
        unknown = set(d) - valid
        if unknown:
            raise VssegError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(valid)}")
        for key, value in d.items():
            ok, what = _FIELD_TYPES[key]
            if not ok(value):
                raise VssegError(f"{where}.{key}: expected {what}, got {value!r}"[:300])
        return cls(**d)

    def replace(self, **changes) -> PreprocessSpec:
        return PreprocessSpec.from_dict({**self.to_dict(), **changes})

    def require_same(self, other: PreprocessSpec, artifact: str) -> None:
        """Refuse input prepared differently from what `artifact` was built with."""
        a, b = self.to_dict(), other.to_dict()
        diff = [k for k in a if not _close(a[k], b[k])]
        if diff:
            detail = ", ".join(f"{k}: {b[k]!r} (artifact expects {a[k]!r})" for k in diff)
            raise VssegError(f"{artifact}: preprocessing differs from the one it was built with: {detail}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _triple(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(_number(x) for x in v)


_FIELD_TYPES = {
    "height": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "width": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "channel_order": (lambda v: isinstance(v, str), "'rgb' or 'bgr'"),
    "mean": (_triple, "3 numbers"),
    "std": (_triple, "3 numbers"),
    "scale": (_number, "a number"),
    "resize": (lambda v: isinstance(v, str), "'stretch' or 'none'"),
    "interpolation": (lambda v: isinstance(v, str), f"one of {_INTERPOLATIONS}"),
    "layout": (lambda v: isinstance(v, str), "'nchw' or 'nhwc'"),
    "dtype": (lambda v: isinstance(v, str), "'float32' or 'uint8'"),
}


def _close(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
    return a == b


def _cv2_interp(name: str) -> int:
    import cv2

    return {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}[name]


def resize_frame(frame: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resize a BGR frame to the spec's size (or check it already has it)."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise VssegError(f"frame: expected a BGR uint8 HxWx3 image, got {frame.dtype} {frame.shape}")
    if frame.shape[:2] == spec.size:
        return frame
    if spec.resize == "none":
        raise VssegError(
            f"frame: is {frame.shape[0]}x{frame.shape[1]}, the model takes {spec.height}x{spec.width} and its "
            "preprocessing does not resize"
        )
    import cv2

    return cv2.resize(frame, (spec.width, spec.height), interpolation=_cv2_interp(spec.interpolation))


def normalize(image_bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """BGR uint8 HxWx3 (any size) → float32 CxHxW in the model's channel order and normalisation.

    Training calls this on augmented crops; `preprocess` calls it after resizing.
    """
    img = image_bgr[..., ::-1] if spec.channel_order == "rgb" else image_bgr
    mean = np.asarray(spec.mean, np.float32)
    inv = np.asarray([spec.scale / s for s in spec.std], np.float32)
    out = (img.astype(np.float32) - mean) * inv
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def preprocess(frame_bgr: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """One BGR uint8 frame → a batch of one model input, exactly as `spec` says."""
    return preprocess_batch([frame_bgr], spec)


def preprocess_batch(frames_bgr: Sequence[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    out = []
    for frame in frames_bgr:
        img = resize_frame(frame, spec)
        if spec.dtype == "uint8":
            img = img[..., ::-1] if spec.channel_order == "rgb" else img
            out.append(img if spec.layout == "nhwc" else img.transpose(2, 0, 1))
        else:
            chw = normalize(img, spec)
            out.append(chw if spec.layout == "nchw" else chw.transpose(1, 2, 0))
    return np.ascontiguousarray(np.stack(out))


def labels_to_frame_size(labels: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Model-resolution label map → the frame's size, nearest neighbour (class ids are not interpolated)."""
    if labels.shape[:2] == tuple(frame_hw):
        return labels
    import cv2

    return cv2.resize(labels, (frame_hw[1], frame_hw[0]), interpolation=cv2.INTER_NEAREST)


def labels_from_output(output: np.ndarray, kind: str) -> np.ndarray:
    """A model's output → uint8 label maps N×H×W: the argmax over the class axis of N×C×H×W logits
    (`kind="logits"`), or an in-graph label map (N×H×W or N×1×H×W, `kind="labels"`) as uint8.

    The one logits → labels of the project: backends, the accuracy gate, parity and bench all call it.
    """
    output = np.asarray(output)
    if kind == "logits":
        if output.ndim != 4:
            raise VssegError(f"model output: logits must be N×C×H×W, got shape {output.shape}")
        return np.argmax(output, axis=1).astype(np.uint8)
    if kind != "labels":
        raise VssegError(f"model output kind {kind!r}: expected 'logits' or 'labels'")
    if output.ndim == 4 and output.shape[1] == 1:
        output = output[:, 0]
    if output.ndim != 3:
        raise VssegError(f"model output: labels must be N×H×W or N×1×H×W, got shape {output.shape}")
    return output.astype(np.uint8, copy=False)
