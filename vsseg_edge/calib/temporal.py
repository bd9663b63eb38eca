"""The temporal-consistency (TC) gate: does the INT8 candidate flicker more than its FP32 parent?

Per-frame figures (mIoU, argmax agreement) cannot see flicker: the pixels INT8 flips move from frame to frame,
so a model can keep its mIoU and still lose several TC points on real video. This gate runs the FP32 model and
the candidate on consecutive frames of one or more clips and measures, on every pair (t, t+1):

- TC of each model (`metrics.tc`: the label map of t+1 warped into t with the flow t → t+1, nearest
  neighbour, out-of-frame pixels excluded, per-class IoU over all pairs, mean over classes); the gate fails
  when TC(FP32) − TC(INT8) exceeds the threshold (points) — or, with a `confidence` c > 0, when the upper c
  bound of that drop does (`drop_bound`; below);
- flips: the share of valid pixels whose label differs between t and warped t+1, for each model, and the
  share that flips under INT8 but not under FP32 (`extra_flips`, the flicker INT8 adds). The sensitivity
  search ranks nodes by how many of these extra flips keeping them in float removes (`flip_error`), on the
  clips that fail.

Everything runs at the model's input size: each frame is resized by the ONE preprocessing's resize
(`core.preprocess.resize_frame`), the flow is OpenCV DIS (medium) between the resized frames, computed once per
gate (a few dozen frames) and kept in memory, and the label maps are the models' own. TC therefore depends on
the clip and this flow, which the manifest names, like every TC figure of the project.

How precise a drop is: TC is a mean over classes of IoUs summed over a few dozen pairs, and the rare classes of a
clip (a sliver of sky, a sign) cover a few hundred pixels each, so one class's IoU can move the drop by a point. On
the 23 pairs of a dusk highway, candidates whose drops on held-out clips ranged from 0.9 to 1.9 all measured
0.83–1.06 (benchmarks/reports/int8_tc.md, round 6). So every result carries the drop's 90 % interval, and with
a `confidence` c > 0 the gate judges the drop's upper c bound instead of the drop. Both come from a moving-block
bootstrap of the pairs (Künsch 1989): each clip's pairs are redrawn in runs of `BLOCK` consecutive pairs
(neighbouring pairs share a frame and most of their flips), with the same draws for both models, and both TCs
recomputed from the redrawn per-class counts — percentile bounds, which keep the ratio's small-sample bias (a
redraw without a rare class leaves that class out of both means). They measure how precisely THESE frames give
the drop, not how another clip would: the clip-to-clip spread is larger (round 6: a candidate the bound passed on
77 pairs of two clips lost 2.0 points on a third), so more clips, not a higher confidence, is what a gate needs.

Models are run by a `predict(model, frames) -> label maps` callable (the calibration gate's runner), so this
module holds no session code of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import VssegError
from ..core.preprocess import PreprocessSpec, resize_frame
from ..measure.compare import agreement, agreement_breakdown
from ..metrics.tc import TemporalConsistency, tc_of_counts, warp_labels

FLOW_NAME = "OpenCV DIS (medium) between the frames resized to the model's input"
BLOCK = 4  # consecutive pairs per bootstrap block
RESAMPLES = 1000
Predict = Callable[[object, Sequence[np.ndarray]], list]


@dataclass(frozen=True)
class TcClip:
    """Consecutive frames of one clip: stable keys (for the manifest) and lazy BGR readers."""

    name: str
    keys: list[str]
    read: list[Callable[[], np.ndarray]]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class TcFrames:
    """The clips the TC gate runs on, and where they came from (recorded in the manifest)."""

    source: str
    how: str  # "given" (--tc-frames), or how the default was chosen
    clips: list[TcClip]

    @property
    def pairs(self) -> int:
        return sum(max(len(c) - 1, 0) for c in self.clips)

    @property
    def keys(self) -> list[str]:
        return [k for c in self.clips for k in c.keys]

    def record(self) -> dict:
        keys = self.keys
        return {
            "source": self.source,
            "how": self.how,
            "frames": len(keys),
            "pairs": self.pairs,
            "clips": [
                {"name": c.name, "frames": len(c), "first": c.keys[0], "last": c.keys[-1]} for c in self.clips if len(c)
            ],
            "sha1": hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest(),
        }


def common_class_drop(per_class: dict) -> float | None:
    """The TC drop over the classes BOTH models predict (`per_class`: class → [TC FP32, TC INT8], None where a
    model never predicts the class in these frames). TC leaves a class a model never predicts out of that
    model's mean, so a class the INT8 model predicts on a few pixels (TC 0) while FP32 never does enters only
    INT8's mean and weighs 1/C of it, whatever its area; this figure shows how much of a drop that is."""
    return _mean_drop([(a, b) for a, b in per_class.values() if a is not None and b is not None])


