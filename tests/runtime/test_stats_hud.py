"""Stats summary figures and the overlay colours (pure numpy, no model)."""

from __future__ import annotations

import numpy as np

from vsseg_edge.core.labels import CAMVID, CITYSCAPES, label_set_for
from vsseg_edge.runtime.hud import bgr_lut, overlay
from vsseg_edge.runtime.stats import STAGES, format_summary, summarize


def test_summary_percentiles_interval_and_fps():
    recs = [
        {"frame": i, **{s: float(i) for s in STAGES}, "latency_ms": 10.0 * i, "t_done": 0.5 * i} for i in range(101)
    ]
    s = summarize(recs, drops=7, decode_failures=1)
    assert s["frames"] == 101 and s["drops"] == 7 and s["decode_failures"] == 1
    assert s["infer_ms"]["p50"] == 50.0 and s["infer_ms"]["p99"] == 99.0
    assert s["latency_ms"]["p50"] == 500.0
    assert s["interval_ms"]["p50"] == 500.0 and s["fps"] == 2.0
    text = format_summary(s)
    assert "infer" in text and "fps 2.00" in text and "drops 7" in text


def test_label_set_matching_and_overlay():
    assert label_set_for(list(CITYSCAPES.classes)) is CITYSCAPES
    assert label_set_for(list(CAMVID.classes)) is CAMVID
    custom = label_set_for(["a", "b"])
    assert custom.name == "custom" and custom.palette == label_set_for(["a", "b"]).palette  # deterministic
    lut = bgr_lut(CITYSCAPES)
    labels = np.array([[0, 13], [255, 13]], np.uint8)
    frame = np.full((2, 2, 3), 100, np.uint8)
    only_colours = overlay(frame, labels, lut, 1.0)
    assert tuple(only_colours[0, 0]) == (128, 64, 128)[::-1] and tuple(only_colours[0, 1]) == (142, 0, 0)
    assert tuple(only_colours[1, 0]) == (0, 0, 0)  # ignore is black
    np.testing.assert_array_equal(overlay(frame, labels, lut, 0.0), frame)
