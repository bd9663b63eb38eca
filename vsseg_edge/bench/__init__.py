"""Benchmark reports: latency (compute-only and end-to-end), FPS, mIoU, TC and INT8 agreement per artifact.

    from vsseg_edge.bench import benchmark
    report, files = benchmark(["student.pt", "student.onnx", "student.int8.qdq.onnx"], "data/synth",
                              "reports/demo", runs=50, warmup=10)

`runner.run_bench` measures, `report.write_report` writes JSON + Markdown + PNG, `compare.compare_reports`
diffs two reports. Nothing here imports torch until a torch backend is opened.
"""

from __future__ import annotations

from pathlib import Path


def benchmark(models, dataset, out, **options):
    """Run `run_bench(models, BenchConfig(dataset=dataset, **options))` and write the report into `out`.

    Returns (report dict, {"json": path, "markdown": path, <plot key>: path …}).
    """
    from .commands import clear_report
    from .report import write_report
    from .runner import BenchConfig, run_bench

    report = run_bench(models, BenchConfig(dataset=Path(dataset), **options))
    clear_report(Path(out))  # replaces the report in `out` entirely: no stale plot stays
    return report, write_report(report, out)
