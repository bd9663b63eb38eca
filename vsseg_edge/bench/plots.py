"""PNG plots of a benchmark report (matplotlib, Agg backend, written atomically).

- accuracy vs latency: mIoU against end-to-end p50 latency, one marker shape per backend, a label per entry;
- TC per entry (bar);
- per-class IoU deltas of each INT8 entry against its FP32 reference (bar per class).
A plot with nothing to show is not written; `write_plots` returns what it wrote and why it skipped the rest.
"""

from __future__ import annotations

from pathlib import Path

from ..core.fileio import atomic_path

MARKERS = {"ort": "o", "torch": "s", "trt": "^"}
PLOT_FILES = {"accuracy_latency": "accuracy_vs_latency.png", "tc": "tc.png", "int8_delta": "int8_class_iou_delta.png"}


def entry_label(e: dict) -> str:
    """Short name of an entry: artifact name (see `runner.unique_names`), precision, backend."""
    name = e.get("name") or Path(e["file"]).name.split(".")[0]
    opts = ",".join(f"{k}={v}" for k, v in (e.get("options") or {}).items())
    return f"{name} {e.get('precision', '?')} ({e['backend']}{', ' + opts if opts else ''})"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def plot_accuracy_latency(entries: list[dict], path: Path) -> bool:
    pts = [e for e in entries if e["status"] == "ok" and e["accuracy"]["miou"] is not None]
    if not pts:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in sorted({e["backend"] for e in pts}):
        sel = [e for e in pts if e["backend"] == backend]
        ax.scatter(
            [e["latency"]["end_to_end"]["p50_ms"] for e in sel],
            [e["accuracy"]["miou"] for e in sel],
            marker=MARKERS.get(backend, "x"),
            s=60,
            label=backend,
        )
    for e in pts:
        ax.annotate(
            entry_label(e),
            (e["latency"]["end_to_end"]["p50_ms"], e["accuracy"]["miou"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel("end-to-end latency p50 (ms, batch 1)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(title="backend")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_tc(entries: list[dict], path: Path) -> bool:
    pts = [e for e in entries if e["status"] == "ok" and e["accuracy"]["tc"] is not None]
    if not pts:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(pts) + 2), 4))
    ax.bar(range(len(pts)), [e["accuracy"]["tc"] for e in pts], color="tab:green")
    ax.set_xticks(range(len(pts)), [entry_label(e) for e in pts], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("TC (%)")
    ax.set_title(f"Temporal consistency (flow: {pts[0]['accuracy'].get('flow')})")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return True


def int8_deltas(entries: list[dict]) -> list[tuple[dict, dict[str, float]]]:
    """(INT8 entry, {class: IoU_int8 − IoU_ref}) for each INT8 entry whose reference is another entry."""
    by_id = {e["id"]: e for e in entries}
    out = []
    for e in entries:
        agr = e.get("agreement") or {}
        ref = by_id.get(agr.get("reference"))
        if e["status"] != "ok" or e.get("precision") != "int8" or ref is None or ref is e:
            continue
        a, b = e["accuracy"].get("per_class_iou") or {}, ref["accuracy"].get("per_class_iou") or {}
        deltas = {c: a[c] - b[c] for c in a if a.get(c) is not None and b.get(c) is not None}
        if deltas:
            out.append((e, deltas))
    return out


def plot_int8_deltas(entries: list[dict], path: Path) -> bool:
    groups = int8_deltas(entries)
    if not groups:
        return False
    plt = _pyplot()
    classes = sorted(
        {c for _, d in groups for c in d}, key=lambda c: list(groups[0][1]).index(c) if c in groups[0][1] else 1 << 30
    )
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(classes) + 2), 4))
    width = 0.8 / len(groups)
    for k, (e, d) in enumerate(groups):
        xs = [i + (k - (len(groups) - 1) / 2) * width for i in range(len(classes))]
        ax.bar(xs, [d.get(c, 0.0) for c in classes], width=width, label=entry_label(e))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("IoU INT8 − FP32 reference (points)")
    ax.set_title("Per-class IoU change from INT8 quantisation")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return True


def write_plots(report: dict, out_dir: Path) -> dict:
    """Write the three plots into `out_dir`; returns {key: file name or None when there was nothing to plot}."""
    entries = report["entries"]
    makers = {"accuracy_latency": plot_accuracy_latency, "tc": plot_tc, "int8_delta": plot_int8_deltas}
    return {key: (PLOT_FILES[key] if fn(entries, out_dir / PLOT_FILES[key]) else None) for key, fn in makers.items()}
