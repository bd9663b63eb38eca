"""`vsseg-edge calibrate`: FP32 ONNX + frames → gated INT8 Q/DQ ONNX + manifest.

Steps: read the FP32 model's manifest (its preprocessing is THE preprocessing of the calibration frames),
draw the calibration frames (train split) and the held-out gate frames (val split or a disjoint remainder),
quantise for the target, check the Q/DQ structure, run the gates: the accuracy gate (mIoU drop, or
disagreement without labels) and the temporal-consistency gate (TC drop on consecutive frames, temporal.py:
per-frame figures cannot see INT8 flicker). If a gate fails, rank every node that reads an activation
through Q/DQ by what fails — the output error, or the INT8-only flips between frames, it removes when kept
in float (on the Q/DQ graph itself, whatever quantiser placed the Q/DQ: sensitivity.py) — and keep the top
1, 2, 4 … in float until both pass, for a bounded number of rounds; a failure names the QAT command. With
`protect_classes`, the nodes that most flip those classes on the frames richest in them go to float too, and
both gates judge again (protect.py: for thin classes the gate frames may not show). The
model is written only when it passes (or when the caller accepts a failure), atomically, with its manifest:
both gates' figures, the TC frames and flow, the nodes kept in float, and the FP32/INT8 speed ratio measured
on this machine (speed.py).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import onnx

from ..core.errors import VssegError
from ..core.fileio import atomic_path, check_output, write_errors
from ..core.manifest import manifest_preprocess, read_manifest, write_manifest
from ..core.signals import temporary_directory
from ..data.frame_source import UNLABELLED, frame_source_kind
from ..onnx_graph import (
    integer_kernel_convs,
    keep_in_float,
    narrow_weights,
    node_key,
    qdq_candidates,
    quantize_conv_outputs,
    quantized_convs,
    require_qdq_structure,
    shift_activations_to_uint8,
    small_channel_convs,
    unsigned_integer_kernels,
)
from .config import CalibConfig
from .frames import FrameSet, calibration_frames, evaluation_frames
from .gate import HOW, Evaluator, GateResult
from .quantize_ort import FrameReader, model_input_name, quantize_ort, symmetric_scales
from .sensitivity import exclusion_rounds, rank_qdq_nodes
from .temporal import FLOW_NAME, TcFrames, TcResult, TemporalGate, tc_frames_from


@dataclass
class _Quantizer:
    """Quantises the FP32 model for one target with the ranges of one calibration (cached in `workdir`)."""

    fp32: Path  # the FP32 model: the gates' reference
    cfg: CalibConfig
    reader: FrameReader
    workdir: Path
    use_modelopt: bool
    info: dict = field(default_factory=dict)
    source: Path | None = None  # what is quantised: the FP32 model, or its equalised copy (`equalize_source`)
    equalization: dict | None = None
    _small: list[str] | None = field(default=None, init=False, repr=False)

    @property
    def small_channel(self) -> list[str]:
        """The convolutions the `trt` placement leaves in float when onnxruntime's quantiser places the Q/DQ
        (ModelOpt leaves them in float itself)."""
        if self._small is None:
            rule = self.cfg.placement == "trt" and not self.use_modelopt
            self._small = small_channel_convs(onnx.load(str(self.source or self.fp32))) if rule else []
        return self._small

    def equalize_source(self) -> dict | None:
        """With `cfg.equalize` (α > 0): rescale the FP32 model's channels (calib/equalize.py) on the
        calibration frames, into the work folder; the quantiser then reads that copy. Returns its record."""
        self.source = self.fp32
        if not self.cfg.equalize:
            return None
        from .equalize import equalize_file

        self.reader.rewind()
        feeds = iter(self.reader.get_next, None)
        self.source = self.workdir / "equalized.onnx"
        self.equalization = equalize_file(
            self.fp32,
            self.source,
            feeds,
            alpha=self.cfg.equalize,
            branch=self.cfg.equalize_branches,
            threads=self.cfg.threads,
        )
        return self.equalization

    @property
    def ort_cache(self) -> Path:
        return self.workdir / f"ranges_{self.cfg.target}.json"

    def quantize(self, out: Path, exclude: list[str]) -> dict:
        """The target's Q/DQ model with `exclude` (plus the config's `exclude`) kept in float."""
        exclude = list(dict.fromkeys([*self.cfg.exclude, *exclude]))
        info = self._place(out, exclude)
        return self._for_onnxruntime(out, info) if self.cfg.target == "ort" else info

    def _for_onnxruntime(self, out: Path, info: dict) -> dict:
        """The onnxruntime flavour: ModelOpt's symmetric int8 Q/DQ re-encoded for onnxruntime's CPU kernels
        (activations shifted to uint8: exact, `onnx_graph.shift_activations_to_uint8`), then the guard against
        the u8×s8 kernel's saturation: uint8 weights on the convolutions onnxruntime runs as integer kernels
        (`integer_weights: uint8`, `onnx_graph.unsigned_weights`, exact), or 7-bit weights where `reduce_range`
        asks: on every convolution (true) or on those integer kernels (`integer_kernels`,
        `onnx_graph.integer_kernel_convs`; the others run in float on dequantised values)."""
        model = onnx.load(str(out))
        if self.use_modelopt:
            model = shift_activations_to_uint8(model)
        mode = self.cfg.reduce_range
        convs = integer_kernel_convs(model) if mode == "integer_kernels" else quantized_convs(model) if mode else []
        if convs:
            model = narrow_weights(model, convs, bits=7)
        unsigned = []
        if self.cfg.integer_weights == "uint8":
            model, unsigned = unsigned_integer_kernels(model)
        onnx.save(model, str(out))
        if self.use_modelopt:
            info = {**info, "activations": "uint8 (ModelOpt's int8 Q/DQ shifted, exact)"}
        return {**info, "reduce_range": mode, "seven_bit_weights": convs, "uint8_weights": unsigned}

    def quantize_outputs(self, path: Path) -> list[str]:
        """`cfg.integer_outputs`: the model at `path` with its quantised convolutions' float-read outputs quantised at
        the calibration's scales (`onnx_graph.quantize_conv_outputs`), in place; returns those convolutions."""
        model, convs = quantize_conv_outputs(onnx.load(str(path)), symmetric_scales(self.ort_cache))
        onnx.save(model, str(path))
        return convs

    def _place(self, out: Path, exclude: list[str]) -> dict:
        """Quantise `source` into `out` (Q/DQ placed by the quantiser, then the readers' rewrite)."""
        source = self.source or self.fp32
        info = quantize_ort(
            source,
            out,
            target=self.cfg.target,
            method=self.cfg.method,
            cache_path=self.ort_cache,
            reader=self.reader,
            nodes_to_exclude=list(dict.fromkeys([*exclude, *self.small_channel])),
            percentile=self.cfg.percentile,
            op_types=self.cfg.op_types,
        )
        if self.use_modelopt:
            from .quantize_trt import quantize_modelopt, write_trt_scale_cache

            trt_cache = self.workdir / "scales.trtcache"
            if not trt_cache.is_file():
                write_trt_scale_cache(self.ort_cache, trt_cache)
            self.reader.rewind()
            sample = self.reader.get_next()[self.reader.input_name]
            info = quantize_modelopt(
                source,
                out,
                trt_cache=trt_cache,
                sample=sample,
                input_name=self.reader.input_name,
                method=self.cfg.method,
                nodes_to_exclude=exclude,
            )
        if self.small_channel:
            info = {**info, "placement": self.cfg.placement, "small_channel_float": list(self.small_channel)}
        if self.cfg.readers:
            readers = float_readers(out, self.cfg.readers)
            info = {**info, "quantized_readers": list(self.cfg.readers), "readers_in_float": readers}
        _exclusions_in_float(out, [*exclude, *self.small_channel])
        if self.equalization is not None:
            info = {**info, "equalization": self.equalization}
        return info


