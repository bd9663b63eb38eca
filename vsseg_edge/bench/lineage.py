"""Lineage of a benchmarked artifact (from the manifests) and the choice of each entry's FP32 reference.

An artifact's lineage is itself, then its parent, grandparent … as the sidecar manifests record them
(`core.manifest`: `parent: {file, sha256}`), up to and including its source checkpoint: a checkpoint
starts a lineage, because its own parent (an init or a resumed run) holds different weights. Two entries
belong to the same model when their lineages share a sha256.

The reference rule (without `--reference`):
- an FP32 entry's reference is its nearest FP32 ancestor among the entries (export parity: ONNX vs the
  checkpoint it came from); an FP32 entry without one is a root: the reference of its descendants;
- a reduced-precision entry's (FP16, INT8) is its nearest FP32 ancestor, else the FP32 entry of the same
  model whose lineage meets its own nearest (an FP32 engine beside an INT8 engine built from the same ONNX;
  for a checkpoint run in FP16 by torch, the FP32 ONNX exported from it);
- none when no FP32 entry shares its lineage, and the report says so: an entry is never compared with
  another model (student B's INT8 with student A).
"""

from __future__ import annotations

from pathlib import Path


def lineage(path: Path, known: dict[str, Path] | None = None, limit: int = 8) -> list[dict]:
    """[{"sha256", "kind", "file"}]: the artifact, then its ancestors, nearest first, up to its source checkpoint.

    A parent is looked for beside its child (the manifest's file name, sha256 checked), then among `known`
    ({sha256: path}, the other artifacts of the run); one found nowhere ends the lineage with its recorded
    sha256 and file name (kind unknown).
    """
    from ..core.fileio import sha256_file
    from ..core.manifest import manifest_path, read_manifest

    known = known or {}
    nodes: list[dict] = []
    cur: Path | None = Path(path)
    while cur is not None and len(nodes) < limit:
        if not manifest_path(cur).is_file():
            if not nodes:  # an artifact without a manifest: only itself, by its file hash
                nodes.append({"sha256": sha256_file(cur), "kind": None, "file": cur.name})
            break
        man = read_manifest(cur)
        nodes.append({"sha256": man.get("sha256"), "kind": man.get("kind"), "file": cur.name})
        parent = man.get("parent") or {}
        if man.get("kind") == "checkpoint" or not parent.get("sha256"):
            break
        cur = _locate(cur, parent, known)
        if cur is None:
            nodes.append({"sha256": parent["sha256"], "kind": None, "file": parent.get("file")})
    return nodes


def _locate(child: Path, parent: dict, known: dict[str, Path]) -> Path | None:
    """The parent's path: beside the child when its manifest's sha256 matches, else among the run's artifacts."""
    from ..core.errors import VssegError
    from ..core.manifest import manifest_path, read_manifest

    beside = child.parent / str(parent.get("file"))
    try:
        if (
            parent.get("file")
            and manifest_path(beside).is_file()
            and read_manifest(beside, verify=True).get("sha256") == parent["sha256"]
        ):
            return beside
    except VssegError:  # an unreadable manifest beside the child is not its parent; look among the run's artifacts
        pass
    return known.get(parent["sha256"])


def is_ancestor(a: dict, b: dict) -> bool:
    """True when entry `a` is an ancestor of entry `b` (a's sha256 in b's lineage beyond b itself)."""
    return a.get("sha256") in {n["sha256"] for n in (b.get("lineage") or [])[1:]}


def source_of(entry: dict) -> str:
    """The oldest known node of the entry's lineage, as `file (sha256 prefix)`: its source model."""
    node = (entry.get("lineage") or [{"file": entry.get("file"), "sha256": entry.get("sha256")}])[-1]
    return f"{node.get('file')} ({str(node.get('sha256'))[:12]})"


def choose_reference(entry: dict, entries: list[dict], explicit: str | None) -> tuple[dict | None, str | None]:
    """(reference entry, None) or (None, why there is none) for `entry`, by the rule of this module's docstring."""
    others = [c for c in entries if c["status"] == "ok" and c["id"] != entry["id"]]
    if explicit is not None:
        if entry["artifact"] == explicit:
            return None, "the --reference itself"
        ref = next((c for c in others if c["artifact"] == explicit), None)
        return (ref, None) if ref else (None, "the --reference entry did not run")
    nodes = entry.get("lineage") or []
    mine = [n["sha256"] for n in nodes]
    fp32 = entry.get("precision") == "fp32"
    # a checkpoint run in FP16 (torch on a GPU) has FP32 weights: an FP32 artifact made from it is its reference
    first = 0 if not fp32 and nodes and nodes[0].get("kind") == "checkpoint" else 1
    best = None
    for c in others:
        if c.get("precision") != "fp32" or (fp32 and not is_ancestor(c, entry)):
            continue
        theirs = {n["sha256"] for n in c.get("lineage") or []}
        common = next((i for i, sha in enumerate(mine) if i >= first and sha in theirs), None)
        if common is None:
            continue
        rank = (common, not is_ancestor(c, entry), Path(c["artifact"]).parent != Path(entry["artifact"]).parent)
        if best is None or rank < best[0]:
            best = (rank, c)
    if best is not None:
        return best[1], None
    if fp32:
        return None, "FP32 root of its lineage among the entries (the reference of its descendants)"
    return None, (
        f"no FP32 reference: no FP32 entry of the same model (source {source_of(entry)}) among the "
        "entries; bench its FP32 ONNX or checkpoint too, or pass --reference"
    )
