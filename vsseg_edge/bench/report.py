"""Write a benchmark report: `report.json` (schema `runner.SCHEMA`), `report.md` and the PNG plots.

The Markdown opens with the table and the accuracy-vs-latency plot, then lists the requested (artifact,
backend) pairs that have no figures (one line each, why), then says how every figure was measured (the
timing methodology), where (environment) and on what (dataset, flow, frames).
"""

from __future__ import annotations

from pathlib import Path

from ..core.fileio import atomic_write, write_json
from .plots import entry_label, write_plots

JSON_NAME, MD_NAME = "report.json", "report.md"

METHODOLOGY = """\
**Timing methodology.** Timing: {process}. Every entry is timed on the same {n_frames} \
frames of the dataset (decoded into memory before timing, cycled over the runs), batch 1, after \
{warmup} untimed warm-up runs, then {runs} timed runs, each timed on its own with `time.perf_counter`. \
*Compute-only* is the backend's `infer` call on an input already prepared by the one preprocessing \
(onnxruntime: the session run, FP32 logits or labels out; torch: on a GPU the copy of the input to the \
device, the forward pass, the argmax on the device and the copy of the labels to the host; TensorRT: \
host→device copy, execution, device→host copy). *End-to-end* adds what a user's loop does around it: \
resize + normalise + layout (`core.preprocess`), the argmax on the host when the model outputs logits, and \
resizing the label map to the frame's size; it does NOT include reading or decoding the image file, \
drawing, or writing results. p50/p90/p99 are percentiles of the timed runs (with fewer than 100 runs p99 \
is close to the slowest run); the per-stage p50s under *Entries* come from a separate pass. FPS is \
1000 / mean latency of that figure (one frame at a time, no pipelining; a threaded pipeline that overlaps \
decode, inference and display can show more frames per second than 1000 / latency). Threads: {threads}. \
Figures published by other projects often time the network alone without I/O, sometimes at a larger \
batch or in FP16 on a GPU, or include decoding and display; compare our *compute-only* column with the \
former and our *end-to-end* column with a camera loop minus decoding.

**Accuracy.** mIoU is one confusion matrix over every labelled frame evaluated ({labelled} frames), ignore \
label excluded, classes absent from labels and predictions left out of the mean; TC is the mean per-class \
IoU between each prediction and the next frame's prediction warped back with the flow ({flow}); both come \
from `metrics.evaluate.evaluate_predictions` on the end-to-end predictions, i.e. exactly what was timed. \
*Agreement* is the percent of pixels where an entry's label map equals its reference's on the timed \
frames; the reference is {reference_rule}.
"""