def _something_quantised(candidate: Path, model: Path, cfg: CalibConfig) -> None:
    """A model whose every convolution stays in float (all small-channel ones, or excluded) is refused in one line
    that says why, before the structure check calls it "not a Q/DQ model"."""
    if qdq_candidates(onnx.load(str(candidate))):
        return
    small = small_channel_convs(onnx.load(str(model)))
    why = (
        f"its {len(small)} convolution(s) with < 16 channels are ones TensorRT has no int8 kernel for (placement "
        "'trt'); --override placement=all quantises them"
        if small and cfg.placement == "trt"
        else "every node that could be quantised is excluded or of an op type not quantised"
    )
    raise VssegError(f"{model}: nothing to quantise: {why}")


def _exclusions_in_float(path: Path, names: list[str]) -> None:
    """Excluded nodes read float. onnxruntime's quantiser does not quantise an excluded node, but where another
    node reads the same tensor quantised, every reader of that tensor reads its Q/DQ — the excluded one too."""
    model = onnx.load(str(path))
    still = sorted(set(names) & set(qdq_candidates(model)))
    if still:
        onnx.save(keep_in_float(model, still), str(path))


def calibrate(
    model: str | Path,
    frames: str | Path,
    out: str | Path,
    cfg: CalibConfig,
    eval_source: str | Path | None = None,
    keep_failed: bool = False,
    log: Callable[[str], None] = print,
    tc_source: str | Path | None = None,
    protect_source: str | Path | None = None,
) -> dict:
    """Calibrate, quantise and gate `model`; write `out` and `out.json`; return the manifest.

    `tc_source` (--tc-frames): consecutive frames for the temporal-consistency gate (default: see `_tc_frames`).
    `protect_source` (--protect-frames): the frames `cfg.protect_classes` are ranked on (default: `frames`).
    """
    model, out = Path(model), Path(out)
    if out.suffix != ".onnx" or out.resolve() == model.resolve():
        raise VssegError(f"--out {out}: expected a new .onnx path (e.g. model.int8.qdq.onnx), not the FP32 model")
    parent, spec = _read_parent(model)
    protect, protect_default = protected_classes(cfg, parent["classes"])
    if protect:  # before any work: a class the model does not have
        from .protect import class_indices

        class_indices(protect, parent["classes"], str(model))
    elif protect_source is not None:
        raise VssegError(f"--protect-frames {protect_source}: give the classes to protect with --protect-classes")
    # before any work: the Q/DQ model is at most about as large as the FP32 one
    check_output(
        out,
        "--out",
        suffixes=(".onnx",),
        inputs=[model, frames, eval_source, tc_source, protect_source],
        need_bytes=model.stat().st_size + (64 << 10),
    )
    reserve = cfg.tc_clip_frames if _tc_wanted(cfg) and _same_source(tc_source, frames) else 0
    calib, held = calibration_frames(
        frames,
        cfg.num_frames,
        cfg.seed,
        cfg.split,
        holdout=0 if _is_dataset(frames) or eval_source else cfg.eval_frames,
        reserve_tail=reserve,
    )
    gate_set = _gate_frames(frames, eval_source, held, cfg)
    _check_disjoint(calib, gate_set)
    log(f"calibration: {len(calib)} frames from {calib.source} ({calib.kind}, split {calib.split}, seed {cfg.seed})")
    tc_frames, tc_skipped = _tc_frames(cfg, frames, eval_source, tc_source, calib, gate_set)
    use_modelopt = _use_modelopt(cfg)
    # one temporary folder for the ranges and candidates: removed on success, on failure and on Ctrl-C / SIGTERM
    with temporary_directory("vsseg-calib-") as tmp, write_errors(tmp, "temporary folder"):
        workdir = Path(tmp)
        reader = FrameReader(calib.frames, spec, model_input_name(onnx.load(str(model))))
        q = _Quantizer(model, cfg, reader, workdir, use_modelopt)
        eq = q.equalize_source()
        if eq is not None:
            spread = [(s["spread_before"], s["spread_after"]) for s in eq["sites"]]
            log(
                f"equalised the channels of {len(spread)} convolution input(s) (α {cfg.equalize}); largest "
                f"max/median channel range {max((b for b, _ in spread), default=1):.1f} → "
                f"{max((a for _, a in spread), default=1):.1f}"
            )
        candidate = workdir / "model.qdq.onnx"
        info = q.quantize(candidate, [])
        _something_quantised(candidate, model, cfg)
        require_qdq_structure(candidate, cfg.target)
        loop = None
        if cfg.gate and gate_set is not None:
            loop = _gate_loop(q, candidate, info, gate_set, tc_frames, spec, parent["classes"], log)
            info = loop.info
        hint = [] if protect else _protect_hint(cfg, loop.final.tc if loop else None)
        if hint:
            log(
                f"TC gate: INT8 costs {', '.join(hint)} the most TC on its frames; --protect-classes "
                f"'{','.join(hint)}' keeps in float the nodes that flip them"
            )
        protection = None
        if protect:
            pool = _protect_pool(cfg, protect_source or frames, gate_set, tc_frames)
            protection = _protect(q, candidate, pool, spec, parent, loop, protect, protect_default, log)
        if protection is not None:
            info = {**info, "protected_in_float": protection.kept_in_float}
        if cfg.integer_outputs:
            convs = q.quantize_outputs(candidate)
            info = {**info, "integer_outputs": convs}
            log(f"integer outputs: {len(convs)} convolution(s) get a quantised output (onnxruntime's QLinearConv)")
        if loop and cfg.judged_on_kernels:
            loop.judge_deployed(candidate, log)
        if loop and not loop.final.passed and not keep_failed:
            raise VssegError(_failure(model, parent, cfg, loop, hint))
        report = require_qdq_structure(candidate, cfg.target)
        speed = _speed(model, candidate, spec, parent, cfg, gate_set or calib, log)
        gate = loop.final.accuracy if loop else None
        tc = loop.final.tc if loop else None
        with atomic_path(out, "--out") as tmp_out:
            shutil.copyfile(candidate, tmp_out)
            # the manifest before the rename: when it cannot be written, no model is left without one
            man = write_manifest(
                out,
                "qdq_onnx",
                model=parent["model"],
                classes=parent["classes"],
                palette=parent.get("palette"),
                preprocess=spec,
                output=parent.get("output", "logits"),
                precision="int8",
                parent=model,
                content=tmp_out,
                opset=_opset(tmp_out),
                target=cfg.target,
                config=cfg.to_dict(),
                calibration={
                    "frames": calib.record(),
                    "method": cfg.method,
                    "percentile": cfg.percentile if cfg.method == "percentile" else None,
                },
                quantization=info,
                excluded_layers=_excluded(info),
                kept_in_float=info.get("kept_in_float", []),
                protected=protection.to_dict() if protection else None,
                gate={
                    "result": gate.to_dict() if gate else None,
                    "initial": loop.initial.accuracy.to_dict() if loop else None,
                    "passed": loop.final.passed if loop else None,
                    "frames": gate_set.record() if gate_set else None,
                    "evaluated_with": loop.ev.evaluated_with if loop else None,
                    "searched": (
                        {"evaluated_with": HOW[True], **loop.searched.to_dict()} if loop and loop.searched else None
                    ),
                    "rounds": loop.rounds if loop else [],
                    "ranked_by": loop.ranked_by if loop else None,
                    "sensitivity": [[n, s] for n, s in (loop.ranked if loop else [])[:20]],
                    "skipped": None if gate else ("disabled" if not cfg.gate else "no held-out frames"),
                    "tc": {
                        "result": tc.to_dict() if tc else None,
                        "initial": loop.initial.tc.to_dict() if loop and loop.initial.tc else None,
                        "frames": tc_frames.record() if tc_frames else None,
                        "flow": FLOW_NAME if tc_frames else None,
                        "skipped": None if tc else (tc_skipped or "no held-out frames"),
                    },
                },
                speed=speed,
                structure=report.to_dict(),
            )
    return man


