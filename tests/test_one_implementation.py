"""Guards of "one implementation per concept": a second onnxruntime session factory or a second flow warp
fails here, naming the file, instead of growing quietly beside the first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p for d in ("vsseg_edge", "benchmarks") for p in (REPO / d).rglob("*") if p.suffix in (".py", ".sh") and p.is_file()
)

# (what, pattern, the files allowed to contain it, why those)
GUARDS = [
    (
        "onnxruntime session",
        r"InferenceSession\(",
        {"vsseg_edge/runtime/backends/ort.py"},
        "every session comes from runtime.backends.ort.ort_session",
    ),
    (
        "numpy flow warp",
        r"cv2\.remap\(",
        {"vsseg_edge/data/warp.py", "vsseg_edge/data/synth/shading.py"},
        "flow warps are data.warp.warp_backward (shading.py's remap is a texture lookup, not a flow warp)",
    ),
    (
        "torch flow warp",
        r"grid_sample\(",
        {"vsseg_edge/train/losses/warp.py"},
        "the differentiable warp is train.losses.warp.flow_warp",
    ),
    (
        "logits → labels",
        r"\.argmax\(\s*(axis\s*=\s*)?1",
        {
            "vsseg_edge/core/preprocess.py",
            "vsseg_edge/runtime/backends/torch_backend.py",
            "benchmarks/experiments/etc_seeds.py",
        },
        "model outputs become labels in core.preprocess.labels_from_output (the torch backend's argmax runs on the "
        "device so only labels cross to the host; etc_seeds.py analyses torch logits, warped one-hots included)",
    ),
]


@pytest.mark.parametrize("what, pattern, allowed, why", GUARDS, ids=[g[0] for g in GUARDS])
def test_one_implementation(what, pattern, allowed, why):
    rx = re.compile(pattern)
    found = {p.relative_to(REPO).as_posix() for p in SOURCES if rx.search(p.read_text(errors="replace"))}
    extra = sorted(found - allowed)
    assert not extra, f"a second {what} in {extra}: {why}"
    assert found, f"the {what} ({pattern}) is gone from {sorted(allowed)}: update this guard"


BENCHMARK_RULES = [
    ("edits sys.path", re.compile(r"sys\.path\.(insert|append|extend)\(|PYTHONPATH")),
    ("imports a private name of the package", re.compile(r"from vsseg_edge[\w.]* import [^\n]*\b_[a-z]\w*")),
    ("imports a private module of the package", re.compile(r"vsseg_edge(\.\w+)*\._[a-z]\w*")),
    ("reads a private attribute of another object", re.compile(r"(?<![\w.])(?!self\.)\w+\._[a-z]\w*")),
]


@pytest.mark.parametrize("rule, pattern", BENCHMARK_RULES, ids=[r[0] for r in BENCHMARK_RULES])
def test_benchmarks_use_the_public_api_only(rule, pattern):
    """`benchmarks/` holds drivers of the package's public API and CLI, not a second library: no script reaches
    into the package's private names or another object's private attributes, or imports through sys.path."""
    found = [
        f"{p.relative_to(REPO)}:{n}: {line.strip()}"
        for p in SOURCES
        if p.parts[len(REPO.parts)] == "benchmarks" and p.suffix == ".py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line.split("#", 1)[0])
    ]
    assert not found, f"benchmarks/ {rule}:\n" + "\n".join(found)


def test_benchmarks_import_names_that_exist():
    """Every `from vsseg_edge… import name` in `benchmarks/` resolves (the drivers run rarely, often on a lent
    machine; a renamed module must fail here, not there)."""
    import ast
    import importlib

    missing = []
    for p in SOURCES:
        if p.parts[len(REPO.parts)] != "benchmarks" or p.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vsseg_edge":
                try:
                    module = importlib.import_module(node.module)
                except ImportError as exc:
                    missing.append(f"{p.relative_to(REPO)}:{node.lineno}: {node.module} ({exc})")
                    continue
                missing += [
                    f"{p.relative_to(REPO)}:{node.lineno}: {node.module}.{a.name}"
                    for a in node.names
                    if not hasattr(module, a.name) and not _is_submodule(node.module, a.name)
                ]
    assert not missing, "benchmarks/ import what does not exist:\n" + "\n".join(missing)


def _is_submodule(package: str, name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(f"{package}.{name}") is not None
    except ImportError:
        return False
