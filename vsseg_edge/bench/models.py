"""Models to time when no trained weights are at hand: a seeded, randomly initialised registry model saved as a
vsseg-edge checkpoint (with its manifest), so that export, calibration, `run` and `bench` take it like any
trained one. Latency does not depend on the weights; accuracy figures of such a model mean nothing, its
INT8-vs-FP32 agreement still does.

    from vsseg_edge.bench.models import random_init_checkpoint
    ckpt = random_init_checkpoint("pspnet18", "runs/speed/pspnet18.pt", size=(512, 1024))
"""

from __future__ import annotations

from pathlib import Path


def random_init_checkpoint(
    name: str,
    out: str | Path,
    *,
    size: tuple[int, int] = (512, 1024),
    classes: str = "cityscapes",
    seed: int = 0,
    **model_kwargs,
) -> Path:
    """Create registry model `name` under torch.manual_seed(`seed`) and save it as a checkpoint at `out` whose
    preprocessing takes `size` (H, W) frames and whose classes are the `classes` set; returns `out`.

    `model_kwargs` go to `models.create_model` (e.g. `weights=` for published weights)."""
    import torch

    from ..core.labels import get_label_set
    from ..core.preprocess import PreprocessSpec
    from ..models import create_model
    from ..models.checkpoint import save_checkpoint

    labels = get_label_set(classes)
    torch.manual_seed(seed)
    model = create_model(name, labels.num_classes, **model_kwargs).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        out,
        model,
        model_name=name,
        classes=list(labels.classes),
        preprocess=PreprocessSpec(height=size[0], width=size[1]),
        model_kwargs={k: v for k, v in model_kwargs.items() if k != "weights"},
        config={"init": f"random (torch.manual_seed({seed}))"},
    )
    return out