@dataclass
class _Verdict:
    """Both gates on one candidate: the accuracy gate, and the TC gate when it runs."""

    accuracy: GateResult
    tc: TcResult | None

    @property
    def passed(self) -> bool:
        return self.accuracy.passed and (self.tc is None or self.tc.passed)

    @property
    def shortfall(self) -> float:
        """How far past the thresholds (points; 0 when both pass): the search keeps the smallest."""
        acc = max(0.0, self.accuracy.drop - self.accuracy.threshold)
        return acc + (max(0.0, self.tc.judged - self.tc.threshold) if self.tc else 0.0)

    def summary(self) -> str:
        return self.accuracy.summary() + (f"; {self.tc.summary()}" if self.tc else "")

    def to_dict(self) -> dict:
        return {**self.accuracy.to_dict(), "tc": self.tc.to_dict() if self.tc else None, "passed_both": self.passed}


@dataclass
class _Loop:
    initial: _Verdict
    final: _Verdict
    rounds: list
    ranked: list
    ranked_by: list | None
    info: dict
    judge: Callable[[object], _Verdict]  # both gates on a candidate (a file or an in-memory model)
    ev: Evaluator
    searched: _Verdict | None = None  # the search's last verdict, when the final one is judged on other arithmetic

    def judge_deployed(self, candidate: Path, log) -> None:
        """The onnxruntime flavour searched with exact Q/DQ arithmetic: both gates judge the final model once more
        on onnxruntime's integer kernels, as deployed; that verdict decides (`CalibConfig.judged_on_kernels`)."""
        searched_with = self.ev.evaluated_with
        self.ev.use_kernels()
        self.searched, self.final = self.final, self.judge(candidate)
        log(f"gates on {self.ev.evaluated_with} (the search ran with {searched_with}): {self.final.summary()}")


