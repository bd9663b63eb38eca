"""The model zoo: real pretrained models that ship inside the package, addressable by name.

    vsseg-edge models                                   list them (and the trainable architectures)
    vsseg-edge run espnet-camvid --source DIR ...       any command that takes a model takes a zoo name
    model: {init_checkpoint: espnet-camvid}             so does a recipe (init_checkpoint, teacher.checkpoint)

Each entry is a vsseg-edge checkpoint (`models/<name>.pt`, with its manifest `<name>.pt.json`) described in
`zoo.json`: architecture, class set, input size, preprocessing (in the checkpoint), source, licence, how it
was made, and the figures measured on it with the command that measured them. The published ESPNet weights
(MIT, `LICENSE-ESPNet.txt`) are imported with `vsseg-edge import-weights`; the `-tc` entries are those
models after temporal fine-tuning on unlabelled video.

This module reads only JSON: listing the zoo and resolving a name work without torch (`resolve` is the one
resolver every command, recipe and the Python API call). The zoo ships checkpoints, not ONNX: a checkpoint
is the source every other artifact is derived from, and shipping ONNX copies would double the package for
something `vsseg-edge export` makes in seconds. Commands that need an ONNX (`calibrate`) export a zoo model
once into the user cache (`onnx_for`, needs torch); a torch-free edge box gets the ONNX from a machine with
torch (`vsseg-edge export espnet-camvid --out espnet-camvid.onnx`) and runs that file.

Name resolution: an existing path always wins (a file called like a zoo model is that file); otherwise a zoo
name gives the packaged checkpoint; otherwise a bare name (no suffix, no folder) is a one-line error listing
the zoo, and anything else is returned unchanged for the command's own "not found" error.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..core.errors import VssegError

ZOO_DIR = Path(__file__).resolve().parent
INDEX = ZOO_DIR / "zoo.json"


@dataclass(frozen=True)
class ZooEntry:
    """One packaged model and what is known about it (see zoo.json)."""

    name: str
    file: str  # relative to the zoo folder
    architecture: str
    classes: str  # class set name (cityscapes | camvid)
    num_classes: int
    input_hw: tuple[int, int]
    source: str
    licence: str
    description: str = ""
    parent: str | None = None  # the zoo entry it was fine-tuned from
    made_by: str = ""  # the command that produced the file
    published: dict | None = None  # a figure from the paper / upstream README, with where it holds
    measured: tuple[dict, ...] = field(default_factory=tuple)  # {metric, value, on, command, ...}

    @property
    def path(self) -> Path:
        return ZOO_DIR / self.file

    def figure(self, metric: str) -> dict | None:
        """The first measured figure of `metric` ("mIoU", "TC"), or None."""
        return next((m for m in self.measured if m.get("metric") == metric), None)


@lru_cache(maxsize=1)
def entries() -> dict[str, ZooEntry]:
    """Every zoo entry by name, from zoo.json (read once)."""
    try:
        data = json.loads(INDEX.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VssegError(f"{INDEX}: the zoo index is missing or damaged ({exc}); reinstall vsseg-edge") from None
    out = {}
    for name, e in data.get("models", {}).items():
        out[name] = ZooEntry(
            name=name,
            file=e["file"],
            architecture=e["architecture"],
            classes=e["classes"],
            num_classes=int(e["num_classes"]),
            input_hw=tuple(e["input_hw"]),
            source=e["source"],
            licence=e["licence"],
            description=e.get("description", ""),
            parent=e.get("parent"),
            made_by=e.get("made_by", ""),
            published=e.get("published"),
            measured=tuple(e.get("measured", ())),
        )
    return out


def names() -> list[str]:
    return list(entries())


def get(name: str) -> ZooEntry:
    """The entry called `name`, or a one-line error listing the zoo."""
    entry = entries().get(name)
    if entry is None:
        raise VssegError(f"{name}: not a zoo model; the zoo has {', '.join(names())} (`vsseg-edge models`)")
    return entry


def is_zoo_name(model: str | os.PathLike) -> bool:
    """True when `model` names a zoo entry and no file or folder of that name exists."""
    return str(model) in entries() and not Path(model).exists()


def resolve(model: str | os.PathLike) -> Path:
    """A model argument (path or zoo name) → the file it names; see the module docstring for the rules."""
    path = Path(model)
    if path.exists():
        return path
    entry = entries().get(str(model))
    if entry is not None:
        if not entry.path.is_file():
            raise VssegError(
                f"{entry.name}: zoo file {entry.path} is missing from this installation (reinstall vsseg-edge)"
            )
        return entry.path
    text = str(model)
    if text and not path.suffix and os.sep not in text and "/" not in text:
        raise VssegError(
            f"{text}: no such file, and not a zoo model ({', '.join(names())}; `vsseg-edge models` lists them)"
        )
    return path


def onnx_for(model: str | os.PathLike, log=None) -> Path:
    """`model` as an FP32 ONNX: a zoo name is exported once into the user cache (torch needed); a path is
    returned as `resolve` gives it. The cached file is keyed by the checkpoint's sha256 and this
    vsseg-edge's version, and written atomically with its manifest by the ordinary exporter."""
    if not is_zoo_name(model):
        return resolve(model)
    from .. import __version__
    from ..core.cache import user_cache_dir
    from ..core.manifest import read_manifest

    entry = get(str(model))
    sha = read_manifest(entry.path, "checkpoint").get("sha256", "")[:12]
    target = user_cache_dir("zoo") / f"{entry.name}-{sha}-v{__version__}.onnx"
    if target.is_file() and (target.parent / f"{target.name}.json").is_file():
        return target
    try:
        from ..export.onnx_export import export_checkpoint
        from ..export.presets import ExportPreset
    except ImportError as exc:
        raise VssegError(
            f"{entry.name}: the zoo ships a torch checkpoint and this command needs an ONNX; exporting "
            f"it needs torch and onnx ({exc}). On a machine with them run `vsseg-edge export "
            f"{entry.name} --out {entry.name}.onnx` and pass that file instead"
        ) from None
    if log:
        log(f"{entry.name}: exporting the zoo checkpoint to {target} (once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    export_checkpoint(entry.path, target, ExportPreset())
    return target


def describe(entry: ZooEntry) -> dict:
    """A JSON-ready description (what `vsseg-edge models --json` prints)."""
    return {
        "name": entry.name,
        "file": str(entry.path),
        "architecture": entry.architecture,
        "classes": entry.classes,
        "num_classes": entry.num_classes,
        "input_hw": list(entry.input_hw),
        "source": entry.source,
        "licence": entry.licence,
        "description": entry.description,
        "parent": entry.parent,
        "made_by": entry.made_by,
        "published": entry.published,
        "measured": list(entry.measured),
    }
