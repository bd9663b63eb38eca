"""Plain state dicts → vsseg-edge checkpoints (`vsseg-edge import-weights`).

A plain state dict (a published ESPNet file, a whole model saved by another codebase, a torchvision-format
ImageNet backbone) carries tensors but not what rebuilds and feeds the model: architecture arguments, class
list, preprocessing. Importing adds those, loads the tensors strictly through the model's own loader (the
same `create_model(..., weights=)` / `backbone_weights=` the recipes use, so key mapping and shape checks
are the ones training relies on), and writes a checkpoint with its manifest whose parent is the file.

ESPNet files are recognised by their keys; their class set (20 outputs → Cityscapes, 12 → CamVid) and the
preprocessing they were trained with (`published_preprocess`) are then known, so
`vsseg-edge import-weights espnet_p_2_q_8_camvid.pth --out espnet-camvid.pt` needs no other flag. For other
files the architecture, classes and preprocessing are given. A backbone file (`backbone=True`) initialises
only the student's backbone; heads keep their seeded random initialisation (a starting point for training).
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import VssegError
from ..core.labels import get_label_set
from ..core.preprocess import PreprocessSpec
from . import create_model, list_models
from ._weights import read_state_dict
from .checkpoint import save_checkpoint
from .espnet import describe_espnet_state, published_preprocess

ESPNET_WIDTHS = {20: "cityscapes", 19: "cityscapes", 12: "camvid", 11: "camvid"}
PREPROCESS_PRESETS = ("espnet-cityscapes", "espnet-camvid", "imagenet")


def preprocess_preset(name_or_file: str, size: tuple[int, int] | None = None) -> PreprocessSpec:
    """A named preprocessing (espnet-cityscapes | espnet-camvid | imagenet) or a YAML file of PreprocessSpec keys."""
    if name_or_file in ("espnet-cityscapes", "espnet-camvid"):
        spec = published_preprocess(name_or_file.split("-", 1)[1])
    elif name_or_file == "imagenet":
        spec = PreprocessSpec()
    else:
        from ..core.config import load_yaml

        path = Path(name_or_file)
        if not path.is_file():
            raise VssegError(
                f"--preprocess {name_or_file}: expected one of {PREPROCESS_PRESETS} or a YAML file "
                "of preprocessing keys (height, width, channel_order, mean, std, scale …)"
            )
        spec = PreprocessSpec.from_dict(load_yaml(path), where=str(path))
    return spec.replace(height=size[0], width=size[1]) if size else spec


def import_weights(
    weights: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    classes: str | None = None,
    preprocess: PreprocessSpec | None = None,
    backbone: bool = False,
    seed: int = 0,
) -> dict:
    """Turn `weights` into the checkpoint `out` (+ manifest); returns what was imported (for printing)."""
    import torch

    weights, out = Path(weights), Path(out)
    if out.resolve() == weights.resolve():
        raise VssegError(f"--out {out}: is the input weights file; choose another path")
    state = read_state_dict(weights)  # one-line errors for a missing, pickled or non-state-dict file
    espnet = "conv.conv.weight" in state or "fuse.conv.weight" in state
    model = model or ("espnet" if espnet else None)
    if model is None:
        raise VssegError(
            f"{weights}: not an ESPNet file; name its architecture with --model ({', '.join(list_models())})"
        )
    if model not in list_models():
        raise VssegError(f"--model {model}: unknown architecture; valid: {', '.join(list_models())}")
    if espnet and model == "espnet" and not backbone:
        width = describe_espnet_state(state)["width"]
        classes = classes or ESPNET_WIDTHS.get(width)
        if preprocess is None and classes in ("cityscapes", "camvid"):
            preprocess = published_preprocess(classes)
    if classes is None:
        raise VssegError(f"{weights}: name the class set the weights predict with --classes (cityscapes | camvid)")
    if preprocess is None:
        raise VssegError(
            f"{weights}: give the preprocessing the weights were trained with: --preprocess "
            f"{' | '.join(PREPROCESS_PRESETS)} | FILE.yaml"
        )
    label_set = get_label_set(classes)
    torch.manual_seed(seed)  # the heads a backbone import leaves random are reproducible
    kwarg = "backbone_weights" if backbone else "weights"
    try:
        net = create_model(model, label_set.num_classes, **{kwarg: str(weights)})
    except TypeError:
        raise VssegError(
            f"--model {model}: takes no {'backbone ' if backbone else ''}weights file"
            + (" (only whole-model weights; drop --backbone)" if backbone else "")
        ) from None
    kwargs = dict(getattr(net, "arch_kwargs", {}))
    source = {"file": weights.name, "kind": "backbone" if backbone else "state dict", "tensors": len(state)}
    save_checkpoint(
        out,
        net,
        model_name=model,
        classes=list(label_set.classes),
        preprocess=preprocess,
        model_kwargs=kwargs,
        config={"imported": source},
        parent=weights,
    )
    params = sum(p.numel() for p in net.parameters())
    return {
        "out": str(out),
        "model": model,
        "model_kwargs": kwargs,
        "classes": label_set.name,
        "num_classes": label_set.num_classes,
        "parameters": params,
        "preprocess": preprocess.to_dict(),
        "source": source,
        "torch": torch.__version__,
    }