def _gate_loop(
    q: _Quantizer, candidate: Path, info: dict, gate_set: FrameSet, tc_frames: TcFrames | None, spec, classes, log
) -> _Loop:
    """Gate the candidate; on failure rank its Q/DQ nodes by what fails and keep more of them in float.

    What fails decides the ranking: a failed accuracy gate ranks by the output error a node's float fallback
    removes, a failed TC gate by the INT8-only flips between consecutive frames it removes, both by the sum of
    the two, each relative to the fully quantised model's. When no round passes, the final model is the best
    one seen (smallest shortfall past the thresholds).
    """
    cfg = q.cfg
    ev = Evaluator(
        q.fp32, gate_set.frames, spec, classes, cfg.threads, cfg.sensitivity_frames, exact_qdq=cfg.exact_search
    )
    tg = None
    if tc_frames is not None:
        fp32 = q.fp32
        tg = TemporalGate(
            fp32,
            tc_frames,
            spec,
            classes,
            lambda m, frames: ev.labels(m, frames, exact_qdq=False if m is fp32 else None),
        )

    def judge(model) -> _Verdict:
        return _Verdict(
            ev.gate(model, cfg.threshold),
            tg.measure(model, cfg.tc_threshold, cfg.tc_confidence, cfg.tc_per_clip) if tg else None,
        )

    verdict = initial = judge(candidate)
    log(f"accuracy gate ({ev.evaluated_with}): {initial.accuracy.summary()}")
    if initial.tc:
        log(f"TC gate ({tc_frames.source}, {FLOW_NAME}): {initial.tc.summary()}")
    rounds, ranked, ranked_by = [], [], None
    info = {**info, "kept_in_float": []}
    if verdict.passed or cfg.max_rounds == 0:
        return _Loop(initial, verdict, rounds, ranked, ranked_by, info, judge, ev)
    base = onnx.load(str(candidate))
    nodes = [n for n in qdq_candidates(base) if n not in cfg.exclude]
    error_of, ranked_by = _error_function(base, ev, tg, verdict, cfg)
    log(
        f"ranking the {len(nodes)} nodes that read activations through Q/DQ by {' + '.join(ranked_by)} "
        "(leave-one-out in float)"
    )
    base_error, ranked = rank_qdq_nodes(base, nodes, error_of, log)
    helpful = [(n, s) for n, s in ranked if s > 0]  # keeping a node in float that removes no error buys nothing
    best = (verdict.shortfall, [])
    for keep in exclusion_rounds(helpful, cfg.max_rounds, len(nodes)):
        onnx.save(keep_in_float(base, keep), str(candidate))
        verdict = judge(candidate)
        rounds.append({"kept_in_float": keep, **verdict.to_dict()})
        log(f"round {len(rounds)}: {len(keep)} node(s) kept in float: {verdict.summary()}")
        if verdict.passed:
            break
        if verdict.shortfall < best[0]:
            best = (verdict.shortfall, keep)
    keep = rounds[-1]["kept_in_float"] if rounds else []
    if not verdict.passed and keep != best[1]:  # no round passed: keep the best model seen, not the last
        keep = best[1]
        onnx.save(keep_in_float(base, keep), str(candidate))
        verdict = judge(candidate)
        log(f"no round passed; keeping the best: {len(keep)} node(s) in float: {verdict.summary()}")
    info["kept_in_float"], info["quantized_error"] = list(keep), base_error
    return _Loop(initial, verdict, rounds, ranked, ranked_by, info, judge, ev)


