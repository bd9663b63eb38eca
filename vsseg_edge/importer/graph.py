"""What a foreign model's input and output tell, and the preprocessing spec built from them and the user's flags.

ONNX graphs (through onnxruntime) and TensorRT engines describe their tensors alike: a name, a shape whose
dimensions are numbers or unknown (dynamic), and an element type. From that:

- the input must be one image: rank 4, three channels at axis 1 (NCHW) or axis 3 (NHWC), batch 1 or
  dynamic, float32 (normalised by the host) or uint8 (raw pixels, the graph normalises);
- the output (the first, as the backends read it) is logits N×C×H×W (float, C = the number of classes)
  or labels N×H×W / N×1×H×W (an integer type); an N×H×W×C float output is named as such and refused;
- the input size is the graph's when static (`--size` may only repeat it) and `--size` when dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import VssegError
from ..core.preprocess import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, PreprocessSpec, labels_from_output

FLOAT_TYPES = ("float32", "float16", "float64", "bfloat16")
INT_TYPES = ("uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64")


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output: name, shape (None for a dynamic dimension) and numpy-style type name."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": [d if d is not None else "?" for d in self.shape], "dtype": self.dtype}


@dataclass(frozen=True)
class InputLayout:
    layout: str  # nchw | nhwc
    dtype: str  # float32 | uint8
    hw: tuple[int, int] | None  # static H, W of the graph, or None when dynamic


def read_input(inputs: list[TensorInfo], where: str) -> InputLayout:
    """The one image input's layout, type and (static) size, or a one-line refusal."""
    if len(inputs) != 1:
        names = ", ".join(t.name for t in inputs)
        raise VssegError(f"{where}: expected one image input, the model has {len(inputs)} ({names})")
    t = inputs[0]
    if len(t.shape) != 4:
        raise VssegError(
            f"{where}: input {t.name!r} has shape {list(t.shape)}; expected an image batch of rank 4 "
            "(N×3×H×W or N×H×W×3)"
        )
    if t.shape[0] not in (1, None):
        raise VssegError(f"{where}: input {t.name!r} has batch {t.shape[0]}; vsseg-edge runs batch 1 (or dynamic)")
    if t.shape[1] == 3 and t.shape[3] != 3:
        layout, hw = "nchw", t.shape[2:4]
    elif t.shape[3] == 3 and t.shape[1] != 3:
        layout, hw = "nhwc", t.shape[1:3]
    elif t.shape[1] == 3 and t.shape[3] == 3:
        raise VssegError(
            f"{where}: input {t.name!r} shape {list(t.shape)} is ambiguous (3 at axes 1 and 3); "
            "give --layout nchw or nhwc"
        )
    else:
        raise VssegError(
            f"{where}: input {t.name!r} shape {list(t.shape)} has no 3-channel axis (expected "
            "N×3×H×W or N×H×W×3, a colour image)"
        )
    if t.dtype not in ("float32", "uint8"):
        raise VssegError(
            f"{where}: input {t.name!r} is {t.dtype}; vsseg-edge feeds float32 (normalised on the host) "
            "or uint8 (raw pixels); re-export the model with one of those"
        )
    static = all(isinstance(d, int) for d in hw)
    return InputLayout(layout, t.dtype, (int(hw[0]), int(hw[1])) if static else None)


def read_output(outputs: list[TensorInfo], num_classes: int, where: str) -> str:
    """'logits' or 'labels' from the first output's rank and type, checked against the number of classes."""
    if not outputs:
        raise VssegError(f"{where}: the model has no output")
    t = outputs[0]
    rank = len(t.shape)
    if t.dtype in FLOAT_TYPES and rank == 4:
        c = t.shape[1]
        if isinstance(c, int) and c != num_classes:
            if t.shape[3] == num_classes:
                raise VssegError(
                    f"{where}: output {t.name!r} {list(t.shape)} looks like N×H×W×C logits; vsseg-edge "
                    "reads N×C×H×W (add a Transpose to the graph, or export it channels-first)"
                )
            raise VssegError(
                f"{where}: output {t.name!r} has {c} channels, the classes are {num_classes}; give the "
                "class file of this model (one name per output channel)"
            )
        return "logits"
    if t.dtype in INT_TYPES and (rank == 3 or (rank == 4 and t.shape[1] == 1)):
        return "labels"
    raise VssegError(
        f"{where}: output {t.name!r} is {t.dtype} {list(t.shape)}; expected logits (float N×C×H×W) or "
        "labels (integer N×H×W or N×1×H×W)"
    )


