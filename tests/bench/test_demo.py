"""`vsseg-edge demo` end to end at toy size: every artifact written, and the report opens with the table and a plot."""

from __future__ import annotations

import pytest


@pytest.mark.slow  # ~25 s on 2 idle cores: synth, two 1-step trainings, export, calibration, video, bench
def test_demo_runs_every_step_and_writes_the_report(tmp_path):
    import torch

    from vsseg_edge.demo import DemoConfig, run_demo

    torch.set_num_threads(1)
    cfg = DemoConfig(out=tmp_path / "demo", train_sequences=2, val_sequences=1, frames=6, size=(64, 128),
                     teacher="espnet", student="espnet",
                     teacher_iterations=1, student_iterations=1, batch_size=2, crop=(64, 128), calib_frames=4,
                     bench_runs=1, exporter="torchscript")  # the dynamo exporter alone takes ~35 s here
    res = run_demo(cfg)
    assert set(res["times"]) == {"synth", "train_teacher", "train_student", "export", "calibrate", "run", "bench"}
    for key in ("student", "onnx", "int8"):
        assert res[key].is_file() and res[key].with_name(res[key].name + ".json").is_file()
    assert (cfg.out / "overlay.mp4").stat().st_size > 0
    md = res["report"]["markdown"].read_text().splitlines()
    assert md[0].startswith("| entry |") and md[1].startswith("|---")
    end = next(i for i, line in enumerate(md) if not line.startswith("|"))
    assert end == 5 and md[end + 1] == "![accuracy vs latency](accuracy_vs_latency.png)"
    rows = "\n".join(md[2:end])
    assert "model fp32 (torch)" in rows and "student fp32 (ort)" in rows and "student int8 (ort)" in rows
    assert "vs student.onnx@ort" in rows  # the INT8 model is compared with its own FP32 ONNX
