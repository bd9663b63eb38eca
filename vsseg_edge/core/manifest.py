"""Sidecar manifests: `<artifact>.json` beside every artifact.

A manifest records what an artifact is and how it was made: kind, vsseg-edge version, created time,
sha256 of the artifact and of its parent, model name and classes, input spec (the preprocessing),
output spec, precision, and per-kind details. A step reads the previous artifact and its manifest,
never the previous step's code.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from .. import __version__
from .errors import VssegError
from .fileio import read_json, sha256_file, write_json
from .preprocess import PreprocessSpec

SCHEMA_VERSION = 1
KINDS = ("checkpoint", "onnx", "qdq_onnx", "engine", "dataset", "report")


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_manifest(
    artifact: str | Path,
    kind: str,
    *,
    model: str,
    classes: list[str],
    preprocess: PreprocessSpec,
    output: str = "logits",
    precision: str = "fp32",
    parent: str | Path | None = None,
    palette: list | None = None,
    **details,
) -> dict:
    """Write `<artifact>.json` for an artifact that already exists on disk; return the manifest.

    `palette` (RGB per class), when given, travels with the class names down the pipeline (a class file's
    colours reach the overlay of an engine built from its model); without it, colours come from the
    built-in set with those names or the fixed generator (`core.classes.label_set_for`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown manifest kind {kind!r}")
    artifact = Path(artifact)
    parent_sha = None
    if parent is not None:
        parent_sha = read_manifest(parent).get("sha256") if manifest_path(parent).exists() else sha256_file(parent)
    man = {
        "schema": SCHEMA_VERSION,
        "kind": kind,
        "vsseg_edge_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "file": artifact.name,
        "sha256": sha256_file(artifact),
        "parent": {"file": Path(parent).name, "sha256": parent_sha} if parent is not None else None,
        "model": model,
        "classes": list(classes),
        **({"palette": [list(c) for c in palette]} if palette is not None else {}),
        "input": {"preprocess": preprocess.to_dict(), "shape": list(preprocess.input_shape())},
        "output": output,
        "precision": precision,
        **details,
    }
    write_json(manifest_path(artifact), man)
    return man


def read_manifest(artifact: str | Path, kind: str | tuple[str, ...] | None = None, verify: bool = False) -> dict:
    """Read and check `<artifact>.json`; with `verify`, also check the artifact's sha256."""
    artifact = Path(artifact)
    mpath = manifest_path(artifact)
    if not mpath.is_file():
        if artifact.suffix.lower() in (".onnx", ".engine", ".plan"):
            raise VssegError(f"{artifact}: no manifest {mpath.name} beside it; for a model made outside vsseg-edge, "
                             f"write one with: vsseg-edge import {artifact} --classes FILE [--size HxW]")
        raise VssegError(f"{artifact}: no manifest {mpath.name} beside it; vsseg-edge writes one with every artifact")
    man = read_json(mpath, "manifest")
    if not isinstance(man, dict) or "kind" not in man:
        raise VssegError(f"{mpath}: not a vsseg-edge manifest (no 'kind')")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and man["kind"] not in kinds:
        raise VssegError(f"{artifact}: manifest says kind {man['kind']!r}, expected {' or '.join(kinds)}")
    if verify and man.get("sha256") != sha256_file(artifact):
        raise VssegError(f"{artifact}: sha256 does not match its manifest {mpath.name} (file changed or foreign)")
    return man


def manifest_preprocess(man: dict, where: str) -> PreprocessSpec:
    try:
        return PreprocessSpec.from_dict(man["input"]["preprocess"], where=f"{where}: input.preprocess")
    except KeyError:
        raise VssegError(f"{where}: manifest has no input.preprocess") from None