def _f(x, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def table_rows(report: dict) -> list[list[str]]:
    """One row per entry: label, device, latencies, FPS, mIoU, TC, agreement, note."""
    rows = []
    for e in report["entries"]:
        if e["status"] != "ok":
            rows.append(
                [
                    entry_label(e),
                    e["backend"],
                    "—",
                    "—",
                    "—",
                    "—",
                    "—",
                    "—",
                    "—",
                    "—",
                    "—",
                    f"{e['status']}: {e['reason']}",
                ]
            )
            continue
        c, x, a = e["latency"]["compute"], e["latency"]["end_to_end"], e["accuracy"]
        agr = e.get("agreement") or {}
        ref = f"vs {agr['reference']}" if agr.get("reference") else reference_note(e)
        speed = (e.get("speed_vs_reference") or {}).get("compute")
        rows.append(
            [
                entry_label(e),
                _device(e.get("device")),
                _f(x["p50_ms"]),
                _f(x["p99_ms"]),
                _f(x["fps"], 1),
                _f(c["p50_ms"]),
                _f(c["fps"], 1),
                "—" if speed is None else f"{speed:.2f}x",
                _f(a["miou"]),
                _f(a["tc"]),
                _f(agr.get("percent")),
                ref,
            ]
        )
    return rows


def reference_note(e: dict) -> str:
    """Table note of an entry without a reference: short for an FP32 root, the whole reason otherwise."""
    note = e.get("reference_note") or ""
    return "FP32 reference" if note.startswith("FP32 root") else note


def not_run_lines(report: dict) -> list[str]:
    """One Markdown line per requested (artifact, backend) pair without figures (`runner` key `not_run`)."""
    return [
        f"- `{r['id'].rsplit('@', 1)[0]}` × {r['backend']} — {r['status']}: {r['reason']}"
        for r in report.get("not_run") or []
    ]


def _device(name) -> str:
    return "CPU" if str(name).lower() == "cpu" else str(name)


HEADER = [
    "entry",
    "device",
    "e2e p50 ms",
    "e2e p99 ms",
    "e2e FPS",
    "compute p50 ms",
    "compute FPS",
    "compute speed vs ref",
    "mIoU %",
    "TC %",
    "agreement %",
    "note",
]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s):
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(report: dict, plots: dict) -> str:
    """The report's Markdown: table first, then the plots, methodology, environment and per-entry details."""
    ds, env, timing = report["dataset"], report["environment"], report["timing"]
    parts = [markdown_table(HEADER, table_rows(report)), ""]
    if plots.get("accuracy_latency"):
        parts += [f"![accuracy vs latency]({plots['accuracy_latency']})", ""]
    if report.get("not_run"):
        parts += (
            [
                f"**Not run** — requested (artifact, backend) pairs without figures (backends asked: "
                f"{', '.join(report.get('backends') or [])}):",
                "",
            ]
            + not_run_lines(report)
            + [""]
        )
    parts += [f"# Benchmark on {ds['name']} {ds['split']} ({report['created']})", ""]
    for key, title in (("tc", "Temporal consistency"), ("int8_delta", "Per-class IoU change from INT8")):
        parts += [
            f"![{title}]({plots[key]})"
            if plots.get(key)
            else f"_{title}: nothing to plot "
            f"({'no TC figures' if key == 'tc' else 'no INT8 entry with an FP32 reference among the entries'})._",
            "",
        ]
    threads = timing["threads"] or "each library's default (onnxruntime: one per physical core; torch: torch's default)"
    parts += [
        "## How these figures were measured",
        "",
        METHODOLOGY.format(
            n_frames=len(timing["frames"]),
            warmup=timing["warmup"],
            runs=timing["runs"],
            threads=threads,
            labelled=_labelled(report),
            flow=report.get("flow") or "not computed",
            reference_rule=report["reference_rule"],
            process=timing.get("process", "single process, entries run one after another"),
        ),
        "",
    ]
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
    first = f", first {ds['max_sequences']} sequences evaluated" if ds["max_sequences"] else ""
    more = " …" if len(timing["frames"]) > 4 else ""
    flags = f"; {', '.join(env['cpu_flags'])}" if env.get("cpu_flags") else ""
    parts += [
        "## Environment",
        "",
        f"- CPU: {env['cpu']} ({env['cpu_count']} logical cores, {env['cpu_affinity']} usable by this process{flags})",
        f"- GPU: {', '.join(env.get('gpus') or []) or 'none'}",
        f"- {env['platform']}, Python {env['python']}, vsseg-edge {env['vsseg_edge']}",
        f"- libraries: {libs}",
        f"- dataset: {ds['root']} split {ds['split']} ({ds['sequences']} sequences, {ds['frames']} frames, "
        f"{ds['labelled']} labelled{first})",
        f"- timed frames: {', '.join(timing['frames'][:4])}{more}",
        _load_line(env),
    ]
    if report.get("command"):
        parts += [f"- command: `{report['command']}`"]
    parts += [""]
    parts += ["## Entries", ""] + [_entry_details(e) for e in report["entries"]]
    calib = calibration_lines(report)
    if calib:
        parts += ["", "## INT8 calibration (from the Q/DQ manifests)", ""] + calib
    return "\n".join(parts).rstrip() + "\n"


def _interval(c: dict) -> str:
    """The TC drop's 90 % interval and the bound the gate judged, where the manifest has them."""
    out = ""
    if c.get("tc_interval_90"):
        out += f", 90 % interval {_f(c['tc_interval_90'][0])} to {_f(c['tc_interval_90'][1])}"
    if c.get("tc_bound") is not None:
        out += f", judged on its {100 * c['tc_confidence']:g} % bound {_f(c['tc_bound'])}"
    if c.get("tc_worst_clip"):  # judged per clip: the worst clip decides
        out += f"; per clip, the worst {c['tc_worst_clip']}: {_f(c['tc_judged'])}"
    return out


def calibration_lines(report: dict) -> list[str]:
    """One line per Q/DQ artifact: its gates (mIoU / agreement and TC, FP32 → INT8) and the FP32/INT8 speed ratio
    measured where it was calibrated (a different machine from this report's, possibly)."""
    lines, seen = [], set()
    for e in report["entries"]:
        c = e.get("calibration")
        if not c or e.get("file") in seen:
            continue
        seen.add(e.get("file"))
        acc = (
            (
                f"mIoU drop {_f(c['drop'])}"
                if c.get("criterion") == "miou_drop"
                else f"disagreement {_f(c['drop'], 3)} %"
            )
            if c.get("drop") is not None
            else "accuracy gate not run"
        )
        tc = (
            f"TC {_f(c['tc_fp32'])} → {_f(c['tc_int8'])} (drop {_f(c['tc_drop'])}{_interval(c)}) on "
            f"{c['tc_pairs']} pairs of {c['tc_frames']} ({c['tc_flow']})"
            if c.get("tc_drop") is not None
            else f"TC gate not run ({c.get('tc_skipped') or 'older manifest'})"
        )
        sp = c.get("speed")
        speed = (
            f"FP32/INT8 speed {sp['ratio']}× ({_f(sp['fp32_ms'])} → {_f(sp['int8_ms'])} ms, onnxruntime CPU, "
            f"{sp['cpu']}, {'/'.join(sp.get('cpu_flags') or []) or 'no listed ISA flags'})"
            if sp
            else "speed not measured"
        )
        verdict = {True: "passed", False: "FAILED (kept)", None: "not run"}[c.get("gate_passed")]
        prot = c.get("protected")
        protected = f", {prot['nodes']} more for {', '.join(prot['classes'])}" if prot else ""
        lines.append(
            f"- `{e['file']}` ({c.get('target')}, {c.get('method')}; gates {verdict}; "
            f"{c.get('kept_in_float')} node(s) kept in float{protected}): {acc}; {tc}; {speed}"
        )
    return lines


