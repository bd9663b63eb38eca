"""Requested (artifact, backend) pairs that have no figures, each with one line saying why.

A bench run is asked for artifacts × backends (`--backends`, default all three), but each file runs on one
backend only: an ONNX on onnxruntime, a checkpoint on torch, an engine on TensorRT. Every requested pair
without figures is listed, so a missing TensorRT row is never silent:

- the artifact's own backend did not run it: its entry's status (unavailable: the library or device is
  missing; failed: the backend refused the artifact, e.g. an engine built for another GPU) and reason;
- another backend: "covered" when a related entry (ancestor or descendant in the manifests' lineage; see
  `related` for precisions) has that backend's figures, else what to do first
  (export an ONNX, build an engine …) or why it cannot be (no INT8 path in torch).
"""

from __future__ import annotations

import importlib.util

from .lineage import is_ancestor

KIND_OF_BACKEND = {"ort": "ONNX", "torch": "checkpoint", "trt": "TensorRT engine"}


def trt_installed() -> bool:
    """Whether `import tensorrt` would find a package (no import: it is heavy and needs a GPU driver)."""
    return importlib.util.find_spec("tensorrt") is not None


def not_run(entries: list[dict], backends: tuple[str, ...]) -> list[dict]:
    """[{"id", "artifact", "backend", "status", "reason"}] for every requested pair without figures."""
    out = []
    for e in entries:
        for b in backends:
            if b == e["backend"]:
                if e["status"] != "ok":
                    out.append(_row(e, b, e["status"], e["reason"]))
                continue
            out.append(_row(e, b, *cross_pair(e, b, entries)))
    return out


def _row(e: dict, backend: str, status: str, reason: str) -> dict:
    return {
        "id": e["id"],
        "artifact": e["artifact"],
        "file": e["file"],
        "backend": backend,
        "status": status,
        "reason": reason,
    }


def related(e: dict, backend: str, entries: list[dict]) -> tuple[dict, str] | None:
    """(entry, relation) of an ancestor or descendant of `e` measured on `backend`, or None.

    For TensorRT any engine built from `e` counts. Otherwise an INT8 artifact is covered by INT8 only, and an
    FP32/FP16 one by the same precision first, else by any relative that is not INT8 (the precision is named:
    a checkpoint that torch ran in FP16 is still what its FP32 ONNX was exported from).
    """
    found = []
    for c in entries:
        if c["backend"] != backend or c["id"] == e["id"]:
            continue
        if is_ancestor(c, e):
            found.append((c, f"its ancestor {c['file']}"))
        elif is_ancestor(e, c):
            found.append((c, f"built from it: {c['file']}"))
    if backend != "trt":
        if e.get("precision") == "int8":
            found = [(c, rel) for c, rel in found if c.get("precision") == "int8"]
        else:
            found = [(c, rel) for c, rel in found if c.get("precision") != "int8"]
            found.sort(key=lambda hit: hit[0].get("precision") != e.get("precision"))
            found = [
                (c, rel if c.get("precision") == e.get("precision") else f"{rel}, {c.get('precision')} there")
                for c, rel in found
            ]
    return found[0] if found else None


def cross_pair(e: dict, backend: str, entries: list[dict]) -> tuple[str, str]:
    """(status, one-line reason) for an artifact and a backend that is not its own."""
    hit = related(e, backend, entries)
    if hit is not None:
        c, rel = hit
        if c["status"] == "ok":
            return "covered", f"measured as `{c['id']}` ({rel})"
        return c["status"], f"see `{c['id']}` ({rel}): {c['reason']}"
    return _needs(e, backend)


def _parent_file(e: dict) -> str | None:
    nodes = e.get("lineage") or []
    return nodes[1]["file"] if len(nodes) > 1 else None


def _needs(e: dict, backend: str) -> tuple[str, str]:
    """What a user must do first for a pair no entry covers (or why the pair cannot be)."""
    own, f = e["backend"], e["file"]
    stem = f.removesuffix(".pt").removesuffix(".pth")
    no_trt = "" if trt_installed() else "; TensorRT is not installed here"
    parent = _parent_file(e)
    if backend == "trt":
        flag = "--int8" if e.get("precision") == "int8" else "--fp16"
        if own == "ort":
            return "needs_engine", (
                f"ONNX input: build an engine first with `vsseg-edge build-engine {f} {flag}` "
                f"on the target GPU, then bench the .engine{no_trt}"
            )
        return "needs_engine", (
            f"checkpoint input: `vsseg-edge export {f} --out {stem}.onnx`, then `vsseg-edge "
            f"build-engine {stem}.onnx --fp16` on the target GPU, then bench the .engine{no_trt}"
        )
    if backend == "ort":
        if own == "torch":
            return "needs_export", (
                f"checkpoint input: export an ONNX first with `vsseg-edge export {f} --out {stem}.onnx`"
            )
        return "not_applicable", (
            f"TensorRT engine: runs on TensorRT only; bench the ONNX it was built from"
            f"{f' ({parent})' if parent else ''} for onnxruntime"
        )
    if e.get("precision") == "int8":
        return "not_applicable", "INT8 input: the torch backend runs FP32/FP16 checkpoints, it has no INT8 path"
    what = "TensorRT engine" if own == "trt" else "ONNX input"
    return "needs_checkpoint", (
        f"{what}: the torch backend runs vsseg-edge checkpoints; bench the checkpoint it "
        f"came from{f' ({parent})' if parent and own == 'ort' else ''}"
    )