MAJOR_SHARE = 1.0  # % of the FP32 model's pixels on the gate's frames: a "major" class for `major_class_drop`


def major_class_drop(per_class: dict, by_class: dict, share: float = MAJOR_SHARE) -> float | None:
    """The TC drop over the classes that cover at least `share` % of the FP32 model's pixels on these frames and
    that both models predict (`by_class`: class → [% agreement, % of FP32's pixels], from
    `measure.agreement_breakdown`). On real clips a few rare classes — a sign, a sliver of sky, a few hundred pixels
    each — carry most of a TC drop (each weighs 1/C of the mean whatever its area); this figure says whether INT8
    also flickers on the road, the cars and the buildings. Reported beside the drop; the gate judges the drop."""
    return _mean_drop(
        [
            (a, b)
            for c, (a, b) in per_class.items()
            if a is not None and b is not None and (by_class.get(c) or [0.0, 0.0])[1] >= share
        ]
    )


def _mean_drop(both: list) -> float | None:
    if not both:
        return None
    return sum(a for a, _ in both) / len(both) - sum(b for _, b in both) / len(both)


@dataclass
class TcResult:
    """The TC gate's verdict on one candidate (figures in percent / points)."""

    passed: bool
    threshold: float
    tc_fp32: float
    tc_int8: float
    drop: float  # TC(FP32) − TC(INT8), points
    flips_fp32: float  # % of valid pixels whose label changes between t and warped t+1, FP32
    flips_int8: float
    extra_flips: float  # % of valid pixels that flip under INT8 but not under FP32
    pairs: int
    frames: int
    agreement: float | None = None  # % of pixels where INT8 and FP32 predict the same class, on these frames
    flow: str = FLOW_NAME
    per_class: dict = field(default_factory=dict)  # class → [TC FP32, TC INT8] for the classes either predicts
    # where INT8 and FP32 disagree: per FP32 class and boundary / interior (measure.agreement_breakdown)
    agreement_detail: dict = field(default_factory=dict)
    confidence: float = 0.0  # > 0: the gate judges the upper `confidence` bound of the drop, not the drop
    bound: float | None = None  # that bound (points), when confidence > 0
    interval: tuple[float, float] | None = None  # the drop's 90 % interval (5th, 95th percentile of the redraws)
    clips: dict = field(default_factory=dict)  # clip → {"drop", "bound"}: each clip's own figures
    per_clip: bool = False  # the verdict is on the worst clip's drop (or bound), not on the clips pooled

    @property
    def judged(self) -> float:
        """The figure the gate holds against the threshold: the drop or its bound (`confidence`), of the clips
        pooled or (`per_clip`) of the worst clip."""
        if self.per_clip and self.clips:
            return self._clip_figure(self.worst_clip)
        return self.drop if self.bound is None else self.bound

    @property
    def failing_clips(self) -> list[str] | None:
        """The clips whose own drop (or bound) is past the threshold; None without per-clip figures."""
        return [n for n in self.clips if self._clip_figure(n) > self.threshold] if self.clips else None

    @property
    def worst_clip(self) -> str | None:
        """The clip with the largest drop (or bound)."""
        return max(self.clips, key=self._clip_figure) if self.clips else None

    def _clip_figure(self, name: str) -> float:
        c = self.clips[name]
        return c["drop"] if c.get("bound") is None else c["bound"]

    def to_dict(self) -> dict:
        def r(v):
            return None if v is None else round(float(v), 4)

        return {
            "passed": self.passed,
            "threshold": self.threshold,
            "tc_fp32": r(self.tc_fp32),
            "tc_int8": r(self.tc_int8),
            "drop": r(self.drop),
            "confidence": self.confidence,
            "drop_bound": r(self.bound),
            "drop_interval_90": None if self.interval is None else [r(v) for v in self.interval],
            "per_clip": self.per_clip,
            "clips": {n: {k: r(v) for k, v in c.items()} for n, c in self.clips.items()},
            "judged": r(self.judged),  # what the verdict held against the threshold (`judged`)
            "worst_clip": self.worst_clip,
            "flips_fp32": r(self.flips_fp32),
            "flips_int8": r(self.flips_int8),
            "extra_flips": r(self.extra_flips),
            "pairs": self.pairs,
            "frames": self.frames,
            "agreement": r(self.agreement),
            "flow": self.flow,
            "per_class": self.per_class,
            "agreement_detail": self.agreement_detail,
            "drop_common_classes": r(common_class_drop(self.per_class)),
            "drop_major_classes": r(major_class_drop(self.per_class, self.agreement_detail.get("by_class") or {})),
            "one_sided_classes": self.one_sided,
        }

    def class_drops(self) -> list[tuple[str, float]]:
        """(class, TC FP32 − TC INT8) for the classes both models predict here, the largest drop first."""
        both = [(c, a - b) for c, (a, b) in self.per_class.items() if a is not None and b is not None]
        return sorted(both, key=lambda cd: -cd[1])

    @property
    def one_sided(self) -> list[str]:
        """Classes only one of the two models predicts in these frames."""
        return [c for c, (a, b) in self.per_class.items() if (a is None) != (b is None)]

    def summary(self) -> str:
        verdict = "passes" if self.passed else "FAILS"
        common = common_class_drop(self.per_class)
        note = (
            f"; {common:.2f} on the classes both predict (one predicts {', '.join(self.one_sided)}, the other not)"
            if self.one_sided and common is not None
            else ""
        )
        bound = f", {100 * self.confidence:g} % bound {self.bound:.2f}" if self.bound is not None else ""
        if self.interval is not None:
            bound += f", 90 % interval {self.interval[0]:.2f} to {self.interval[1]:.2f}"
        if self.per_clip and self.clips:
            bound += f"; judged per clip, the worst {self.worst_clip}: {self.judged:.2f}"
        return (
            f"TC {self.tc_fp32:.2f} → {self.tc_int8:.2f} (drop {self.drop:.2f}{bound}{note}), pixels flipping between "
            f"frames {self.flips_fp32:.2f} → {self.flips_int8:.2f} % (+{self.extra_flips:.2f} % INT8-only) on "
            f"{self.pairs} pairs: {verdict} (threshold {self.threshold})"
        )