def _protect_pool(cfg: CalibConfig, source, gate_set: FrameSet | None, tc_frames: TcFrames | None) -> FrameSet:
    """The frames the protected classes are ranked on: up to `protect_pool` of `source`'s calibration split (a
    seeded sample), without the accuracy gate's and the TC gate's frames — those judge the result."""
    pool, _ = calibration_frames(source, cfg.protect_pool, cfg.seed, cfg.split)
    judged = set()
    for other, keys in (
        (gate_set, [f.key for f in gate_set.frames] if gate_set else []),
        (tc_frames, [k for c in tc_frames.clips for k in c.keys] if tc_frames else []),
    ):
        if other is not None and Path(other.source).resolve() == Path(pool.source).resolve():
            judged.update(keys)
    pool.frames = [f for f in pool.frames if f.key not in judged]
    return pool


def protected_classes(cfg: CalibConfig, classes) -> tuple[tuple[str, ...], bool]:
    """The classes `calibrate` protects, and whether they are the default: `cfg.protect_classes` when set ([] = none),
    else the thin classes of the built-in class set the model's classes are (`core.labels.LabelSet.thin`)."""
    if cfg.protect_classes is not None:
        return tuple(cfg.protect_classes), False
    from ..core.labels import label_set_for

    thin = label_set_for(classes).thin
    return tuple(thin), bool(thin)


