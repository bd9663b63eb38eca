"""`vsseg-edge calibrate`: FP32 ONNX + frames → gated INT8 Q/DQ ONNX + manifest.

Steps: read the FP32 model's manifest (its preprocessing is THE preprocessing of the calibration frames),
draw the calibration frames (train split) and the held-out gate frames (val split or a disjoint remainder),
quantise for the target, check the Q/DQ structure, run the accuracy gate; if it fails, rank every node
that reads an activation through Q/DQ by the output error it removes when kept in float (on the Q/DQ
graph itself, whatever quantiser placed the Q/DQ: sensitivity.py), and keep the top 1, 2, 4 … in float
until the gate passes, for a bounded number of rounds. The model is written only when it passes the gate
(or when the caller accepts a failure), atomically, with its manifest, which names the nodes kept in float.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from ..core.errors import VssegError
from ..core.fileio import atomic_path
from ..core.manifest import manifest_preprocess, read_manifest, write_manifest
from ..data.frame_source import UNLABELLED, frame_source_kind
from ..onnx_graph import keep_in_float, qdq_candidates, require_qdq_structure
from .config import CalibConfig
from .frames import FrameSet, calibration_frames, evaluation_frames
from .gate import Evaluator
from .quantize_ort import FrameReader, model_input_name, quantize_ort
from .sensitivity import exclusion_rounds, rank_qdq_nodes


@dataclass
class _Quantizer:
    """Quantises the FP32 model for one target with the ranges of one calibration (cached in `workdir`)."""

    fp32: Path
    cfg: CalibConfig
    reader: FrameReader
    workdir: Path
    use_modelopt: bool
    info: dict = field(default_factory=dict)
    info_gate: str | None = None  # how the gate ran the INT8 model (set by _gate_loop)

    @property
    def ort_cache(self) -> Path:
        return self.workdir / f"ranges_{self.cfg.target}.json"

    def quantize(self, out: Path, exclude: list[str]) -> dict:
        """The target's Q/DQ model with `exclude` (plus the config's `exclude`) kept in float."""
        exclude = list(dict.fromkeys([*self.cfg.exclude, *exclude]))
        info = quantize_ort(self.fp32, out, target=self.cfg.target, method=self.cfg.method,
                            cache_path=self.ort_cache, reader=self.reader, nodes_to_exclude=exclude,
                            percentile=self.cfg.percentile, reduce_range=self.cfg.reduce_range,
                            op_types=self.cfg.op_types)
        if self.use_modelopt:
            from .quantize_trt import quantize_modelopt, write_trt_scale_cache

            trt_cache = self.workdir / "scales.trtcache"
            if not trt_cache.is_file():
                write_trt_scale_cache(self.ort_cache, trt_cache)
            self.reader.rewind()
            sample = self.reader.get_next()[self.reader.input_name]
            info = quantize_modelopt(self.fp32, out, trt_cache=trt_cache, sample=sample,
                                     input_name=self.reader.input_name, method=self.cfg.method,
                                     nodes_to_exclude=exclude)
        return info


def calibrate(model: str | Path, frames: str | Path, out: str | Path, cfg: CalibConfig,
              eval_source: str | Path | None = None, keep_failed: bool = False,
              log: Callable[[str], None] = print) -> dict:
    """Calibrate, quantise and gate `model`; write `out` and `out.json`; return the manifest."""
    model, out = Path(model), Path(out)
    if out.suffix != ".onnx" or out.resolve() == model.resolve():
        raise VssegError(f"--out {out}: expected a new .onnx path (e.g. model.int8.qdq.onnx), not the FP32 model")
    parent, spec = _read_parent(model)
    calib, held = calibration_frames(frames, cfg.num_frames, cfg.seed, cfg.split,
                                     holdout=0 if _is_dataset(frames) or eval_source else cfg.eval_frames)
    gate_set = _gate_frames(frames, eval_source, held, cfg)
    _check_disjoint(calib, gate_set)
    log(f"calibration: {len(calib)} frames from {calib.source} ({calib.kind}, split {calib.split}, seed {cfg.seed})")
    use_modelopt = _use_modelopt(cfg)
    with tempfile.TemporaryDirectory(prefix="vsseg-calib-") as tmp:
        workdir = Path(tmp)
        reader = FrameReader(calib.frames, spec, model_input_name(onnx.load(str(model))))
        q = _Quantizer(model, cfg, reader, workdir, use_modelopt)
        candidate = workdir / "model.qdq.onnx"
        info = q.quantize(candidate, [])
        require_qdq_structure(candidate, cfg.target)
        gate, initial, rounds, ranked = None, None, [], []
        if cfg.gate and gate_set is not None:
            initial, gate, rounds, ranked, info = _gate_loop(q, candidate, info, gate_set, spec, parent["classes"], log)
            if not gate.passed and not keep_failed:
                raise VssegError(f"{model}: accuracy gate failed after {len(rounds)} round(s) of sensitive nodes kept in float: "
                                 f"{gate.summary()}; raise --threshold, add frames, or pass --keep-failed")
        report = require_qdq_structure(candidate, cfg.target)
        with atomic_path(out) as tmp_out:
            shutil.copyfile(candidate, tmp_out)
    return write_manifest(
        out, "qdq_onnx", model=parent["model"], classes=parent["classes"], preprocess=spec,
        output=parent.get("output", "logits"), precision="int8", parent=model,
        opset=_opset(out), target=cfg.target, config=cfg.to_dict(),
        calibration={"frames": calib.record(), "method": cfg.method,
                     "percentile": cfg.percentile if cfg.method == "percentile" else None},
        quantization=info, excluded_layers=_excluded(info), kept_in_float=info.get("kept_in_float", []),
        gate={"result": gate.to_dict() if gate else None, "initial": initial.to_dict() if initial else None,
              "frames": gate_set.record() if gate_set else None,
              "evaluated_with": q.info_gate, "rounds": rounds, "sensitivity": [[n, s] for n, s in ranked[:20]],
              "skipped": None if gate else ("disabled" if not cfg.gate else "no held-out frames")},
        structure=report.to_dict(),
    )


def _gate_loop(q: _Quantizer, candidate: Path, info: dict, gate_set: FrameSet, spec, classes, log):
    """Gate the candidate; on failure rank its Q/DQ nodes and keep more of them in float, round by round.

    Returns (first gate result, final gate result, rounds, ranked nodes, quantiser info of the final model,
    with `kept_in_float`). When no round passes, the final model is the best one seen (lowest criterion).
    """
    ev = Evaluator(q.fp32, gate_set.frames, spec, classes, q.cfg.threads, q.cfg.sensitivity_frames,
                   exact_qdq=q.cfg.target == "trt")
    gate = initial = ev.gate(candidate, q.cfg.threshold)
    q.info_gate = ev.evaluated_with
    log(f"accuracy gate ({ev.evaluated_with}): {gate.summary()}")
    rounds, ranked = [], []
    info = {**info, "kept_in_float": []}
    if gate.passed or q.cfg.max_rounds == 0:
        return initial, gate, rounds, ranked, info
    base = onnx.load(str(candidate))
    nodes = [n for n in qdq_candidates(base) if n not in q.cfg.exclude]
    log(f"ranking the {len(nodes)} nodes that read activations through Q/DQ (leave-one-out in float)")
    base_error, ranked = rank_qdq_nodes(base, nodes, lambda m: ev.output_error(m, q.cfg.sensitivity_frames), log)
    helpful = [(n, s) for n, s in ranked if s > 0]  # keeping a node in float that removes no error buys nothing
    best = (gate.drop, [])
    for keep in exclusion_rounds(helpful, q.cfg.max_rounds):
        onnx.save(keep_in_float(base, keep), str(candidate))
        gate = ev.gate(candidate, q.cfg.threshold)
        rounds.append({"kept_in_float": keep, **gate.to_dict()})
        log(f"round {len(rounds)}: {len(keep)} node(s) kept in float: {gate.summary()}")
        if gate.passed:
            break
        if gate.drop < best[0]:
            best = (gate.drop, keep)
    keep = rounds[-1]["kept_in_float"] if rounds else []
    if not gate.passed and keep != best[1]:  # no round passed: keep the best model seen, not the last
        keep = best[1]
        onnx.save(keep_in_float(base, keep), str(candidate))
        gate = ev.gate(candidate, q.cfg.threshold)
        log(f"no round passed; keeping the best: {len(keep)} node(s) in float: {gate.summary()}")
    info["kept_in_float"], info["quantized_error"] = list(keep), base_error
    return initial, gate, rounds, ranked, info


def _excluded(info: dict) -> list[str]:
    """Nodes not quantised: those the quantiser was told to skip, then those the gate kept in float."""
    return list(dict.fromkeys([*info.get("nodes_to_exclude", []), *info.get("kept_in_float", [])]))


def _read_parent(model: Path):
    if not model.is_file():
        raise VssegError(f"{model}: ONNX model not found")
    parent = read_manifest(model, kind="onnx")
    spec = manifest_preprocess(parent, str(model))
    try:
        onnx.checker.check_model(str(model))
    except Exception as exc:  # onnx raises several types for corrupt files
        raise VssegError(f"{model}: not a valid ONNX model ({str(exc).splitlines()[0]})") from None
    return parent, spec


def _is_dataset(frames) -> bool:
    return frame_source_kind(frames, "--frames") not in UNLABELLED


def _gate_frames(frames, eval_source, held: FrameSet | None, cfg: CalibConfig) -> FrameSet | None:
    if eval_source is not None:
        return evaluation_frames(eval_source, cfg.eval_frames, cfg.seed, cfg.eval_split)
    if _is_dataset(frames):
        return evaluation_frames(frames, cfg.eval_frames, cfg.seed, cfg.eval_split)
    return held


def _check_disjoint(calib: FrameSet, gate_set: FrameSet | None) -> None:
    """Never judge a model on the frames that calibrated it."""
    if gate_set is None or gate_set.source != calib.source:
        return
    shared = {f.key for f in calib.frames} & {f.key for f in gate_set.frames}
    if shared:
        raise VssegError(f"--frames {calib.source}: {len(shared)} gate frame(s) are also calibration frames "
                         f"(e.g. {sorted(shared)[0]}); use another --eval-split or --eval-frames")


def _use_modelopt(cfg: CalibConfig) -> bool:
    if cfg.target != "trt" or cfg.quantizer == "ort":
        return False
    from .quantize_trt import MODELOPT_PACKAGES, modelopt_available

    if modelopt_available():
        return True
    if cfg.quantizer == "modelopt":
        raise VssegError("quantizer 'modelopt': NVIDIA ModelOpt is not installed; install "
                         + ", ".join(MODELOPT_PACKAGES) + " (not the [onnx] extra, which pulls onnxruntime-gpu)")
    return False


def _opset(path: Path) -> int | None:
    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
