"""Export presets: a frozen `ExportPreset` loaded from YAML (export/*.yaml); CLI flags override it.

A preset says how a checkpoint becomes an ONNX file: opset, input size, batch, input dtype/layout,
whether ArgMax goes into the graph, which exporter, and the parity check's frames and tolerances.

`frame_size` puts the whole preprocessing into the graph: it takes the camera's BGR uint8 frames of that size
as they are (resize to the model's size, channel order and normalisation inside), so a TensorRT engine built
from it consumes camera frames directly and the host only copies them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..core.config import from_dict, load_config, to_dict
from ..core.errors import VssegError

MIN_OPSET = 17
ARGMAX_KINDS = ("none", "uint8", "int32")
EXPORTERS = ("dynamo", "torchscript")


@dataclass(frozen=True)
class ExportPreset:
    """Everything `export_onnx` needs besides the model; the resolved preset is stored in the manifest."""

    opset: int = 17
    size: tuple[int, int] | None = None  # (H, W); None → the checkpoint's preprocessing size
    dynamic_batch: bool = False
    uint8_input: bool = False  # uint8 NHWC input, normalisation inside the graph
    frame_size: tuple[int, int] | None = None  # (H, W): the graph takes BGR camera frames of this size as they are
    argmax: str = "none"  # "none" (logits) | "uint8" | "int32" (label map "labels")
    simplify: bool = True  # run onnxsim
    exporter: str = "dynamo"  # "dynamo" (torch.export) | "torchscript" (legacy, for comparison)
    static_pools: bool = True  # replace nn.AdaptiveAvgPool2d by AvgPool / constant MatMuls at the export size
    parity_frames: str | None = None  # image folder or dataset root; None → synthetic smooth frames
    parity_count: int = 4  # frames used by the parity check
    max_abs_logit: float = 1e-3  # FP32 tolerance on |torch − onnxruntime| logits
    min_argmax_agreement: float = 0.999  # fraction of pixels whose argmax must agree

    def __post_init__(self):
        checks = [
            (self.opset >= MIN_OPSET, f"opset must be {MIN_OPSET} or later, got {self.opset}"),
            (self.argmax in ARGMAX_KINDS, f"argmax must be one of {ARGMAX_KINDS}, got {self.argmax!r}"),
            (self.exporter in EXPORTERS, f"exporter must be one of {EXPORTERS}, got {self.exporter!r}"),
            (
                self.size is None or (len(self.size) == 2 and min(self.size) > 0),
                f"size must be [H, W] with positive values, got {self.size}",
            ),
            (
                self.frame_size is None or (len(self.frame_size) == 2 and min(self.frame_size) > 0),
                f"frame_size must be [H, W] with positive values, got {self.frame_size}",
            ),
            (
                self.frame_size is None or self.uint8_input,
                "frame_size needs uint8_input: the graph takes the camera's uint8 frames (--uint8-input)",
            ),
            (self.parity_count >= 1, f"parity_count must be at least 1, got {self.parity_count}"),
            (self.max_abs_logit > 0, f"max_abs_logit must be positive, got {self.max_abs_logit}"),
            (
                0 < self.min_argmax_agreement <= 1,
                f"min_argmax_agreement must be in (0, 1], got {self.min_argmax_agreement}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise VssegError(f"export preset: {msg}")

    @property
    def output(self) -> str:
        """The graph's output kind, as the manifest names it."""
        return "logits" if self.argmax == "none" else "labels"

    def to_dict(self) -> dict:
        return to_dict(self)


def load_preset(path: str | Path | None = None, **overrides) -> ExportPreset:
    """The preset at `path` (or the defaults), with every override that is not None applied on top."""
    where = str(path) if path else "export preset"
    changes = {k: v for k, v in overrides.items() if v is not None}
    valid = {f.name for f in dataclasses.fields(ExportPreset)}
    if set(changes) - valid:
        raise ValueError(f"unknown export preset override(s) {sorted(set(changes) - valid)}")
    try:
        preset = load_config(ExportPreset, path)
        if path and preset.parity_frames and not Path(preset.parity_frames).is_absolute():
            # paths in a config are relative to the file that names them
            preset = dataclasses.replace(preset, parity_frames=str(Path(path).parent / preset.parity_frames))
        return from_dict(ExportPreset, {**preset.to_dict(), **changes}, where) if changes else preset
    except VssegError as exc:
        msg = str(exc)
        raise VssegError(msg if msg.startswith(where) else f"{where}: {msg}") from None
