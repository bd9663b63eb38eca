"""Guards of "one implementation per concept": a second onnxruntime session factory or a second flow warp
fails here, naming the file, instead of growing quietly beside the first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("vsseg_edge", "benchmarks") for p in (REPO / d).rglob("*")
                 if p.suffix in (".py", ".sh") and p.is_file())

# (what, pattern, the files allowed to contain it, why those)
GUARDS = [
    ("onnxruntime session", r"InferenceSession\(", {"vsseg_edge/runtime/backends/ort.py"},
     "every session comes from runtime.backends.ort.ort_session"),
    ("numpy flow warp", r"cv2\.remap\(", {"vsseg_edge/data/warp.py", "vsseg_edge/data/synth/shading.py"},
     "flow warps are data.warp.warp_backward (shading.py's remap is a texture lookup, not a flow warp)"),
    ("torch flow warp", r"grid_sample\(", {"vsseg_edge/train/losses/warp.py"},
     "the differentiable warp is train.losses.warp.flow_warp"),
    ("logits → labels", r"\.argmax\(\s*(axis\s*=\s*)?1",
     {"vsseg_edge/core/preprocess.py", "vsseg_edge/runtime/backends/torch_backend.py",
      "benchmarks/experiments/etc_seeds.py"},
     "model outputs become labels in core.preprocess.labels_from_output (the torch backend's argmax runs on the "
     "device so only labels cross to the host; etc_seeds.py analyses torch logits, warped one-hots included)"),
]


@pytest.mark.parametrize("what, pattern, allowed, why", GUARDS, ids=[g[0] for g in GUARDS])
def test_one_implementation(what, pattern, allowed, why):
    rx = re.compile(pattern)
    found = {p.relative_to(REPO).as_posix() for p in SOURCES if rx.search(p.read_text(errors="replace"))}
    extra = sorted(found - allowed)
    assert not extra, f"a second {what} in {extra}: {why}"
    assert found, f"the {what} ({pattern}) is gone from {sorted(allowed)}: update this guard"