def _protect(
    q: _Quantizer, candidate: Path, pool: FrameSet, spec, parent: dict, loop: _Loop | None, names, default: bool, log
):
    """Keep in float the nodes that most protect the classes `names` (calib/protect.py), in `candidate`; then both
    gates judge the result again (what ships is what was judged). With the class set's default classes (`default`),
    frames that show none of them skip the step (None, and a log line) instead of failing."""
    from .protect import NoProtectedClass, protect_classes

    cfg = q.cfg
    try:
        model, record = protect_classes(
            onnx.load(str(candidate)),
            q.fp32,
            pool,
            spec,
            parent["classes"],
            names,
            keep=cfg.protect_nodes,
            frames=cfg.protect_frames,
            exclude=cfg.exclude,
            threads=cfg.threads,
            exact_qdq=cfg.exact_search,
            model_name=str(q.fp32),
            log=log,
        )
    except NoProtectedClass as exc:
        if not default:
            raise
        log(f"protected classes: skipped, {str(exc).split(': ', 1)[-1]} (--protect-frames gives other frames)")
        return None
    record.default = default
    onnx.save(model, str(candidate))
    log(f"protected classes{' (the class set default)' if default else ''}: {record.summary()}")
    if loop is not None and record.kept_in_float:
        loop.final = loop.judge(candidate)
        log(f"gates after protecting {', '.join(record.classes)}: {loop.final.summary()}")
    return record


def _error_function(base: onnx.ModelProto, ev: Evaluator, tg: TemporalGate | None, verdict: _Verdict, cfg: CalibConfig):
    """The sensitivity search's error for what failed (see `_gate_loop`), and the names of its terms."""
    terms = []
    if not verdict.accuracy.passed or tg is None:
        terms.append(("output error", lambda m: ev.output_error(m, cfg.sensitivity_frames)))
    if verdict.tc is not None and not verdict.tc.passed:
        failing = verdict.tc.failing_clips if verdict.tc.per_clip else None  # rank by the clips that fail
        terms.append(("INT8-only flips", lambda m: tg.flip_error(m, cfg.sensitivity_frames, failing)))
    if len(terms) == 1:
        return terms[0][1], [terms[0][0]]
    scale = [max(fn(base), 1e-12) for _, fn in terms]
    return (lambda m: sum(fn(m) / s for (_, fn), s in zip(terms, scale))), [name for name, _ in terms]


PROTECT_HINT = 2.0  # points: a class losing at least this much TC on the TC gate's frames is named in a hint


