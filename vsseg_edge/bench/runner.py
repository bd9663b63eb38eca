"""`run_bench`: every artifact × the backend that runs it → one entry with speed, accuracy and agreement.

Each entry is timed on the SAME frames (evenly spaced over the split), evaluated with
`metrics.evaluate.evaluate_predictions`, and compared pixel by pixel with its FP32 reference (chosen by
lineage, `bench.lineage`). Requested (artifact, backend) pairs without figures are listed with one line
each under `not_run` (`bench.pairs`). A backend
that cannot run here (TensorRT missing) becomes an entry with status "unavailable" and the reason, an
artifact its backend refuses (foreign engine, unknown model …) one with status "failed"; neither is a crash. The result is the JSON-ready report (`SCHEMA`); `report.write_report` writes it.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import MissingDependency, VssegError
from ..measure.environment import environment, load_average
from ..measure.timing import TimingConfig
from .pairs import not_run

SCHEMA = "vsseg-edge-bench/2"  # /2: entries carry `lineage` and `reference_note`; report has `backends`, `not_run`
READABLE_SCHEMAS = ("vsseg-edge-bench/1", SCHEMA)  # what `--compare` reads
REFERENCE_RULE = {
    "explicit": "the --reference entry, for every other entry",
    "lineage": ("the nearest FP32 ancestor among the entries in the manifests' lineage (up to the source "
                "checkpoint); for FP16/INT8 entries without one, the FP32 entry of the same model whose lineage "
                "meets theirs nearest; none when no FP32 entry shares the lineage (never another model)"),
}
ALL_BACKENDS = ("ort", "torch", "trt")


@dataclass(frozen=True)
class BenchConfig:
    """Everything a benchmark run needs besides the artifacts (CLI flags map one to one)."""

    dataset: Path
    split: str = "val"
    kind: str = "auto"
    backends: tuple[str, ...] = ALL_BACKENDS
    runs: int = 50
    warmup: int = 10
    threads: int | None = None  # None: each library's default
    frames: int = 16  # distinct frames the timings and the agreement use
    max_sequences: int | None = None
    flow: str = "auto"
    tc: bool = True
    reference: Path | None = None
    device: str | None = None  # torch backend device (None: cuda when available)
    progress: bool = True

    def __post_init__(self):
        bad = [b for b in self.backends if b not in ALL_BACKENDS]
        if bad or not self.backends:
            raise VssegError(f"--backends {','.join(self.backends)}: expected a comma list of {', '.join(ALL_BACKENDS)}")
        if self.frames < 1:
            raise VssegError(f"--frames {self.frames}: need at least 1 frame")
        if self.threads is not None and self.threads < 1:
            raise VssegError(f"--threads {self.threads}: must be 1 or more")
        TimingConfig(self.runs, self.warmup)  # validates runs / warmup


def select_frames(dataset, n: int) -> list:
    """`n` frames evenly spaced over the split (deterministic), so every entry is timed on the same frames."""
    refs = dataset.frames()
    if not refs:
        raise VssegError(f"{dataset.root}: split {dataset.split!r} has no frames")
    idx = np.unique(np.linspace(0, len(refs) - 1, num=min(n, len(refs))).round().astype(int))
    return [refs[i] for i in idx]


def check_models(models: Sequence[str | Path]) -> list[Path]:
    """Every MODEL must exist and have a known suffix; one line naming the first that does not."""
    from ..runtime.backends import infer_backend_name

    if not models:
        raise VssegError("bench: give at least one MODEL (.onnx, .pt or .engine)")
    out = []
    for m in models:
        p = Path(m)
        if not p.is_file():
            raise VssegError(f"{p}: model file not found")
        infer_backend_name(p)
        if all(p.resolve() != q.resolve() for q in out):
            out.append(p)
    return out


def artifact_info(path: Path) -> dict:
    """What the manifest says about an artifact (kind, model, precision, sha256, parent), or a note if none."""
    from ..core.fileio import sha256_file
    from ..core.manifest import manifest_path, read_manifest

    info = {"artifact": str(path), "file": path.name}
    if not manifest_path(path).is_file():
        return {**info, "kind": None, "model": None, "precision": "fp32", "sha256": sha256_file(path),
                "parent": None, "note": f"no manifest {manifest_path(path).name}; precision assumed fp32"}
    man = read_manifest(path)
    return {**info, "kind": man.get("kind"), "model": man.get("model"), "precision": man.get("precision", "fp32"),
            "sha256": man.get("sha256"), "parent": man.get("parent"), "calibration": calibration_facts(man)}


def calibration_facts(man: dict) -> dict | None:
    """What a Q/DQ model's manifest says about its calibration: both gates and the FP32/INT8 speed ratio measured
    on the machine that calibrated it (None for other artifacts)."""
    if man.get("kind") != "qdq_onnx":
        return None
    gate = man.get("gate") or {}
    acc, tc = gate.get("result") or {}, gate.get("tc") or {}
    tcr, frames = tc.get("result") or {}, tc.get("frames") or {}
    return {"method": (man.get("calibration") or {}).get("method"), "target": man.get("target"),
            "gate_passed": gate.get("passed", acc.get("passed")), "criterion": acc.get("criterion"),
            "drop": acc.get("drop"), "agreement": acc.get("agreement"),
            "tc_fp32": tcr.get("tc_fp32"), "tc_int8": tcr.get("tc_int8"), "tc_drop": tcr.get("drop"),
            "tc_pairs": tcr.get("pairs"), "tc_frames": frames.get("source"), "tc_flow": tc.get("flow"),
            "tc_skipped": tc.get("skipped"), "kept_in_float": len(man.get("kept_in_float") or []),
            "speed": man.get("speed")}


def _open(path: Path, backend: str, cfg: BenchConfig):
    """Open the backend with the run's thread/device settings; returns (backend, threads actually used)."""
    from ..runtime.backends import open_backend

    if backend == "ort":
        return open_backend(path, "ort", threads=cfg.threads or 0), cfg.threads
    if backend == "torch":
        import torch

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        opts = {"device": cfg.device} if cfg.device else {}
        return open_backend(path, "torch", **opts), torch.get_num_threads()
    return open_backend(path, backend), None


