"""The measurement core: labels from outputs, runners over frames, comparators, timing on a fake clock."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.preprocess import PreprocessSpec, labels_from_output
from vsseg_edge.measure.compare import agreement, agreement_breakdown, compare_outputs
from vsseg_edge.measure.prediction import end_to_end, predict
from vsseg_edge.measure.timing import LatencyStats, TimingConfig, measure_latency, time_calls

SPEC = PreprocessSpec(height=4, width=6)


class FakeClock:
    """A clock that advances by the given steps (ms) in turn, one step per reading."""

    def __init__(self, *steps_ms: float):
        self.now, self._steps = 0.0, itertools.cycle(steps_ms)

    def __call__(self) -> float:
        self.now += next(self._steps) / 1e3
        return self.now


class ChannelRunner:
    """A runner double: 'logits' whose class c is the input's channel c (so the argmax is known)."""

    preprocess_spec, output_kind, classes, artifact = SPEC, "logits", ["a", "b", "c"], "double"

    def __init__(self):
        self.calls = 0

    def infer(self, batch):
        self.calls += 1
        return batch.astype(np.float32)

    def to_labels(self, out):
        return labels_from_output(out, self.output_kind)


def _frame(channel: int, hw=(8, 12)) -> np.ndarray:
    """A BGR frame whose preprocessed (RGB-normalised) channel `channel` is the largest everywhere."""
    img = np.zeros((*hw, 3), np.uint8)
    img[..., 2 - channel] = 255  # RGB channel c is BGR channel 2 - c
    return img


def test_labels_from_output_argmax_and_label_maps():
    logits = np.zeros((2, 3, 2, 2), np.float32)
    logits[0, 2], logits[1, 1] = 1, 1
    np.testing.assert_array_equal(labels_from_output(logits, "logits"), [[[2, 2], [2, 2]], [[1, 1], [1, 1]]])
    labels = np.array([[[[4, 5]]]], np.int32)  # N×1×H×W int32, as an in-graph ArgMax may give it
    out = labels_from_output(labels, "labels")
    assert out.dtype == np.uint8 and out.shape == (1, 1, 2) and out.tolist() == [[[4, 5]]]
    with pytest.raises(VssegError, match="logits must be N×C×H×W"):
        labels_from_output(np.zeros((3, 2, 2)), "logits")
    with pytest.raises(VssegError, match="'probs'"):
        labels_from_output(logits, "probs")


def test_end_to_end_and_predict_at_frame_and_model_size():
    runner = ChannelRunner()
    labels = end_to_end(runner, _frame(1))
    assert labels.shape == (8, 12) and (labels == 1).all()
    preds = predict(runner, (_frame(c) for c in (0, 2, 1)), at_frame_size=False, keep_outputs=2)
    assert [p.shape for p in preds.labels] == [(4, 6)] * 3 and [int(p[0, 0]) for p in preds.labels] == [0, 2, 1]
    assert len(preds.outputs) == 2 and preds.outputs[0].shape == (1, 3, 4, 6)


def test_end_to_end_records_stage_times_from_the_clock():
    stages = []
    end_to_end(ChannelRunner(), _frame(0), stages=stages, clock=FakeClock(1.0, 2.0, 3.0, 4.0))
    assert stages == [pytest.approx((2.0, 3.0, 4.0))]


def test_agreement_counts_pixels():
    a = [np.zeros((2, 5), np.uint8), np.ones((2, 5), np.uint8)]
    b = [np.zeros((2, 5), np.uint8), np.ones((2, 5), np.uint8)]
    b[1][0, :3] = 7
    assert agreement(a, a).percent == 100.0
    agree = agreement(a, b)
    assert (agree.same, agree.total, agree.frames) == (17, 20, 2) and agree.percent == pytest.approx(85.0)
    with pytest.raises(ValueError, match="same frames"):
        agreement(a, b[:1])
    with pytest.raises(VssegError, match="cannot be compared"):
        agreement([np.zeros((2, 5))], [np.zeros((5, 2))])


def test_agreement_breakdown_by_reference_class_and_boundary():
    ref = np.zeros((20, 20), np.uint8)
    ref[:, 10:] = 1  # two halves: one vertical boundary at column 10
    ref[0, 0] = 255  # an ignore label counts for the regions, not for a class
    run = ref.copy()
    run[5, 9:11] = 2  # two pixels on the boundary, one of each class, become class 2
    run[15, 15] = 0  # one interior pixel of class 1
    out = agreement_breakdown([run], [ref], ["a", "b", "c"], boundary_px=2)
    assert set(out["by_class"]) == {"a", "b"}  # c is not in the reference
    assert out["by_class"]["a"] == [pytest.approx(100 * 198 / 199, abs=1e-3), pytest.approx(100 * 199 / 400)]
    assert out["by_class"]["b"][0] == pytest.approx(100 * 198 / 200, abs=1e-3)
    boundary, interior = out["by_region"]["boundary"], out["by_region"]["interior"]
    # columns 8..11 (±2 of the change between 9 and 10) and the ignore pixel's neighbourhood
    assert boundary[0] == pytest.approx(100 * (boundary[1] * 4 - 2) / (boundary[1] * 4), abs=1e-3)
    assert interior[0] < 100.0 and boundary[1] + interior[1] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="same frames"):
        agreement_breakdown([run], [], ["a"])


