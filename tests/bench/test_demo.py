"""`vsseg-edge demo` end to end at toy size: every artifact written, and the report opens with the table and a plot."""

from __future__ import annotations

import pytest


@pytest.mark.slow  # ~25 s on 2 idle cores: synth, two 1-step trainings, export, calibration, video, bench
def test_demo_runs_every_step_and_writes_the_report(tmp_path):
    import cv2
    import torch

    from vsseg_edge.demo import DemoConfig, run_demo
    from vsseg_edge.demo_data import PANDASET_CLIP

    torch.set_num_threads(1)
    clip = tmp_path / "street.avi"  # the first 4 frames of the shipped real clip keep the real-streets step short
    cap, writer = (
        cv2.VideoCapture(str(PANDASET_CLIP)),
        cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"FFV1"), 10, (640, 360)),
    )
    for _ in range(4):
        writer.write(cap.read()[1])
    writer.release()
    cfg = DemoConfig(
        out=tmp_path / "demo",
        train_sequences=2,
        val_sequences=1,
        frames=6,
        size=(64, 128),
        teacher="espnet",
        student="espnet",
        teacher_iterations=1,
        student_iterations=1,
        batch_size=2,
        crop=(64, 128),
        calib_frames=4,
        bench_runs=1,
        exporter="torchscript",
        real_clip=clip,
    )  # the dynamo exporter alone takes ~35 s
    res = run_demo(cfg)
    assert set(res["times"]) == {
        "synth",
        "train_teacher",
        "train_student",
        "export",
        "calibrate",
        "run",
        "bench",
        "real",
    }
    real = res["real"]
    assert real["before"]["model"] == "espnet-camvid" and real["after"]["model"] == "espnet-camvid-tc"
    assert real["before"]["pairs"] == 3 and 0 <= real["before"]["tc"] <= 100 and 0 <= real["after"]["tc"] <= 100
    video = cv2.VideoCapture(real["video"])
    assert video.read()[1].shape == (360, 1280, 3)  # before | after, side by side
    assert sorted(p.name for p in (cfg.out / "real" / "after" / "masks").iterdir()) == [
        f"{i:06d}.png" for i in range(4)
    ]
    assert "## Real streets" in res["report"]["markdown"].read_text()
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