def consecutive(dataset) -> bool:
    """Whether a dataset's sequences hold consecutive video frames (TC needs them): video clips, Cityscapes
    sequences and the synthetic set do; CamVid's labelled frames are one second apart."""
    return dataset.name in ("video", "images", "cityscapes", "synthetic")


def tc_frames_from(
    source,
    split: str = "val",
    max_frames: int = 48,
    clip_frames: int = 24,
    seed: int = 0,
    how: str = "given",
    skip: Sequence[str] = (),
) -> TcFrames:
    """Consecutive frames for the TC gate from whatever `data.frame_source` opens (a video file, a folder of
    frames, a folder of clips, or a dataset's `split` with sequences): from each clip, in a seeded order, its
    longest run of frames whose key (`calib.frames.frame_key`) is not in `skip` (the calibration frames), cut
    to `clip_frames`, until `max_frames` in all."""
    from ..data.frame_source import open_frame_source
    from .frames import frame_key

    if max_frames < 2 or clip_frames < 2:
        raise VssegError(f"TC gate: need at least 2 frames per clip and in all (got {clip_frames}, {max_frames})")
    ds = open_frame_source(source, split, flag="--tc-frames")
    if not consecutive(ds):
        raise VssegError(
            f"--tc-frames {source}: a {ds.name} dataset has no consecutive frames (its frames are "
            "seconds apart); give a video or a folder of consecutive frames"
        )
    skip = set(skip)
    names = sorted(ds.sequences)
    order = np.random.default_rng(seed).permutation(len(names)).tolist()
    clips, total = [], 0
    for i in order:
        run = _longest_run(ds.sequences[names[i]], lambda r: frame_key(ds, r) in skip)
        run = run[: min(clip_frames, max_frames - total)]
        if len(run) >= 2:
            readers = [(lambda r=r: ds.read_image(r)) for r in run]
            clips.append(TcClip(names[i], [frame_key(ds, r) for r in run], readers))
            total += len(run)
        if total >= max_frames - 1:
            break
    if not clips:
        raise VssegError(f"--tc-frames {source}: no two consecutive frames that are not calibration frames")
    return TcFrames(str(source), how, clips)


def _longest_run(refs, skipped: Callable[[object], bool]) -> list:
    """The longest stretch of consecutive frames none of which is `skipped`."""
    best, cur = [], []
    for r in refs:
        if skipped(r):
            cur = []
            continue
        cur.append(r)
        if len(cur) > len(best):
            best = list(cur)
    return best


