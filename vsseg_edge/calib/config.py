"""Calibration settings: a frozen dataclass loaded from a preset YAML (`calib/*.yaml`), CLI flags override."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..core.config import load_config, to_dict
from ..core.errors import VssegError

TARGETS = ("trt", "ort")
METHODS = ("entropy", "percentile", "minmax")
QUANTIZERS = ("auto", "modelopt", "ort")
# Layers onnxruntime quantises (both targets; ModelOpt places its own Q/DQ): the convolutions and matrix
# products. Not BatchNormalization, PRelu or AveragePool (no integer kernel for a standalone BN: quantising it
# only adds error), and no longer Add / Concat / MaxPool: quantised, they become QLinearAdd / QLinearConcat and
# round the residual and concat paths, where the rounding of successive blocks accumulates. On the published
# ESPNet CamVid model, held-out real clips: TC drop 5.19 / 15.61 with them, 0.35 / 5.84 without
# (benchmarks/reports/int8_tc.md, `ptq_ort_issue` vs `ptq_ort`).
DEFAULT_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
QUANTIZED_READERS = DEFAULT_OP_TYPES
PLACEMENTS = ("trt", "all")  # as a QAT recipe's quant.placement
REDUCE_RANGE = (False, True, "integer_kernels")
INTEGER_WEIGHTS = ("int8", "uint8")
SEARCH_ARITHMETIC = ("exact", "kernels")


@dataclass(frozen=True)
class CalibConfig:
    """How `vsseg-edge calibrate` draws frames, quantises and gates (see calib/cityscapes_percentile.yaml)."""

    target: str = "trt"  # "trt": symmetric int8 Q/DQ for TensorRT | "ort": u8/s8 Q/DQ for onnxruntime CPU
    # percentile by default: on the published ESPNet CamVid weights the TensorRT flavour passes the 1-point gate
    # with percentile ranges and fails it with entropy (benchmarks/reports/int8_ort_cpu.md)
    method: str = "percentile"  # entropy | percentile | minmax
    percentile: float = 99.999  # for method: percentile
    # who places the Q/DQ: auto (ModelOpt if installed) | modelopt | ort. Both targets: the onnxruntime flavour is
    # ModelOpt's symmetric int8 Q/DQ with its activations shifted to uint8 (exact); on the TC gate's frames of the
    # published ESPNet CamVid model, under onnxruntime's kernels, 97.53 % agreement with FP32 and TC drop 0.66,
    # against 96.14 % and 0.80 for onnxruntime's quantiser with the same placement (int8_tc.md, round 5)
    quantizer: str = "auto"
    num_frames: int = 500  # calibration frames (seeded sample of the train split)
    seed: int = 0
    split: str = "train"  # the dataset split calibration frames come from
    eval_split: str = "val"  # the held-out split of the accuracy gate
    eval_frames: int = 50  # held-out frames for the gate
    threshold: float = 1.0  # max mIoU drop in points (or % disagreement without labels)
    gate: bool = True  # run the accuracy gate
    max_rounds: int = 6  # rounds keeping the 1, 2, 4 … most sensitive nodes in float (ESPNet's TRT flavour: 5)
    sensitivity_frames: int = 4  # frames scored per layer in the sensitivity search
    exclude: tuple[str, ...] = ()  # node names always kept in float
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES  # op types onnxruntime quantises ([] = all it can)
    # op types that read activations through Q/DQ; any other reader of a quantised tensor (residual Add, Concat,
    # BN, pooling) reads it in float, so rounding errors stay inside the convolutions instead of accumulating
    # along residual paths (pipeline.float_readers). [] = the quantiser's placement as it is; null (default):
    # the convolutions and matrix products, for both flavours (onnxruntime then runs an integer convolution
    # only where a convolution's output is read by convolutions alone; on the published ESPNet CamVid model
    # held-out agreement with FP32 96.87 → 98.03 % / 91.65 → 94.21 % for the onnxruntime flavour, at the
    # same speed on an AVX2 CPU: benchmarks/reports/int8_tc.md)
    quantized_readers: tuple[str, ...] | None = None
    # which convolutions are quantised: "trt" (default) leaves in float the small-channel ones TensorRT has no
    # int8 kernel for (ModelOpt's rule, onnx_graph.small_channel_convs; ModelOpt applies it itself), "all"
    # quantises them too (with onnxruntime's quantiser, which `quantizer: auto` then picks). Also for onnxruntime:
    # these thin convolutions gain no speed there in int8 and cost agreement (QAT's calibrated start: 66.4 % all,
    # 85.3 % trt)
    placement: str = "trt"
    # per-channel range equalisation before quantising (calib/equalize.py): SmoothQuant's α (1: activation
    # channels equalised, 0.5: balanced with the readers' weights), 0 = off
    equalize: float = 0.0
    # also equalise convolution inputs that other nodes read too (a residual Add, a Concat), through a per-channel
    # Mul on the convolutions' branch; false (default): only where the producer absorbs the scales (free at run
    # time). On the Cityscapes ESPNet the branch Muls made INT8 relabel whole vehicles (gate frames 7.0 % vs 4.3 %
    # disagreement; benchmarks/reports/int8_tc.md, round 3)
    equalize_branches: bool = False
    # ort target: 7-bit weights, for x86 CPUs without VNNI, whose u8×s8 kernel can saturate (quantize_ort.py):
    # false | true (every weight) | integer_kernels (the weights of the convolutions onnxruntime runs as integer
    # kernels, onnx_graph.integer_kernel_convs; the others run in float on dequantised values, where 8 bits
    # only help: held-out agreement with FP32 77.8 → 88.1 % for the Cityscapes ESPNet, 93.5 → 94.8 % for CamVid)
    reduce_range: bool | str = False
    # ort target: how the convolutions onnxruntime runs as integer kernels store their 8-bit weights: int8 (its
    # u8×s8 kernels: the fastest, but without VNNI their int16 pair sums saturate) or uint8 with zero point 128
    # (onnx_graph.unsigned_weights: the same values, u8×u8 kernels that sum in int32 — exact on any x86 CPU, about
    # 1.5× slower per integer convolution on this AVX2 one); the alternative to reduce_range's 7 bits
    integer_weights: str = "int8"
    # how the gates' search and the class protection run the candidates: "exact" Q/DQ arithmetic (the default, and
    # the only one for trt) or onnxruntime's integer "kernels" (ort). With exact, both flavours search alike: with
    # ModelOpt and the same ranges the onnxruntime file is the TensorRT flavour's, re-encoded exactly (uint8
    # activations and weights), and the final model is judged once more as deployed, on onnxruntime's kernels,
    # which decides the gates. Published ESPNet CamVid, sign symbol and pole protected, three held-out real clips:
    # TC drop 0.13 / 0.58 / -0.23 (exact, 99.999th percentile) against 0.04 / 0.03 / 1.47 (kernels, 99.99th: other
    # nodes kept in float, the poles flicker on the third clip) (benchmarks/reports/int8_tc.md, rounds 9-10)
    search_arithmetic: str = "exact"
    # ort target: after the search and the protection, quantise the outputs of the quantised convolutions that are
    # read in float (onnx_graph.quantize_conv_outputs), so that onnxruntime runs them as integer kernels — on the
    # CPU's fast int8 path (VNNI) where it otherwise runs float convolutions on dequantised values. One more rounding
    # per convolution: the final gates, on onnxruntime's kernels, judge it. Off by default (int8_tc.md, round 10)
    integer_outputs: bool = False
    threads: int = 0  # onnxruntime intra-op threads for calibration and the gate (0 = all cores)
    # temporal-consistency gate (calib/temporal.py): TC of FP32 and INT8 on consecutive frames (--tc-frames, or by
    # default the calibration clip's frames not used for calibration / the eval split's sequences)
    tc_gate: bool = True
    tc_threshold: float = 1.0  # max TC drop in points
    # > 0: hold the drop's upper `tc_confidence` bound to tc_threshold, not the drop itself (a moving-block
    # bootstrap over the frame pairs, calib/temporal.py): a few dozen pairs cannot tell a 0.9 drop from a 1.9 one
    tc_confidence: float = 0.0
    # with several TC clips, every clip must pass on its own (the worst clip's drop is judged), as the goal is per
    # clip; false pools them into one mean, where a clip INT8 makes flicker is diluted (int8_tc.md, round 6)
    tc_per_clip: bool = True
    tc_max_frames: int = 48  # consecutive frames in all (DIS flow between them at the model's input size)
    tc_clip_frames: int = 24  # at most this many consecutive frames from one clip
    speed_runs: int = 5  # FP32 vs INT8 latency on this machine, interleaved runs each (0 = not measured)
    # classes to protect (calib/protect.py): after the gates' search, keep in float the `protect_nodes` quantised
    # nodes whose float copy most raises agreement with FP32 on these classes' pixels, ranked on the
    # `protect_frames` frames (of at most `protect_pool` drawn from --protect-frames, default the calibration
    # source) where FP32 predicts the most of them; then both gates judge again. For the thin classes the gate
    # frames may lack: on the published ESPNet CamVid model, [sign symbol, pole] took the TensorRT flavour's TC
    # drop on a third held-out clip from 3.17 to -0.27 points (int8_tc.md, rounds 8-9). null (default): the
    # model's class set's thin classes (`core.labels.LabelSet.thin`: CamVid's sign symbol and pole; none for
    # other sets yet), skipped with a log line when the frames show none of them; [] = off
    protect_classes: tuple[str, ...] | None = None
    protect_nodes: int = 4
    protect_frames: int = 24
    protect_pool: int = 400

    def __post_init__(self):
        checks = [
            (self.target in TARGETS, f"target must be one of {TARGETS}, got {self.target!r}"),
            (self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}"),
            (self.quantizer in QUANTIZERS, f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}"),
            (0.0 < self.percentile <= 100.0, f"percentile must be in (0, 100], got {self.percentile}"),
            (self.num_frames > 0, f"num_frames must be positive, got {self.num_frames}"),
            (self.eval_frames > 0, f"eval_frames must be positive, got {self.eval_frames}"),
            (self.threshold >= 0, f"threshold must be ≥ 0, got {self.threshold}"),
            (self.max_rounds >= 0, f"max_rounds must be ≥ 0, got {self.max_rounds}"),
            (self.sensitivity_frames > 0, f"sensitivity_frames must be positive, got {self.sensitivity_frames}"),
            (self.tc_threshold >= 0, f"tc_threshold must be ≥ 0, got {self.tc_threshold}"),
            (
                0.0 <= self.tc_confidence < 1.0,
                f"tc_confidence must be in [0, 1) (0 = the drop itself), got {self.tc_confidence}",
            ),
            (
                self.tc_clip_frames >= 2 and self.tc_max_frames >= 2,
                f"tc_clip_frames and tc_max_frames must be ≥ 2, got {self.tc_clip_frames}, {self.tc_max_frames}",
            ),
            (0.0 <= self.equalize <= 1.0, f"equalize must be in [0, 1] (0 = off), got {self.equalize}"),
            (self.speed_runs >= 0, f"speed_runs must be ≥ 0, got {self.speed_runs}"),
            (
                self.protect_nodes > 0 and self.protect_frames > 0 and self.protect_pool >= self.protect_frames,
                "protect_nodes and protect_frames must be positive and protect_pool ≥ protect_frames, got "
                f"{self.protect_nodes}, {self.protect_frames}, {self.protect_pool}",
            ),
            (self.placement in PLACEMENTS, f"placement must be one of {PLACEMENTS}, got {self.placement!r}"),
            (
                self.placement == "trt" or self.quantizer != "modelopt",
                "placement 'all' needs the onnxruntime quantiser (ModelOpt always leaves the small-channel "
                "convolutions in float): --quantizer auto or ort",
            ),
            (
                self.reduce_range in REDUCE_RANGE,
                f"reduce_range must be true, false or 'integer_kernels', got {self.reduce_range!r}",
            ),
            (self.target == "ort" or not self.reduce_range, "reduce_range is for target 'ort' (TensorRT wants 8 bits)"),
            (
                self.integer_weights in INTEGER_WEIGHTS,
                f"integer_weights must be one of {INTEGER_WEIGHTS}, got {self.integer_weights!r}",
            ),
            (
                self.target == "ort" or self.integer_weights == "int8",
                "integer_weights is for target 'ort' (TensorRT wants int8 weights)",
            ),
            (
                self.search_arithmetic in SEARCH_ARITHMETIC,
                f"search_arithmetic must be one of {SEARCH_ARITHMETIC}, got {self.search_arithmetic!r}",
            ),
            (
                self.target == "ort" or self.search_arithmetic == "exact",
                "search_arithmetic: kernels is for target 'ort' (TensorRT's kernels do not run here)",
            ),
            (
                not self.integer_outputs or (self.target == "ort" and self.exact_search),
                "integer_outputs is for target 'ort' with search_arithmetic: exact (the outputs are quantised after "
                "the search and judged on onnxruntime's kernels)",
            ),
            (
                self.integer_weights == "int8" or self.reduce_range is False,
                "integer_weights: uint8 and reduce_range both guard against the same saturation; set one of them",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise VssegError(f"calibration config: {msg}")

    @property
    def readers(self) -> tuple[str, ...]:
        """`quantized_readers` with the default filled in."""
        if self.quantized_readers is not None:
            return tuple(self.quantized_readers)
        return QUANTIZED_READERS

    @property
    def exact_search(self) -> bool:
        """The gates' search and the protection run the candidates with exact Q/DQ arithmetic."""
        return self.search_arithmetic == "exact"

    @property
    def judged_on_kernels(self) -> bool:
        """The final model is judged again on onnxruntime's kernels (the onnxruntime flavour searched exactly)."""
        return self.target == "ort" and self.exact_search

    def to_dict(self) -> dict:
        return to_dict(self)


def load_calib_config(preset: str | Path | None = None, overrides: list[str] | None = None, **flags) -> CalibConfig:
    """Preset YAML (or defaults) + `key=value` overrides, then CLI flags that are not None."""
    cfg = load_config(CalibConfig, preset, overrides)
    given = {k: v for k, v in flags.items() if v is not None}
    return replace(cfg, **given) if given else cfg
