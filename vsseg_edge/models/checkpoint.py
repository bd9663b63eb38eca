"""vsseg-edge checkpoints: a state dict plus everything needed to rebuild and use the model.

A checkpoint is a plain dict of tensors and primitive values, loaded with `weights_only=True`:

    format "vsseg-edge-checkpoint", version, model (registry name), model_kwargs, num_classes,
    classes, palette (optional: RGB per class), preprocess (PreprocessSpec dict), config (resolved training
    config), metrics, step, state_dict, optionally the trainer's resume state under "train_state", and for a
    model trained with fake INT8 (QAT) its placement under "quantization" (`train.quant`), re-applied before
    the weights load.

Every checkpoint gets a sidecar manifest `<ckpt>.json` (kind "checkpoint").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import VssegError
from ..core.fileio import ErrorKeepingWriter, atomic_path
from ..core.manifest import write_manifest
from ..core.preprocess import PreprocessSpec

FORMAT = "vsseg-edge-checkpoint"
VERSION = 1


def save_checkpoint(
    path: str | Path,
    model,
    *,
    model_name: str,
    classes: list[str],
    preprocess: PreprocessSpec,
    palette: list | None = None,
    model_kwargs: dict | None = None,
    config: dict | None = None,
    metrics: dict | None = None,
    step: int = 0,
    train_state: dict | None = None,
    parent: str | Path | None = None,
    quantization: dict | None = None,
) -> dict:
    """Write a checkpoint atomically with its manifest; return the checkpoint dict (without tensors copied)."""
    import torch

    model = getattr(model, "module", model)  # unwrap DDP
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_name,
        "model_kwargs": dict(model_kwargs or {}),
        "num_classes": len(classes),
        "classes": list(classes),
        **({"palette": [list(c) for c in palette]} if palette is not None else {}),
        "preprocess": preprocess.to_dict(),
        "config": config or {},
        "metrics": metrics or {},
        "step": int(step),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if train_state is not None:
        ckpt["train_state"] = train_state
    if quantization is not None:
        ckpt["quantization"] = dict(quantization)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            out = ErrorKeepingWriter(fh)
            try:
                torch.save(ckpt, out)
            except RuntimeError:  # torch reports a failed write (a full disk) as its own RuntimeError
                out.raise_kept()
                raise
        # the manifest first, then the rename: a full disk keeps the previous checkpoint and its manifest
        extra = {"quantization": dict(quantization)} if quantization is not None else {}
        write_manifest(
            path,
            "checkpoint",
            model=model_name,
            classes=list(classes),
            palette=palette,
            preprocess=preprocess,
            precision="int8" if quantization is not None else "fp32",
            parent=parent,
            content=tmp,
            training={"config": config or {}, "step": int(step)},
            metrics=metrics or {},
            **extra,
        )
    return ckpt


# key → (check, what it must be): every key a checkpoint needs to rebuild and run its model
_KEYS = {
    "model": (lambda v: isinstance(v, str) and v != "", "a model name"),
    "model_kwargs": (lambda v: isinstance(v, dict), "a mapping"),
    "num_classes": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
    "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of class names"),
    "preprocess": (lambda v: isinstance(v, dict), "a mapping"),
    "state_dict": (lambda v: isinstance(v, dict), "a mapping of parameter names to tensors"),
}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a vsseg-edge checkpoint safely (weights_only) or raise a one-line error.

    When the checkpoint has its manifest beside it, the file must match the manifest's sha256 (a
    checkpoint without one, e.g. copied alone, still loads: it describes itself).
    """
    from ..core.manifest import manifest_path, read_manifest
    from ._weights import safe_torch_load

    path = Path(path)
    if manifest_path(path).is_file():
        read_manifest(path, kind="checkpoint", verify=True)
    ckpt = safe_torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise VssegError(
            f"{path}: not a vsseg-edge checkpoint (no 'format: {FORMAT}'); convert a plain state "
            f"dict with `vsseg-edge import-weights {path} --out model.pt` (ESPNet files need no other "
            "flag; others --model, --classes, --preprocess)"
        )
    version = ckpt.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise VssegError(f"{path}: checkpoint version {version!r} is not one this vsseg-edge reads (up to {VERSION})")
    for key, (ok, what) in _KEYS.items():
        if key not in ckpt:
            raise VssegError(f"{path}: checkpoint has no {key!r} (a vsseg-edge checkpoint holds {', '.join(_KEYS)})")
        if not ok(ckpt[key]):
            raise VssegError(f"{path}: checkpoint {key!r} must be {what}, got {type(ckpt[key]).__name__}")
    if len(ckpt["classes"]) != ckpt["num_classes"]:
        raise VssegError(
            f"{path}: checkpoint names {len(ckpt['classes'])} classes but num_classes is {ckpt['num_classes']}"
        )
    return ckpt


def model_from_checkpoint(path: str | Path, *, num_classes: int | None = None, model_name: str | None = None):
    """Rebuild the model of a checkpoint and load its weights; return (model in eval mode, checkpoint dict).

    `num_classes` / `model_name`, when given, must match the checkpoint (a clear error otherwise).
    """
    from . import create_model

    ckpt = load_checkpoint(path)
    if model_name is not None and model_name != ckpt["model"]:
        raise VssegError(f"{path}: checkpoint is for model {ckpt['model']!r}, expected {model_name!r}")
    if num_classes is not None and num_classes != ckpt["num_classes"]:
        raise VssegError(f"{path}: checkpoint has {ckpt['num_classes']} classes, expected {num_classes}")
    model = create_model(ckpt["model"], ckpt["num_classes"], **ckpt["model_kwargs"])
    if ckpt.get("quantization"):
        from ..train.quant import quantize_modules

        quantize_modules(model, ckpt["quantization"])
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise VssegError(
            f"{path}: weights do not fit model {ckpt['model']!r} "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})"
        )
    model.eval()
    return model, ckpt


def checkpoint_preprocess(ckpt: dict, where: str) -> PreprocessSpec:
    return PreprocessSpec.from_dict(ckpt["preprocess"], where=f"{where}: preprocess")