def clip_flows(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """DIS flow t → t+1 for every consecutive pair of (already resized) BGR frames."""
    from ..data.flow import dis_flow

    return [dis_flow(a, b, "medium") for a, b in zip(frames[:-1], frames[1:])]


def pair_flips(labels: Sequence[np.ndarray], flows: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per pair (t, t+1): bool map of the valid pixels whose label differs from warped t+1 (a flip)."""
    out = []
    for t, flow in enumerate(flows):
        warped, valid = warp_labels(labels[t + 1], flow)
        out.append(valid & (labels[t] != warped))
    return out


def _valid_pixels(flows: Sequence[np.ndarray], shape) -> int:
    return sum(int(warp_labels(np.zeros(shape, np.uint8), f)[1].sum()) for f in flows)


class TemporalGate:
    """FP32 label maps and flows of the TC clips, computed once; `measure` judges a candidate."""

    def __init__(
        self, fp32_model, tc_frames: TcFrames, spec: PreprocessSpec, class_names: Sequence[str], predict: Predict
    ):
        if not tc_frames.pairs:
            raise VssegError(f"--tc-frames {tc_frames.source}: no pair of consecutive frames to measure TC on")
        self.tc_frames, self.spec, self.class_names, self.predict = tc_frames, spec, list(class_names), predict
        self.frames = [[resize_frame(read(), spec) for read in clip.read] for clip in tc_frames.clips]
        self.flows = [clip_flows(frames) for frames in self.frames]
        self.fp32 = [list(predict(fp32_model, frames)) for frames in self.frames]
        self._check_sizes(self.fp32)
        self.fp32_flips = [pair_flips(lab, fl) for lab, fl in zip(self.fp32, self.flows)]
        self.fp32_tc = self._tc(self.fp32)
        self.fp32_counts = self._per_clip(self.fp32_tc)
        shape = self.fp32[0][0].shape
        self.valid = sum(_valid_pixels(fl, shape) for fl in self.flows)

    def _check_sizes(self, labels) -> None:
        for clip in labels:
            for lab in clip:
                if lab.shape != tuple(self.spec.size):
                    raise VssegError(f"TC gate: label map {lab.shape} is not the model's input size {self.spec.size}")

    def _tc(self, labels) -> TemporalConsistency:
        meter = TemporalConsistency(len(self.class_names))
        for lab, flows in zip(labels, self.flows):
            for t, flow in enumerate(flows):
                meter.update(lab[t], lab[t + 1], flow)
        return meter

    def _per_clip(self, meter: TemporalConsistency) -> list[np.ndarray]:
        """A meter's pair counts split by clip, (pairs, 3, C) each."""
        cuts = np.cumsum([len(f) for f in self.flows])[:-1]
        return np.split(meter.pair_counts(), cuts)

    def pair_counts(self, labels: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Per clip, each pair's TC counts (pairs, 3, C) for label maps predicted on the gate's frames; with
        `fp32_counts`, what `drop_bound` and `drop_quantiles` take."""
        self._check_sizes(labels)
        return self._per_clip(self._tc(labels))

    def measure(self, model, threshold: float, confidence: float = 0.0, per_clip: bool = False) -> TcResult:
        """Run the candidate on every TC frame and compare its TC and flips with the FP32 parent's; with
        `confidence` > 0 the verdict is on the drop's upper bound (`drop_bound`), with `per_clip` on the worst
        clip's figure instead of the clips pooled."""
        labels = [list(self.predict(model, frames)) for frames in self.frames]
        return self.measure_labels(labels, threshold, confidence, per_clip)

    def measure_labels(
        self, labels: list[list[np.ndarray]], threshold: float, confidence: float = 0.0, per_clip: bool = False
    ) -> TcResult:
        """`measure` for label maps already predicted on the gate's frames (one list per clip)."""
        self._check_sizes(labels)
        tc8 = self._tc(labels)
        if confidence and not 0.0 < confidence < 1.0:
            raise VssegError(f"TC gate: confidence must be in (0, 1), got {confidence}")
        counts8 = self._per_clip(tc8)
        # the drop's 90 % interval, always (how precisely these pairs measure it), and the bound the gate judges
        low, high, bound = drop_quantiles(self.fp32_counts, counts8, [0.05, 0.95, confidence or 0.5])
        clips = {}
        for clip, a, b in zip(self.tc_frames.clips, self.fp32_counts, counts8):
            d = 100.0 * float(tc_of_counts(a.sum(axis=0)) - tc_of_counts(b.sum(axis=0)))
            q = float(drop_quantiles([a], [b], [confidence])[0]) if confidence else None
            clips[clip.name] = {"drop": d, "bound": q}
        flips32 = flips8 = extra = 0
        for lab, flows, f32 in zip(labels, self.flows, self.fp32_flips):
            for a, b in zip(pair_flips(lab, flows), f32):
                flips8, flips32, extra = flips8 + int(a.sum()), flips32 + int(b.sum()), extra + int((a & ~b).sum())

        def pct(n):
            return 100.0 * n / max(self.valid, 1)

        t32, t8 = 100.0 * self.fp32_tc.tc(), 100.0 * tc8.tc()
        drop = t32 - t8
        per_class = {
            n: [_pct(a), _pct(b)]
            for n, a, b in zip(self.class_names, self.fp32_tc.per_class(), tc8.per_class())
            if np.isfinite(a) or np.isfinite(b)
        }
        flat, ref = [a for lab in labels for a in lab], [a for lab in self.fp32 for a in lab]
        result = TcResult(
            False,
            threshold,
            t32,
            t8,
            drop,
            pct(flips32),
            pct(flips8),
            pct(extra),
            self.tc_frames.pairs,
            len(self.tc_frames.keys),
            agreement(flat, ref).percent,
            per_class=per_class,
            agreement_detail=agreement_breakdown(flat, ref, self.class_names),
            confidence=confidence,
            bound=float(bound) if confidence else None,
            interval=(float(low), float(high)),
            clips=clips,
            per_clip=per_clip,
        )
        result.passed = bool(result.judged <= threshold)
        return result

    def flip_error(self, model, pairs: int, clips: Sequence[str] | None = None) -> float:
        """Share of valid pixels on the first `pairs` pairs of each clip named in `clips` (default: every clip)
        that flip under `model` but not under FP32: the sensitivity search's error when TC fails (lower is
        better). The search names the clips that failed, so it ranks nodes by the flicker that fails the gate."""
        extra = valid = 0
        for clip, frames, flows, f32 in zip(self.tc_frames.clips, self.frames, self.flows, self.fp32_flips):
            if clips is not None and clip.name not in clips:
                continue
            k = max(1, min(pairs, len(flows)))
            labels = list(self.predict(model, frames[: k + 1]))
            for a, b, flow in zip(pair_flips(labels, flows[:k]), f32[:k], flows[:k]):
                extra += int((a & ~b).sum())
                valid += int(warp_labels(np.zeros(a.shape, np.uint8), flow)[1].sum())
        return extra / max(valid, 1)


def drop_bound(
    fp32: Sequence[np.ndarray],
    int8: Sequence[np.ndarray],
    confidence: float,
    block: int = BLOCK,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> float:
    """The upper `confidence` bound (points) of TC(FP32) − TC(INT8), by a moving-block bootstrap of each clip's
    pairs (module doc). `fp32`, `int8`: per clip, each pair's counts (pairs, 3, C) (`TemporalGate.pair_counts`),
    the same pairs in the same order. Seeded: the same counts give the same bound."""
    if not 0.0 < confidence < 1.0:
        raise VssegError(f"TC gate: confidence must be in (0, 1), got {confidence}")
    return float(drop_quantiles(fp32, int8, [confidence], block, resamples, seed)[0])


def drop_quantiles(
    fp32: Sequence[np.ndarray],
    int8: Sequence[np.ndarray],
    quantiles: Sequence[float],
    block: int = BLOCK,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> np.ndarray:
    """Quantiles of the TC drop (points) over the block-bootstrap redraws of `drop_bound` (e.g. 0.05 and 0.95: a
    90 % interval)."""
    rng = np.random.default_rng(seed)
    total32 = total8 = 0
    for a, b in zip(fp32, int8, strict=True):
        if a.shape != b.shape:
            raise VssegError(f"TC gate: pair counts differ in shape ({a.shape} vs {b.shape})")
        pairs = len(a)
        if not pairs:
            continue
        k = min(block, pairs)
        starts = rng.integers(0, pairs - k + 1, size=(resamples, -(-pairs // k)))
        idx = (starts[:, :, None] + np.arange(k)).reshape(resamples, -1)[:, :pairs]
        total32, total8 = total32 + a[idx].sum(axis=1), total8 + b[idx].sum(axis=1)
    drops = 100.0 * (tc_of_counts(total32) - tc_of_counts(total8))
    return np.nanquantile(drops, list(quantiles))


def _pct(v) -> float | None:
    return None if not np.isfinite(v) else round(100.0 * float(v), 4)