def _load_line(env: dict) -> str:
    load = env.get("load_average") or {}
    if not load.get("start") or not load.get("end"):
        return "- load average: not recorded"

    def fmt(v):
        return "/".join(f"{x:.2f}" for x in v)

    cores = env.get("cpu_affinity") or env.get("cpu_count") or 1
    busy = max(load["start"][0], load["end"][0]) > cores
    return f"- load average (1/5/15 min): {fmt(load['start'])} at the start, {fmt(load['end'])} at the end" + (
        f" — above the {cores} cores: other processes shared the CPUs, so compare only entries measured in "
        "the same run, and expect slower absolute figures than on an idle machine"
        if busy
        else ""
    )


def _labelled(report: dict) -> str:
    ok = [e for e in report["entries"] if e["status"] == "ok"]
    return str(ok[0]["accuracy"]["labelled_frames"]) if ok else "0"


def _entry_details(e: dict) -> str:
    head = f"- `{e['id']}` — {e.get('kind') or 'artifact'}, model {e.get('model')}, precision {e.get('precision')}"
    if e["status"] != "ok":
        return f"{head}: **{e['status']}** — {e['reason']}"
    lat, acc = e["latency"], e["accuracy"]
    st = lat.get("end_to_end_stages") or {}
    nan = f"; classes absent (left out of the mean): {', '.join(acc['nan_classes'])}" if acc.get("nan_classes") else ""
    return (
        f"{head}, {e['device']}, threads {e.get('threads') or 'default'}, input {lat['input_size'][0]}x"
        f"{lat['input_size'][1]} {lat['input_dtype']} {lat['input_layout']}, output {e['output_kind']}; "
        f"compute p50/p90/p99 {_f(lat['compute']['p50_ms'])}/{_f(lat['compute']['p90_ms'])}/"
        f"{_f(lat['compute']['p99_ms'])} ms; end-to-end {_f(lat['end_to_end']['p50_ms'])}/"
        f"{_f(lat['end_to_end']['p90_ms'])}/{_f(lat['end_to_end']['p99_ms'])} ms (stages p50: preprocess "
        f"{_f(st.get('preprocess_p50_ms'))}, infer {_f(st.get('infer_p50_ms'))}, postprocess "
        f"{_f(st.get('postprocess_p50_ms'))} ms){_speed(e)}; TC over {acc['tc_pairs']} pairs"
        f"{nan}; {_lineage(e)}"
    )


def _speed(e: dict) -> str:
    """The paired speed ratios against the reference, round by round, when there is a reference."""
    sp = e.get("speed_vs_reference")
    if not sp or sp.get("compute") is None:
        return ""
    rounds = ", ".join(f"{r:.2f}" for r in sp["compute_rounds"])
    return (
        f"; compute speed vs {sp['reference']} {sp['compute']:.2f}x (median of {sp['rounds']} paired "
        f"round(s): {rounds}), end-to-end {_f(sp.get('end_to_end'))}x"
    )


def _lineage(e: dict) -> str:
    from .lineage import source_of

    agr = e.get("agreement") or {}
    ref = f"reference {agr['reference']}" if agr.get("reference") else (e.get("reference_note") or "no reference")
    chain = " ← ".join(str(n.get("file")) for n in e.get("lineage") or [])
    return f"lineage {chain or '?'} (source {source_of(e)}); {ref}"


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and the plots into `out_dir` (each atomically); return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, out_dir)
    report = {**report, "plots": plots}
    write_json(out_dir / JSON_NAME, report)
    with atomic_write(out_dir / MD_NAME, "w") as fh:
        fh.write(render_markdown(report, plots))
    files = {"json": out_dir / JSON_NAME, "markdown": out_dir / MD_NAME}
    files.update({k: out_dir / v for k, v in plots.items() if v})
    return files