def parse_triplet(text: str | None, flag: str) -> tuple[float, float, float] | None:
    """'123.7,116.3,103.5' → three floats, or a one-line error naming the flag."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise VssegError(
            f"{flag} {text}: expected three comma-separated numbers (pixel units 0-255, in the "
            "model's channel order), e.g. 123.675,116.28,103.53"
        )
    return values  # type: ignore[return-value]


def parse_scale(text: str | float | None) -> float:
    """'0.00392' or '1/255' → float (applied after (x - mean) / std)."""
    if text is None:
        return 1.0
    try:
        if isinstance(text, str) and "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise VssegError(f"--scale {text}: expected a number such as 1/255 or 0.0039") from None
    if not value > 0:
        raise VssegError(f"--scale {text}: expected a positive number")
    return value


def build_spec(
    inp: InputLayout,
    *,
    size: tuple[int, int] | None,
    mean=None,
    std=None,
    bgr: bool = False,
    scale: float = 1.0,
    uint8_input: bool | None = None,
    where: str,
) -> PreprocessSpec:
    """The preprocessing the model gets: layout and type from the graph, size from the graph or --size,
    normalisation from the flags (ImageNet mean/std in RGB when not given)."""
    if uint8_input is not None and uint8_input != (inp.dtype == "uint8"):
        raise VssegError(
            f"{where}: --uint8-input says the model takes {'uint8' if uint8_input else 'float32'}, "
            f"its input is {inp.dtype}"
        )
    if inp.hw is not None and size is not None and tuple(size) != inp.hw:
        raise VssegError(
            f"{where}: --size {size[0]}x{size[1]} differs from the model's fixed input {inp.hw[0]}x{inp.hw[1]}"
        )
    hw = inp.hw or size
    if hw is None:
        raise VssegError(f"{where}: the model's input size is dynamic; give --size HxW (the size to run it at)")
    if inp.dtype == "uint8" and (mean is not None or std is not None or scale != 1.0):
        raise VssegError(
            f"{where}: the model takes uint8 pixels and normalises inside; --mean/--std/--scale do not apply"
        )
    order = "bgr" if bgr else "rgb"
    default_mean, default_std = IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
    if bgr:
        default_mean, default_std = default_mean[::-1], default_std[::-1]
    return PreprocessSpec(
        height=int(hw[0]),
        width=int(hw[1]),
        channel_order=order,
        mean=tuple(mean) if mean is not None else default_mean,
        std=tuple(std) if std is not None else default_std,
        scale=scale,
        layout=inp.layout,
        dtype=inp.dtype,
    )


def smoke_frame(hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A BGR test frame with structure (sky/road bands, a box, noise), not all zeros: a model that gives NaN or
    only one value on it is worth a look."""
    h, w = hw
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (200, 150, 90)
    img[h // 2 :] = (90, 90, 90)
    img[h // 3 : h // 3 + max(h // 5, 1), w // 3 : w // 3 + max(w // 4, 1)] = (40, 40, 200)
    return np.clip(img.astype(np.int16) + rng.integers(-15, 16, img.shape), 0, 255).astype(np.uint8)


def check_output(out: np.ndarray, kind: str, num_classes: int, where: str) -> dict:
    """Check one smoke-run output against the classes; return what it showed (shape, classes seen)."""
    out = np.asarray(out)
    if kind == "logits":
        if out.ndim != 4 or out.shape[1] != num_classes:
            raise VssegError(f"{where}: the smoke run gave logits {list(out.shape)}, expected N×{num_classes}×H×W")
        if not np.isfinite(out).all():
            raise VssegError(f"{where}: the smoke run gave NaN/Inf logits (wrong normalisation, or a broken model)")
        labels = labels_from_output(out, "logits")
    else:
        labels = out[:, 0] if out.ndim == 4 else out
        bad = np.unique(labels[(labels >= num_classes) & (labels != 255)])
        if bad.size:
            raise VssegError(
                f"{where}: the smoke run predicted class id(s) {bad[:5].tolist()}, the class file has "
                f"{num_classes} classes (0..{num_classes - 1})"
            )
    return {"output_shape": list(out.shape), "classes_seen": int(len(np.unique(labels)))}