def test_compare_outputs_logit_figures_and_label_disagreement():
    ref = np.zeros((1, 2, 2, 2), np.float32)
    ref[0, 0] = 2.0  # class 0 everywhere, |logit| up to 2
    out = ref.copy()
    out[0, 1, 0, 0] = 3.0  # one pixel flips to class 1, its difference is 3
    cmp = compare_outputs([out], [ref])
    assert cmp.agreement.same == 3 and cmp.max_abs == 3.0 and cmp.mean_abs == pytest.approx(3 / 8)
    assert cmp.ref_abs_max == 2.0 and cmp.noise_to_signal == pytest.approx(9 / 16)
    labels = np.zeros((1, 2, 2), np.uint8)
    labels[0, 1, 1] = 1
    cmp = compare_outputs([labels], [ref], "labels", "logits")
    assert cmp.max_abs is None and cmp.noise_to_signal == 0.25 and cmp.ref_abs_max == 2.0


def test_latency_stats_percentiles_and_fps():
    s = LatencyStats.of([float(v) for v in range(1, 101)])
    assert s.p50_ms == pytest.approx(50.5) and s.p90_ms == pytest.approx(90.1) and s.p99_ms == pytest.approx(99.01)
    assert s.min_ms == 1 and s.max_ms == 100 and s.runs == 100
    assert s.fps == pytest.approx(1000 / 50.5, rel=1e-4)


def test_time_calls_warms_up_then_times_each_run_on_the_clock():
    calls = []
    clock = FakeClock(1.0, 5.0)  # each timed call reads the clock twice: 5 ms apart
    times = time_calls(calls.append, runs=4, warmup=3, clock=clock)
    assert calls == [0, 1, 2, 0, 1, 2, 3] and times == pytest.approx([5.0] * 4)


def test_measure_latency_fields_on_a_fake_clock():
    runner = ChannelRunner()
    lat = measure_latency(runner, [_frame(0), _frame(1)], TimingConfig(runs=3, warmup=1), clock=FakeClock(2.0))
    d = lat.to_dict()
    assert d["compute"]["p50_ms"] == pytest.approx(2.0) and d["compute"]["fps"] == pytest.approx(500.0)
    assert d["end_to_end_stages"] == {
        k: pytest.approx(2.0) for k in ("preprocess_p50_ms", "infer_p50_ms", "postprocess_p50_ms")
    }
    assert (d["frame_size"], d["input_size"], d["input_dtype"], d["frames"]) == ([8, 12], [4, 6], "float32", 2)
    assert runner.calls == 4 + 4 + 3  # compute and end-to-end (warm-up + runs), then the stage pass


def test_timing_config_rejects_nonsense():
    with pytest.raises(VssegError, match="--runs 0"):
        TimingConfig(runs=0)
    with pytest.raises(VssegError, match="--warmup -1"):
        TimingConfig(runs=1, warmup=-1)


def test_class_count_mismatch_is_refused(synth_root):
    from vsseg_edge.data.datasets import open_dataset
    from vsseg_edge.measure.accuracy import check_classes

    ds = open_dataset(synth_root, "val")
    with pytest.raises(VssegError, match="model predicts 5 classes"):
        check_classes(SimpleNamespace(classes=list("abcde"), artifact="m.onnx"), ds)


def test_environment_names_cpu_flags_and_libraries():
    from vsseg_edge.measure.machine import ISA_FLAGS, environment

    env = environment()
    assert env["cpu"] and env["cpu_count"] >= 1 and isinstance(env["gpus"], list)
    assert set(env["cpu_flags"]) <= set(ISA_FLAGS)
    assert env["libraries"]["numpy"] == np.__version__


def test_pipeline_overhead_figures_from_records():
    """analyse(): steady state after `skip` frames, overhead vs the pure passes, overlap of the stage threads."""
    from vsseg_edge.measure.overhead import STAGES, analyse

    recs = [
        {
            "t_done": 0.1 * i,
            "capture_ms": 10.0,
            "preprocess_ms": 20.0,
            "infer_ms": 60.0,
            "postprocess_ms": 5.0,
            "render_ms": 5.0,
            "latency_ms": 150.0,
        }
        for i in range(12)
    ]
    pipe = {"records": recs, **{k: {"p50": 1.0, "p99": 2.0} for k in STAGES}}
    fig = analyse([95.0, 105.0], pipe, [100.0, 100.0], skip=2)
    assert fig.frames_measured == 10 and fig.pipeline_interval_ms["p50"] == pytest.approx(100.0)
    assert fig.pure_infer_ms["p50"] == pytest.approx(100.0) and fig.overhead_p50 == pytest.approx(0.0, abs=1e-9)
    assert fig.fps == pytest.approx(10.0) and fig.stage_thread_p50_ms["preprocess+infer"] == 80.0
    assert fig.overlap_ratio == pytest.approx(10.0 * 80.0 / 1e3)  # the slowest thread takes 80 % of a frame interval


def test_public_names_are_not_shadowed_by_submodules():
    """Every public name of `vsseg_edge.measure` is what its `_EXPORTS` entry says, even after every submodule
    has been imported (an imported submodule becomes a package attribute and would hide a function of its
    name: `from vsseg_edge.measure import predict` must give the function, never the module)."""
    import importlib
    import pkgutil
    from types import ModuleType

    import vsseg_edge.measure as measure

    submodules = [m.name for m in pkgutil.iter_modules(measure.__path__)]
    assert {"prediction", "machine", "compare", "timing", "accuracy", "overhead"} <= set(submodules)
    for name in submodules:
        importlib.import_module(f"{measure.__name__}.{name}")
    assert not set(submodules) & set(measure.__all__), "a submodule is named after a public name"
    assert sorted(measure.__all__) == sorted(measure._EXPORTS)
    for name in measure.__all__:
        got = getattr(measure, name)
        assert not isinstance(got, ModuleType), f"measure.{name} is a module"
        assert callable(got), f"measure.{name} is neither a function nor a class"
        assert got is getattr(importlib.import_module(measure._EXPORTS[name], measure.__name__), name), name
    from vsseg_edge.measure import environment, predict

    assert predict is measure.prediction.predict and environment is measure.machine.environment