def unique_names(paths: Sequence[Path]) -> dict[Path, str]:
    """Each artifact's file name, prefixed by its folder where two artifacts share a file name
    (three students' `model.pt`), so entry ids and labels never collide."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.name] = counts.get(p.name, 0) + 1
    return {p: (f"{p.parent.name}/{p.name}" if counts[p.name] > 1 else p.name) for p in paths}


def bench_entry(path: Path, backend_name: str, cfg: BenchConfig, dataset, frames, flow_source,
                name: str | None = None) -> tuple[dict, list]:
    """One entry: open, time, predict the bench frames, evaluate, close. Returns (entry, predictions)."""
    from ..measure.accuracy import evaluate_runner
    from ..measure.predict import predict
    from ..measure.timing import measure_latency

    name = name or path.name
    entry = {"id": f"{name}@{backend_name}", "name": name.split(".")[0], "backend": backend_name,
             **artifact_info(path)}
    if backend_name not in cfg.backends:
        return {**entry, "status": "skipped", "reason": f"backend {backend_name} not selected (--backends "
                                                        f"{','.join(cfg.backends)})"}, []
    try:
        be, threads = _open(path, backend_name, cfg)
    except MissingDependency as exc:  # TensorRT, cuda-python, onnxruntime … not installed here
        return {**entry, "status": "unavailable", "reason": str(exc).splitlines()[0]}, []
    except VssegError as exc:  # the artifact cannot be opened (foreign engine, unknown model, bad manifest …)
        return {**entry, "status": "failed", "reason": str(exc).splitlines()[0]}, []
    with be:
        if backend_name == "torch" and getattr(be, "fp16", False):
            entry["precision"] = "fp16"
        entry.update(status="ok", reason=None, device=be.device, output_kind=be.output_kind, threads=threads)
        entry["latency"] = measure_latency(be, frames, TimingConfig(cfg.runs, cfg.warmup)).to_dict()
        preds = predict(be, frames).labels
        entry["accuracy"] = evaluate_runner(be, dataset, flow_source, tc=cfg.tc, max_sequences=cfg.max_sequences,
                                            progress=cfg.progress).to_dict()
    return entry, preds


def add_lineage(entries: list[dict], paths: Sequence[Path]) -> None:
    """Each entry's lineage (`lineage.lineage`), parents found beside their children or among the run's artifacts."""
    from .lineage import lineage

    known = {e["sha256"]: p for e, p in zip(entries, paths) if e.get("sha256")}
    for e, p in zip(entries, paths):
        e["lineage"] = lineage(p, known)


def add_agreement(entries: list[dict], preds: dict[str, list], explicit: str | None) -> None:
    """Argmax agreement (% of pixels) of each entry with its FP32 reference on the bench frames, or why none."""
    from ..measure.compare import agreement
    from .lineage import choose_reference

    for e in entries:
        if e["status"] != "ok":
            continue
        ref, why = choose_reference(e, entries, explicit)
        if ref is None:
            e["agreement"], e["reference_note"] = None, why
            continue
        agree = agreement(preds[e["id"]], preds[ref["id"]])
        e["agreement"] = {"reference": ref["id"], "percent": round(agree.percent, 4), "frames": agree.frames}
        e["reference_note"] = None


def run_bench(models: Sequence[str | Path], cfg: BenchConfig) -> dict:
    """Benchmark every artifact with the backend that runs it; return the JSON-ready report (SCHEMA)."""
    from ..data.frame_source import open_frame_source
    from ..runtime.backends import infer_backend_name

    paths = check_models(models)
    load_start = load_average()
    explicit = None
    if cfg.reference is not None:
        ref_path = check_models([cfg.reference])[0]
        same = [p for p in paths if p.resolve() == ref_path.resolve()]
        if not same:
            paths.append(ref_path)
        explicit = str(same[0] if same else ref_path)
    dataset = open_frame_source(cfg.dataset, cfg.split, cfg.kind, flag="--dataset")
    refs = select_frames(dataset, cfg.frames)
    frames = [dataset.read_image(r) for r in refs]
    flow_source = _flow(cfg, dataset)
    entries, preds = [], {}
    names = unique_names(paths)
    bar = _progress(paths, cfg.progress)
    for path in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(path.name)
        entry, p = bench_entry(path, infer_backend_name(path), cfg, dataset, frames, flow_source, names[path])
        entries.append(entry)
        preds[entry["id"]] = p
    add_lineage(entries, paths)
    add_agreement(entries, preds, explicit)
    report = _assemble(cfg, dataset, refs, flow_source, entries)
    report["environment"]["load_average"] = {"start": load_start, "end": load_average()}
    return report


def _flow(cfg: BenchConfig, dataset):
    if not cfg.tc:
        return None
    from ..data.flow import open_flow_source

    return open_flow_source(cfg.flow, dataset)


def _progress(paths, enabled: bool):
    if not enabled:
        return paths
    from tqdm import tqdm

    return tqdm(paths, desc="bench", unit="model")


def _assemble(cfg: BenchConfig, dataset, refs, flow_source, entries) -> dict:
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"name": dataset.name, "root": str(dataset.root), "split": dataset.split,
                    "class_set": dataset.label_set.name, "classes": list(dataset.label_set.classes),
                    "sequences": len(dataset.sequences), "frames": dataset.num_frames, "labelled": len(dataset),
                    "max_sequences": cfg.max_sequences},
        "flow": getattr(flow_source, "name", None),
        "timing": {"runs": cfg.runs, "warmup": cfg.warmup, "batch": 1, "threads": cfg.threads,
                   "frames": [str(Path(r.image).relative_to(dataset.root)) if Path(r.image).is_relative_to(dataset.root)
                              else str(r.image) for r in refs],
                   "process": "single process, entries run one after another"},
        "backends": list(cfg.backends),
        "reference_rule": REFERENCE_RULE["explicit" if cfg.reference else "lineage"],
        "environment": environment(),
        "entries": entries,
        "not_run": not_run(entries, cfg.backends),
    }
