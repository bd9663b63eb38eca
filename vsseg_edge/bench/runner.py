"""`run_bench`: every artifact × the backend that runs it → one entry with speed, accuracy and agreement.

Each entry is timed on the SAME frames (evenly spaced over the split) with `measure.timing`, evaluated
with `measure.accuracy` (mIoU, TC), and compared pixel by pixel with its FP32 reference (chosen by
lineage, `bench.lineage`; `measure.compare.agreement`). Requested (artifact, backend) pairs without
figures are listed with one line each under `not_run` (`bench.pairs`). A backend that cannot run here
(TensorRT missing) becomes an entry with status "unavailable" and the reason, an artifact its backend
refuses (foreign engine, unknown model …) one with status "failed"; neither is a crash.

Timing rounds: by default every entry is timed once, in this process. `repeats` > 1 times all entries
again round after round (entries back to back in each round, so the machine's noise hits them alike), and
`isolate` times each entry of each round in a fresh process (`bench.isolate`). An entry's figures are then
those of its median round, and its speed against its reference is the median of the per-round ratios
(`speed_vs_reference`): paired, so a slow minute of a shared machine cancels out.
The result is the JSON-ready report (`SCHEMA`); `report.write_report` writes it.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import MissingDependency, VssegError
from ..measure.machine import environment, load_average
from ..measure.timing import TimingConfig
from .artifacts import Artifact, parse_artifact
from .pairs import not_run

SCHEMA = "vsseg-edge-bench/2"  # /2: entries carry `lineage` and `reference_note`; report has `backends`, `not_run`
READABLE_SCHEMAS = ("vsseg-edge-bench/1", SCHEMA)  # what `--compare` reads
REFERENCE_RULE = {
    "explicit": "the --reference entry, for every other entry",
    "lineage": (
        "the nearest FP32 ancestor among the entries in the manifests' lineage (up to the source "
        "checkpoint); for FP16/INT8 entries without one, the FP32 entry of the same model whose lineage "
        "meets theirs nearest; none when no FP32 entry shares the lineage (never another model)"
    ),
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
    repeats: int = 1  # timing rounds over all entries
    isolate: bool = False  # time each entry of each round in a process of its own
    accuracy: bool = True  # False: speed (and agreement on the timed frames) only, no mIoU / TC pass
    classes: str | None = None  # class file (or set name) the dataset's labels are numbered in

    def __post_init__(self):
        bad = [b for b in self.backends if b not in ALL_BACKENDS]
        if bad or not self.backends:
            raise VssegError(
                f"--backends {','.join(self.backends)}: expected a comma list of {', '.join(ALL_BACKENDS)}"
            )
        if self.frames < 1:
            raise VssegError(f"--frames {self.frames}: need at least 1 frame")
        if self.threads is not None and self.threads < 1:
            raise VssegError(f"--threads {self.threads}: must be 1 or more")
        if self.repeats < 1:
            raise VssegError(f"--repeats {self.repeats}: need at least 1 timing round")
        TimingConfig(self.runs, self.warmup)  # validates runs / warmup

    @classmethod
    def paired_speed(
        cls, dataset, *, runs: int, warmup: int, threads: int | None, repeats: int, frames: int = 2, backends=("ort",)
    ) -> BenchConfig:
        """Speed only, paired: each entry timed in a process of its own for `repeats` rounds, no accuracy pass,
        no progress bar (`bench --speed-only --isolate --repeats N`): the INT8/FP32 ratios of benchmarks/."""
        return cls(
            dataset=Path(dataset),
            backends=tuple(backends),
            runs=runs,
            warmup=warmup,
            threads=threads,
            frames=frames,
            repeats=repeats,
            isolate=True,
            accuracy=False,
            progress=False,
        )


def select_frames(dataset, n: int) -> list:
    """`n` frames evenly spaced over the split (deterministic), so every entry is timed on the same frames."""
    refs = dataset.frames()
    if not refs:
        raise VssegError(f"{dataset.root}: split {dataset.split!r} has no frames")
    idx = np.unique(np.linspace(0, len(refs) - 1, num=min(n, len(refs))).round().astype(int))
    return [refs[i] for i in idx]


def check_models(models: Sequence) -> list[Artifact]:
    """Every MODEL (a path, or `path::k=v,…`) must exist, have a known suffix and options its backend takes;
    one line naming the first that does not. The same file with the same options is benched once."""
    from ..runtime.backends import infer_backend_name

    if not models:
        raise VssegError("bench: give at least one MODEL (.onnx, .pt or .engine)")
    out: list[Artifact] = []
    for m in models:
        art = parse_artifact(m)
        if not art.path.is_file():
            raise VssegError(f"{art.path}: model file not found")
        art = parse_artifact(art, infer_backend_name(art.path))
        if all((art.path.resolve(), art.tag) != (a.path.resolve(), a.tag) for a in out):
            out.append(art)
    return out


def artifact_info(path: Path) -> dict:
    """What the manifest says about an artifact (kind, model, precision, sha256, parent), or a note if none."""
    from ..core.fileio import sha256_file
    from ..core.manifest import manifest_path, read_manifest

    info = {"artifact": str(path), "file": path.name}
    if not manifest_path(path).is_file():
        return {
            **info,
            "kind": None,
            "model": None,
            "precision": "fp32",
            "sha256": sha256_file(path),
            "parent": None,
            "note": f"no manifest {manifest_path(path).name}; precision assumed fp32",
        }
    man = read_manifest(path)
    return {
        **info,
        "kind": man.get("kind"),
        "model": man.get("model"),
        "precision": man.get("precision", "fp32"),
        "sha256": man.get("sha256"),
        "parent": man.get("parent"),
        "calibration": calibration_facts(man),
    }


def calibration_facts(man: dict) -> dict | None:
    """What a Q/DQ model's manifest says about its calibration: both gates and the FP32/INT8 speed ratio measured
    on the machine that calibrated it (None for other artifacts)."""
    if man.get("kind") != "qdq_onnx":
        return None
    gate = man.get("gate") or {}
    acc, tc = gate.get("result") or {}, gate.get("tc") or {}
    tcr, frames = tc.get("result") or {}, tc.get("frames") or {}
    prot = man.get("protected")
    return {
        "method": (man.get("calibration") or {}).get("method"),
        "target": man.get("target"),
        "gate_passed": gate.get("passed", acc.get("passed")),
        "criterion": acc.get("criterion"),
        "drop": acc.get("drop"),
        "agreement": acc.get("agreement"),
        "tc_fp32": tcr.get("tc_fp32"),
        "tc_int8": tcr.get("tc_int8"),
        "tc_drop": tcr.get("drop"),
        "tc_interval_90": tcr.get("drop_interval_90"),
        "tc_confidence": tcr.get("confidence"),
        "tc_bound": tcr.get("drop_bound"),
        # judged per clip among several: the worst clip and its figure (the drop or its bound)
        "tc_worst_clip": tcr.get("worst_clip") if tcr.get("per_clip") and len(tcr.get("clips") or {}) > 1 else None,
        "tc_judged": tcr.get("judged"),
        "tc_pairs": tcr.get("pairs"),
        "tc_frames": frames.get("source"),
        "tc_flow": tc.get("flow"),
        "tc_skipped": tc.get("skipped"),
        "kept_in_float": len(man.get("kept_in_float") or []),
        # calibrate --protect-classes: the classes, and how many more nodes stay in float for them
        "protected": {"classes": prot["classes"], "nodes": len(prot["kept_in_float"])} if prot else None,
        "speed": man.get("speed"),
    }


def open_runner(artifact: Artifact, backend: str, threads: int | None, device: str | None):
    """Open the artifact's backend with the run's thread/device settings and the artifact's own options;
    returns (runner, threads actually used)."""
    from ..runtime.backends import open_backend

    path, opts = Path(artifact.path), dict(artifact.options)
    if backend == "ort":
        return open_backend(path, "ort", threads=threads or 0, **opts), threads
    if backend == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        if device:
            opts.setdefault("device", device)
        return open_backend(path, "torch", **opts), torch.get_num_threads()
    return open_backend(path, backend, **opts), None


def unique_names(paths: Sequence[Path]) -> dict[Path, str]:
    """Each artifact's file name, prefixed by its folder where two different files share a file name
    (three students' `model.pt`), so entry ids and labels never collide."""
    folders: dict[str, set] = {}
    for p in paths:
        folders.setdefault(p.name, set()).add(Path(p).resolve())
    return {p: (f"{p.parent.name}/{p.name}" if len(folders[p.name]) > 1 else p.name) for p in paths}


def bench_entry(
    artifact: Artifact,
    backend_name: str,
    cfg: BenchConfig,
    dataset,
    frames,
    flow_source,
    name: str | None = None,
    timed_here: bool = True,
) -> tuple[dict, list]:
    """One entry: open, time (unless the timing rounds do it), predict the bench frames, evaluate, close.
    Returns (entry, predictions)."""
    from ..measure.accuracy import Accuracy, evaluate_runner
    from ..measure.prediction import predict
    from ..measure.timing import measure_latency

    path = Path(artifact.path)
    name = name or path.name
    entry = {
        "id": f"{name}{artifact.tag}@{backend_name}",
        "name": name.split(".")[0],
        "backend": backend_name,
        **artifact_info(path),
        "options": dict(artifact.options),
    }
    if backend_name not in cfg.backends:
        return {
            **entry,
            "status": "skipped",
            "reason": f"backend {backend_name} not selected (--backends {','.join(cfg.backends)})",
        }, []
    try:
        be, threads = open_runner(artifact, backend_name, cfg.threads, cfg.device)
    except MissingDependency as exc:  # TensorRT, cuda-python, onnxruntime … not installed here
        return {**entry, "status": "unavailable", "reason": str(exc).splitlines()[0]}, []
    except VssegError as exc:  # the artifact cannot be opened (foreign engine, unknown model, bad manifest …)
        return {**entry, "status": "failed", "reason": str(exc).splitlines()[0]}, []
    with be:
        if backend_name == "torch" and getattr(be, "fp16", False):
            entry["precision"] = "fp16"
        entry.update(status="ok", reason=None, device=be.device, output_kind=be.output_kind, threads=threads)
        if timed_here:
            entry["latency"] = measure_latency(be, frames, TimingConfig(cfg.runs, cfg.warmup)).to_dict()
        preds = predict(be, frames).labels
        acc = (
            evaluate_runner(be, dataset, flow_source, tc=cfg.tc, max_sequences=cfg.max_sequences, progress=cfg.progress)
            if cfg.accuracy
            else Accuracy.not_measured()
        )
        entry["accuracy"] = acc.to_dict()
    return entry, preds


def time_rounds(
    entries: list[dict], artifacts: Sequence[Artifact], cfg: BenchConfig, frames, frame_paths: list[str]
) -> None:
    """`cfg.repeats` rounds, each timing every runnable entry once (in a fresh process with `cfg.isolate`);
    an entry keeps its median round's figures and every round's p50s (`latency_rounds`)."""
    from ..measure.timing import measure_latency
    from .isolate import job, time_in_child

    rounds: dict[str, list[dict]] = {}
    for _ in range(cfg.repeats):
        for e, art in zip(entries, artifacts):
            if e["status"] != "ok":
                continue
            try:
                if cfg.isolate:
                    lat = time_in_child(job(art, e["backend"], cfg, frame_paths))
                else:
                    runner, _ = open_runner(art, e["backend"], cfg.threads, cfg.device)
                    with runner:
                        lat = measure_latency(runner, frames, TimingConfig(cfg.runs, cfg.warmup)).to_dict()
            except VssegError as exc:  # the entry ran here but not in its own process (e.g. memory)
                e.update(status="failed", reason=str(exc).splitlines()[0])
                continue
            rounds.setdefault(e["id"], []).append(lat)
    for e in entries:
        if e["id"] in rounds and e["status"] == "ok":
            lats = sorted(rounds[e["id"]], key=lambda lat: lat["compute"]["p50_ms"])
            e["latency"] = lats[(len(lats) - 1) // 2]
            e["latency_rounds"] = [
                {"compute_p50_ms": lat["compute"]["p50_ms"], "end_to_end_p50_ms": lat["end_to_end"]["p50_ms"]}
                for lat in rounds[e["id"]]
            ]


def add_speed_ratios(entries: list[dict]) -> None:
    """Each entry's speed against its agreement reference: reference p50 / entry p50 (above 1: faster), per
    timing round (the rounds pair them), and the median over rounds."""
    by_id = {e["id"]: e for e in entries}
    for e in entries:
        ref = by_id.get((e.get("agreement") or {}).get("reference"))
        if e["status"] != "ok" or ref is None:
            continue
        mine, theirs = _round_p50s(e), _round_p50s(ref)
        out = {"reference": ref["id"], "rounds": min(len(mine), len(theirs))}
        for key in ("compute_p50_ms", "end_to_end_p50_ms"):
            ratios = [round(r[key] / m[key], 4) for m, r in zip(mine, theirs) if m[key] > 0]
            out[key.replace("_p50_ms", "")] = float(np.median(ratios)) if ratios else None
            out[key.replace("_p50_ms", "_rounds")] = ratios
        e["speed_vs_reference"] = out


def _round_p50s(e: dict) -> list[dict]:
    if e.get("latency_rounds"):
        return e["latency_rounds"]
    lat = e["latency"]
    return [{"compute_p50_ms": lat["compute"]["p50_ms"], "end_to_end_p50_ms": lat["end_to_end"]["p50_ms"]}]


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

    arts = check_models(models)
    load_start = load_average()
    explicit = None
    if cfg.reference is not None:
        ref_art = check_models([cfg.reference])[0]
        same = [a for a in arts if a.path.resolve() == ref_art.path.resolve()]
        if not same:
            arts.append(ref_art)
        explicit = str((same[0] if same else ref_art).path)
    dataset = open_frame_source(cfg.dataset, cfg.split, cfg.kind, flag="--dataset", classes=cfg.classes)
    refs = select_frames(dataset, cfg.frames)
    frames = [dataset.read_image(r) for r in refs]
    flow_source = _flow(cfg, dataset)
    entries, preds = [], {}
    paths = [a.path for a in arts]
    names = unique_names(paths)
    rounds = cfg.isolate or cfg.repeats > 1
    bar = _progress(arts, cfg.progress)
    for art in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(art.path.name)
        entry, p = bench_entry(
            art, infer_backend_name(art.path), cfg, dataset, frames, flow_source, names[art.path], timed_here=not rounds
        )
        entries.append(entry)
        preds[entry["id"]] = p
    if rounds:
        time_rounds(entries, arts, cfg, frames, [str(r.image) for r in refs])
    add_lineage(entries, paths)
    add_agreement(entries, preds, explicit)
    add_speed_ratios(entries)
    report = _assemble(cfg, dataset, refs, flow_source, entries)
    report["environment"]["load_average"] = {"start": load_start, "end": load_average()}
    return report


def _flow(cfg: BenchConfig, dataset):
    if not cfg.tc or not cfg.accuracy:
        return None
    from ..data.flow import open_flow_source

    return open_flow_source(cfg.flow, dataset)


def _process(cfg: BenchConfig) -> str:
    if cfg.isolate:
        return (
            f"each entry timed in a process of its own, {cfg.repeats} round(s) with the entries back to "
            "back; accuracy in the bench process"
        )
    if cfg.repeats > 1:
        return f"single process, {cfg.repeats} timing rounds with the entries back to back"
    return "single process, entries run one after another"


def _progress(paths, enabled: bool):
    if not enabled:
        return paths
    from tqdm import tqdm

    return tqdm(paths, desc="bench", unit="model")


def _assemble(cfg: BenchConfig, dataset, refs, flow_source, entries) -> dict:
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": {
            "name": dataset.name,
            "root": str(dataset.root),
            "split": dataset.split,
            "class_set": dataset.label_set.name,
            "classes": list(dataset.label_set.classes),
            "sequences": len(dataset.sequences),
            "frames": dataset.num_frames,
            "labelled": len(dataset),
            "max_sequences": cfg.max_sequences,
        },
        "flow": getattr(flow_source, "name", None),
        "timing": {
            "runs": cfg.runs,
            "warmup": cfg.warmup,
            "batch": 1,
            "threads": cfg.threads,
            "frames": [
                str(Path(r.image).relative_to(dataset.root))
                if Path(r.image).is_relative_to(dataset.root)
                else str(r.image)
                for r in refs
            ],
            "repeats": cfg.repeats,
            "isolate": cfg.isolate,
            "process": _process(cfg),
            "accuracy": cfg.accuracy,
        },
        "backends": list(cfg.backends),
        "reference_rule": REFERENCE_RULE["explicit" if cfg.reference else "lineage"],
        "environment": environment(),
        "entries": entries,
        "not_run": not_run(entries, cfg.backends),
    }
