"""Compare two benchmark reports: speed ratios and accuracy deltas per matching entry.

Entries match by (artifact file name, backend). Ratios are B / A (FPS: above 1 means B is faster;
latency: below 1 means B is faster); deltas are B − A in points. Entries in only one report are listed.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import VssegError
from .report import markdown_table
from .runner import READABLE_SCHEMAS


def load_report(path: str | Path) -> dict:
    """Read a bench JSON report, or one line saying why it is not one."""
    from ..core.fileio import read_json

    path = Path(path)
    rep = read_json(path, "report")
    if not isinstance(rep, dict) or rep.get("schema") not in READABLE_SCHEMAS:
        schema = rep.get("schema") if isinstance(rep, dict) else None
        raise VssegError(
            f"{path}: not a vsseg-edge bench report (schema {schema!r}, expected one of {', '.join(READABLE_SCHEMAS)})"
        )
    return rep


def _key(e: dict) -> str:
    return e["id"]  # unique within a report (file name, folder-prefixed where names collide, and backend)


def _ratio(b, a):
    return None if a in (None, 0) or b is None else round(b / a, 4)


def _delta(b, a):
    return None if a is None or b is None else round(b - a, 4)


def _pick(e: dict, *path):
    for k in path:
        if not isinstance(e, dict):
            return None
        e = e.get(k)
    return e


def compare_reports(a: dict, b: dict) -> dict:
    """{"matched": [...], "only_a": [ids], "only_b": [ids]} with ratios (B/A) and deltas (B − A)."""
    ea, eb = {_key(e): e for e in a["entries"]}, {_key(e): e for e in b["entries"]}
    matched = []
    for key in [k for k in ea if k in eb]:
        x, y = ea[key], eb[key]
        row = {"id": y["id"], "status_a": x["status"], "status_b": y["status"]}
        row["e2e_fps_ratio"] = _ratio(
            _pick(y, "latency", "end_to_end", "fps"), _pick(x, "latency", "end_to_end", "fps")
        )
        row["compute_fps_ratio"] = _ratio(_pick(y, "latency", "compute", "fps"), _pick(x, "latency", "compute", "fps"))
        row["e2e_p50_ratio"] = _ratio(
            _pick(y, "latency", "end_to_end", "p50_ms"), _pick(x, "latency", "end_to_end", "p50_ms")
        )
        row["miou_delta"] = _delta(_pick(y, "accuracy", "miou"), _pick(x, "accuracy", "miou"))
        row["tc_delta"] = _delta(_pick(y, "accuracy", "tc"), _pick(x, "accuracy", "tc"))
        row["agreement_delta"] = _delta(_pick(y, "agreement", "percent"), _pick(x, "agreement", "percent"))
        matched.append(row)
    return {
        "matched": matched,
        "only_a": [ea[k]["id"] for k in ea if k not in eb],
        "only_b": [eb[k]["id"] for k in eb if k not in ea],
        "settings": settings_diff(a, b),
    }


SETTINGS = {
    "schema": ("schema",),
    "backends": ("backends",),
    "reference rule": ("reference_rule",),
    "runs": ("timing", "runs"),
    "warmup": ("timing", "warmup"),
    "threads": ("timing", "threads"),
    "repeats": ("timing", "repeats"),
    "isolate": ("timing", "isolate"),
    "dataset": ("dataset", "root"),
    "split": ("dataset", "split"),
    "max_sequences": ("dataset", "max_sequences"),
    "flow": ("flow",),
    "cpu": ("environment", "cpu"),
    "gpus": ("environment", "gpus"),
}


def settings_diff(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(setting, A, B) for every measurement setting or library version that differs between the reports."""
    out = [(name, _pick(a, *path), _pick(b, *path)) for name, path in SETTINGS.items()]
    libs = sorted(set(_pick(a, "environment", "libraries") or {}) | set(_pick(b, "environment", "libraries") or {}))
    out += [(lib, _pick(a, "environment", "libraries", lib), _pick(b, "environment", "libraries", lib)) for lib in libs]
    return [(n, x, y) for n, x, y in out if x != y]


def format_comparison(diff: dict, name_a: str = "A", name_b: str = "B") -> str:
    """Markdown: the table of ratios/deltas, then the entries found in only one report."""

    def f(x, signed=False):
        return "—" if x is None else (f"{x:+.2f}" if signed else f"{x:.3f}x")

    header = ["entry", "e2e FPS ratio", "compute FPS ratio", "e2e p50 ratio", "mIoU Δ", "TC Δ", "agreement Δ", "note"]
    rows = []
    for r in diff["matched"]:
        note = "" if r["status_a"] == r["status_b"] == "ok" else f"status {r['status_a']} → {r['status_b']}"
        rows.append(
            [
                r["id"],
                f(r["e2e_fps_ratio"]),
                f(r["compute_fps_ratio"]),
                f(r["e2e_p50_ratio"]),
                f(r["miou_delta"], True),
                f(r["tc_delta"], True),
                f(r["agreement_delta"], True),
                note,
            ]
        )
    out = [
        f"Comparison {name_b} vs {name_a} (ratios {name_b}/{name_a}: FPS > 1 is faster; deltas {name_b} − "
        f"{name_a} in points)",
        "",
        markdown_table(header, rows) if rows else "_no entry in both reports_",
    ]
    if diff.get("settings"):
        out += ["", "Measured differently: " + "; ".join(f"{n} {x} → {y}" for n, x, y in diff["settings"])]
    if diff["only_a"]:
        out += ["", f"Only in {name_a}: " + ", ".join(diff["only_a"])]
    if diff["only_b"]:
        out += ["", f"Only in {name_b}: " + ", ".join(diff["only_b"])]
    return "\n".join(out) + "\n"