def _protect_hint(cfg: CalibConfig, tc: TcResult | None) -> list[str]:
    """The (at most 3) classes INT8 costs at least PROTECT_HINT (and twice the TC threshold) points of TC on the TC
    gate's frames, largest first (asked when no class is protected) — TC is a mean over classes, so one thin class
    that flickers can carry a drop."""
    if tc is None:
        return []
    return [c for c, d in tc.class_drops() if d >= max(PROTECT_HINT, 2 * cfg.tc_threshold)][:3]


def _failure(model: Path, parent: dict, cfg: CalibConfig, loop: _Loop, hint: Sequence[str] = ()) -> str:
    """The one-line failure: both figures, and what to do — QAT when keeping nodes in float was not enough."""
    ckpt = (parent.get("parent") or {}).get("file") or "CHECKPOINT.pt"
    acc_ok, tc = loop.final.accuracy.passed, loop.final.tc
    what = "TC" if acc_ok else ("accuracy and TC" if tc and not tc.passed else "accuracy")
    if loop.searched is not None and loop.searched.passed:  # exact arithmetic passed, onnxruntime's kernels did not
        return (
            f"{model}: {what} gate failed on {loop.ev.evaluated_with}, after passing under exact Q/DQ arithmetic "
            f"(the search's): {loop.final.summary()}. "
            + (
                "integer_outputs adds a rounding on every convolution's output after the search: drop it "
                "(--override integer_outputs=false)"
                if cfg.integer_outputs
                else "This CPU's integer kernels compute another model than the Q/DQ file says: with --override "
                "integer_weights=int8 on a CPU without VNNI their pair sums saturate (use uint8, the preset's); or "
                "search on the kernels themselves: --override search_arithmetic=kernels"
            )
        )
    first = (
        f"First keep in float the nodes that flip the classes that lost most TC here: --protect-classes "
        f"'{','.join(hint)}'. "
        "If post-training quantisation still does not reach it"
        if hint and tc and not tc.passed
        else "Post-training quantisation does not reach it"
    )
    return (
        f"{model}: {what} gate failed after {len(loop.rounds)} round(s) of sensitive nodes kept in float: "
        f"{loop.final.summary()}. {first}: fine-tune with fake INT8, "
        f"distillation from the FP32 model and the temporal loss (QAT): vsseg-edge train train/qat_tc.yaml "
        f"--override model.name={parent.get('model')} --override model.init_checkpoint={ckpt} "
        f"--override teacher.checkpoint={ckpt} --override video.root=CLIPS (the recipe's header lists the "
        f"other settings), then vsseg-edge export runs/train/qat_tc/model.pt --target {cfg.target} "
        f"--preset export/qat.yaml -o MODEL.int8.qdq.onnx; or raise --threshold / "
        "--tc-threshold, add frames, or pass --keep-failed"
    )


def _tc_wanted(cfg: CalibConfig) -> bool:
    return cfg.gate and cfg.tc_gate


def _same_source(tc_source, frames) -> bool:
    """True when the TC frames would come from the calibration source (so its clips' tails are reserved)."""
    return tc_source is None or Path(tc_source).resolve() == Path(frames).resolve()


def _tc_frames(
    cfg: CalibConfig, frames, eval_source, tc_source, calib: FrameSet, gate_set: FrameSet | None
) -> tuple[TcFrames | None, str | None]:
    """The TC gate's consecutive frames, or (None, why not). Default: the calibration clip's frames not used
    for calibration (each clip's last `tc_clip_frames`, reserved), or the sequences of the dataset's eval split."""
    if not _tc_wanted(cfg):
        return None, "disabled"
    if gate_set is None:
        return None, "no held-out frames"
    opts = dict(max_frames=cfg.tc_max_frames, clip_frames=cfg.tc_clip_frames, seed=cfg.seed)
    skip = [f.key for f in calib.frames]
    if tc_source is not None:
        same = _same_source(tc_source, frames)
        return tc_frames_from(
            tc_source, cfg.eval_split, how="given (--tc-frames)", skip=skip if same else (), **opts
        ), None
    if not _is_dataset(frames):
        how = "the calibration clip's frames not used for calibration (the last frames of each clip)"
        return tc_frames_from(frames, cfg.eval_split, how=how, skip=skip, **opts), None
    source = eval_source or frames
    try:
        return tc_frames_from(source, cfg.eval_split, how=f"the sequences of split {cfg.eval_split}", **opts), None
    except VssegError as exc:
        return None, f"{str(exc).split(': ', 1)[-1]}: pass --tc-frames CLIP (a video or a folder of frames)"


