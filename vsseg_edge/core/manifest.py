"""Sidecar manifests: `<artifact>.json` beside every artifact.

A manifest records what an artifact is and how it was made: kind, vsseg-edge version, created time,
sha256 of the artifact and of its parent, model name and classes, input spec (the preprocessing),
output spec, precision, and per-kind details. A step reads the previous artifact and its manifest,
never the previous step's code.

A manifest is checked when it is read: each field it has must be of the right type (one line naming the
field otherwise), and with `verify` the artifact's sha256 must match (`hashcache.file_sha256`, so large
files are hashed once). Lineage comes from verified files only: a parent's hash is the parent file's
actual hash, so editing a manifest cannot make an artifact claim another parent.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from .. import __version__
from .errors import VssegError
from .fileio import read_json, sha256_file, write_json
from .hashcache import file_sha256
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
    content: str | Path | None = None,
    palette: list | None = None,
    **details,
) -> dict:
    """Write `<artifact>.json` and return the manifest.

    `content`: the artifact's bytes are still in this temporary file (`fileio.atomic_path`), renamed onto
    `artifact` by the caller only after the manifest is written. A manifest that cannot be written then
    leaves the previous artifact and manifest as they were (a resumable `last.pt` survives a full disk).
    Without `content` the artifact is already in place, and is removed if its manifest cannot be written:
    every later step refuses an artifact without its manifest, so it would only be a broken leftover.

    `palette` (RGB per class), when given, travels with the class names down the pipeline (a class file's
    colours reach the overlay of an engine built from its model); without it, colours come from the
    built-in set with those names or the fixed generator (`core.labels.label_set_for`).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown manifest kind {kind!r}")
    artifact = Path(artifact)
    parent_sha = None
    if parent is not None:
        if manifest_path(parent).exists():
            read_manifest(parent, verify=True)  # a parent whose manifest lies is refused, never recorded
        parent_sha = file_sha256(parent)
    man = {
        "schema": SCHEMA_VERSION,
        "kind": kind,
        "vsseg_edge_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "file": artifact.name,
        # a temporary file is hashed without the cache (its name is gone after the rename)
        "sha256": sha256_file(content) if content is not None else file_sha256(artifact),
        "parent": {"file": Path(parent).name, "sha256": parent_sha} if parent is not None else None,
        "model": model,
        "classes": list(classes),
        **({"palette": [list(c) for c in palette]} if palette is not None else {}),
        "input": {"preprocess": preprocess.to_dict(), "shape": list(preprocess.input_shape())},
        "output": output,
        "precision": precision,
        **details,
    }
    try:
        write_json(manifest_path(artifact), man)
    except BaseException:
        if content is None:
            artifact.unlink(missing_ok=True)
        raise
    return man


def read_manifest(artifact: str | Path, kind: str | tuple[str, ...] | None = None, verify: bool = False) -> dict:
    """Read and check `<artifact>.json`; with `verify`, also check the artifact's sha256."""
    artifact = Path(artifact)
    mpath = manifest_path(artifact)
    if not mpath.is_file():
        if artifact.suffix.lower() in (".onnx", ".engine", ".plan"):
            raise VssegError(
                f"{artifact}: no manifest {mpath.name} beside it; for a model made outside vsseg-edge, "
                f"write one with: vsseg-edge import {artifact} --classes FILE [--size HxW]"
            )
        raise VssegError(f"{artifact}: no manifest {mpath.name} beside it; vsseg-edge writes one with every artifact")
    man = read_json(mpath, "manifest")
    if not isinstance(man, dict) or "kind" not in man:
        raise VssegError(f"{mpath}: not a vsseg-edge manifest (no 'kind')")
    check_fields(man, mpath)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and man["kind"] not in kinds:
        raise VssegError(f"{artifact}: manifest says kind {man['kind']!r}, expected {' or '.join(kinds)}")
    if verify:
        verify_artifact(artifact, man)
    return man


def verify_artifact(artifact: str | Path, man: dict) -> None:
    """Refuse `artifact` unless its sha256 is the one its manifest records."""
    artifact = Path(artifact)
    mpath = manifest_path(artifact)
    if not isinstance(man.get("sha256"), str):
        raise VssegError(f"{mpath}: no sha256 of {artifact.name}; the manifest cannot vouch for the file")
    if not artifact.is_file():
        raise VssegError(f"{artifact}: not found (its manifest {mpath.name} is there)")
    if file_sha256(artifact) != man["sha256"]:
        raise VssegError(
            f"{artifact}: sha256 does not match its manifest {mpath.name} (the file changed after the "
            "manifest was written, or the manifest belongs to another file)"
        )


def _is_str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# field → (check, what it should be); a field absent from a manifest is not checked here (its reader says so)
_FIELDS = {
    "schema": (_is_int, "an integer"),
    "kind": (lambda v: v in KINDS, f"one of {list(KINDS)}"),
    "file": (lambda v: isinstance(v, str), "a file name"),
    "sha256": (
        lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
        "64 lowercase hex digits",
    ),
    "parent": (
        lambda v: (
            v is None
            or (
                isinstance(v, dict)
                and isinstance(v.get("file"), str)
                and (v.get("sha256") is None or isinstance(v.get("sha256"), str))
            )
        ),
        "null or a mapping with 'file' and 'sha256'",
    ),
    "model": (lambda v: isinstance(v, str) and v != "", "a model name"),
    "classes": (lambda v: _is_str_list(v) and len(v) > 0, "a non-empty list of class names"),
    "input": (
        lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("preprocess"), dict)
            and (v.get("shape") is None or (isinstance(v["shape"], list) and all(_is_int(d) for d in v["shape"])))
        ),
        "a mapping with 'preprocess' (a mapping) and 'shape' (a list of integers)",
    ),
    "output": (
        lambda v: v in ("logits", "labels") or (isinstance(v, dict) and v.get("kind") in ("logits", "labels")),
        "'logits' or 'labels'",
    ),
    "precision": (lambda v: isinstance(v, str), "a string such as 'fp32'"),
}


def check_fields(man: dict, mpath: str | Path) -> None:
    """One line naming the first field of the wrong type (`input.preprocess` is checked field by field)."""
    for name, (ok, what) in _FIELDS.items():
        if name in man and not ok(man[name]):
            raise VssegError(f"{mpath}: field {name!r} must be {what}, got {man[name]!r}"[:300])
    if isinstance(man.get("input"), dict):
        PreprocessSpec.from_dict(man["input"]["preprocess"], where=f"{mpath}: input.preprocess")


def manifest_preprocess(man: dict, where: str) -> PreprocessSpec:
    try:
        return PreprocessSpec.from_dict(man["input"]["preprocess"], where=f"{where}: input.preprocess")
    except KeyError:
        raise VssegError(f"{where}: manifest has no input.preprocess") from None
