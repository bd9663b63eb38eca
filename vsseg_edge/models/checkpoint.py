"""vsseg-edge checkpoints: a state dict plus everything needed to rebuild and use the model.

A checkpoint is a plain dict of tensors and primitive values, loaded with `weights_only=True`:

    format "vsseg-edge-checkpoint", version, model (registry name), model_kwargs, num_classes,
    classes, preprocess (PreprocessSpec dict), config (resolved training config), metrics, step,
    state_dict, optionally the trainer's resume state under "train_state", and for a model trained with
    fake INT8 (QAT) its placement under "quantization" (`train.quant`), re-applied before the weights load.

Every checkpoint gets a sidecar manifest `<ckpt>.json` (kind "checkpoint").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import VssegError
from ..core.fileio import atomic_path
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
        torch.save(ckpt, tmp)
    extra = {"quantization": dict(quantization)} if quantization is not None else {}
    write_manifest(path, "checkpoint", model=model_name, classes=list(classes), preprocess=preprocess,
                   precision="int8" if quantization is not None else "fp32", parent=parent,
                   training={"config": config or {}, "step": int(step)}, metrics=metrics or {}, **extra)
    return ckpt


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a vsseg-edge checkpoint safely (weights_only) or raise a one-line error."""
    from ._weights import safe_torch_load

    path = Path(path)
    ckpt = safe_torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise VssegError(f"{path}: not a vsseg-edge checkpoint (no 'format: {FORMAT}'); "
                         "plain state dicts load through a model's own loader (e.g. --init-weights)")
    if ckpt.get("version", 0) > VERSION:
        raise VssegError(f"{path}: checkpoint version {ckpt['version']} is newer than this vsseg-edge ({VERSION})")
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
        raise VssegError(f"{path}: weights do not fit model {ckpt['model']!r} "
                         f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    model.eval()
    return model, ckpt


def checkpoint_preprocess(ckpt: dict, where: str) -> PreprocessSpec:
    return PreprocessSpec.from_dict(ckpt["preprocess"], where=f"{where}: preprocess")