def _speed(model: Path, candidate: Path, spec, parent: dict, cfg: CalibConfig, frames: FrameSet, log) -> dict | None:
    """FP32 vs INT8 compute-only latency on this machine (`calib.speed`), or None when `speed_runs` is 0."""
    if not cfg.speed_runs or not frames.frames:
        return None
    from .speed import measure_speed

    speed = measure_speed(
        model,
        candidate,
        spec,
        frames.frames[0].read(),
        runs=cfg.speed_runs,
        threads=cfg.threads,
        output_kind=parent.get("output", "logits"),
        classes=parent["classes"],
    )
    log(
        f"speed on this CPU ({speed['cpu']}): FP32 {speed['fp32_ms']:.1f} ms, INT8 {speed['int8_ms']:.1f} ms "
        f"(FP32/INT8 {speed['ratio']}×)"
    )
    return speed


def float_readers(path: Path, readers) -> list[str]:
    """Rewrite the Q/DQ model at `path` so that only nodes of the op types `readers` read activations through
    Q/DQ; every other reader of a quantised tensor (a residual Add, a Concat, BatchNormalization, pooling) reads
    the float tensor behind it (`keep_in_float`). Returns those nodes.

    Why: a quantiser puts a Q/DQ pair on a TENSOR, and every reader of it then sees the quantised value. Where
    a convolution's input also feeds a residual sum or a concatenation, the rounding error enters the float
    path too and accumulates block after block (ESPNet's eight level-3 blocks, ResNet's stages); with only the
    convolutions reading through Q/DQ the error stays inside each convolution. On the published ESPNet CamVid
    model it is the difference between losing several TC points on real video and losing under one (see
    benchmarks/reports/int8_tc.md).
    """
    model = onnx.load(str(path))
    ops = {node_key(n): n.op_type for n in model.graph.node}
    others = [n for n in qdq_candidates(model) if ops.get(n) not in set(readers)]
    if others:
        onnx.save(keep_in_float(model, others), str(path))
    return others


def _excluded(info: dict) -> list[str]:
    """Nodes not quantised: those the quantiser was told to skip, then those the gate kept in float, then those
    kept in float for the protected classes."""
    kept = [*info.get("kept_in_float", []), *info.get("protected_in_float", [])]
    return list(dict.fromkeys([*info.get("nodes_to_exclude", []), *kept]))


def _read_parent(model: Path):
    if not model.is_file():
        raise VssegError(f"{model}: ONNX model not found")
    parent = read_manifest(model, kind="onnx", verify=True)
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
        return evaluation_frames(eval_source, cfg.eval_frames, cfg.seed, cfg.eval_split, flag="--eval-frames")
    if _is_dataset(frames):
        return evaluation_frames(frames, cfg.eval_frames, cfg.seed, cfg.eval_split)
    return held


def _check_disjoint(calib: FrameSet, gate_set: FrameSet | None) -> None:
    """Never judge a model on the frames that calibrated it."""
    if gate_set is None or gate_set.source != calib.source:
        return
    shared = {f.key for f in calib.frames} & {f.key for f in gate_set.frames}
    if shared:
        raise VssegError(
            f"--frames {calib.source}: {len(shared)} gate frame(s) are also calibration frames "
            f"(e.g. {sorted(shared)[0]}); pass held-out frames with --eval-frames, or another "
            "split with --override eval_split=NAME"
        )


def _use_modelopt(cfg: CalibConfig) -> bool:
    if cfg.quantizer == "ort" or cfg.placement == "all":  # ModelOpt always keeps the small-channel convs in float
        return False
    from .quantize_trt import MODELOPT_PACKAGES, modelopt_available

    if modelopt_available():
        return True
    if cfg.quantizer == "modelopt":
        raise VssegError(
            "quantizer 'modelopt': NVIDIA ModelOpt is not installed; install "
            + ", ".join(MODELOPT_PACKAGES)
            + " (not the [onnx] extra, which pulls onnxruntime-gpu)"
        )
    return False


def _opset(path: Path) -> int | None:
    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
