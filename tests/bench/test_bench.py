"""`vsseg-edge bench` on the tiny synthetic set: report fields, export parity, agreement, Markdown, plots, compare."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import cv2
import pytest

from vsseg_edge.bench.compare import compare_reports, format_comparison, load_report
from vsseg_edge.bench.report import MD_NAME, write_report
from vsseg_edge.bench.runner import SCHEMA, BenchConfig, run_bench
from vsseg_edge.core.errors import VssegError


def quick(root, **kw) -> BenchConfig:
    return BenchConfig(dataset=root, runs=kw.pop("runs", 3), warmup=1, frames=2, threads=1, progress=False, **kw)


@pytest.fixture(scope="module")
def bench(artifacts, synth_root, tmp_path_factory):
    """One benchmark of the checkpoint (torch), its ONNX export and the INT8 copy (ort), written to a folder."""
    report = run_bench([artifacts["ckpt"], artifacts["onnx"], artifacts["int8"]], quick(synth_root))
    out = tmp_path_factory.mktemp("report")
    return report, write_report(report, out)


def by_id(report) -> dict:
    return {e["id"]: e for e in report["entries"]}


def test_report_schema_and_sane_figures(bench):
    report, files = bench
    saved = json.loads(files["json"].read_text())
    assert saved["schema"] == SCHEMA and len(saved["entries"]) == 3
    assert saved["flow"] == "exact synthetic flow"
    env = saved["environment"]
    assert env["cpu"] and all(env["libraries"][k] for k in ("onnxruntime", "torch", "numpy", "opencv"))
    load = env["load_average"]
    assert len(load["start"]) == 3 and len(load["end"]) == 3 and min(load["start"] + load["end"]) >= 0
    assert "- load average (1/5/15 min): " in files["markdown"].read_text()
    assert saved["timing"]["runs"] == 3 and saved["timing"]["warmup"] == 1 and len(saved["timing"]["frames"]) == 2
    for e in saved["entries"]:
        assert e["status"] == "ok", e
        lat = e["latency"]
        assert lat["batch"] == 1 and lat["input_size"] == [64, 128] and lat["frame_size"] == [64, 128]
        assert lat["frames"] == len(saved["timing"]["frames"]) == 2  # every entry timed on the same frames
        assert (e["agreement"] or {}).get("frames", 2) == 2
        for fig in ("compute", "end_to_end"):
            s = lat[fig]
            assert 0 < s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
            assert s["runs"] == 3 and s["fps"] == pytest.approx(1000 / s["mean_ms"], rel=1e-3)
        stages = lat["end_to_end_stages"]
        assert set(stages) == {"preprocess_p50_ms", "infer_p50_ms", "postprocess_p50_ms"}
        assert stages["preprocess_p50_ms"] > 0 and stages["infer_p50_ms"] > 0 and stages["postprocess_p50_ms"] >= 0
        acc = e["accuracy"]
        assert 0 <= acc["miou"] <= 100 and 0 <= acc["tc"] <= 100
        assert acc["labelled_frames"] == 6 and acc["tc_pairs"] == 5 and acc["flow"] == "exact synthetic flow"
        assert set(acc["per_class_iou"]) == set(saved["dataset"]["classes"])
    assert by_id(saved)["tiny.int8.qdq.onnx@ort"]["precision"] == "int8"


def test_torch_and_ort_of_the_same_network_agree(bench):
    """The ONNX is an export of the checkpoint: same label maps, so the same mIoU/TC (export parity)."""
    e = by_id(bench[0])
    pt, ort = e["tiny.pt@torch"]["accuracy"], e["tiny.onnx@ort"]["accuracy"]
    assert abs(pt["miou"] - ort["miou"]) <= 1e-6 and abs(pt["tc"] - ort["tc"]) <= 1e-6
    for c, v in pt["per_class_iou"].items():
        assert (v is None and ort["per_class_iou"][c] is None) or abs(v - ort["per_class_iou"][c]) <= 1e-6
    assert e["tiny.onnx@ort"]["agreement"] == {"reference": "tiny.pt@torch", "percent": 100.0, "frames": 2}


def test_reference_follows_the_manifest_chain(bench):
    e = by_id(bench[0])
    assert e["tiny.int8.qdq.onnx@ort"]["agreement"]["reference"] == "tiny.onnx@ort"
    assert 0 < e["tiny.int8.qdq.onnx@ort"]["agreement"]["percent"] <= 100
    assert e["tiny.pt@torch"]["agreement"] is None  # the root of the lineage: the reference of the others
    assert e["tiny.pt@torch"]["reference_note"].startswith("FP32 root")
    assert [n["file"] for n in e["tiny.int8.qdq.onnx@ort"]["lineage"]] == ["tiny.int8.qdq.onnx", "tiny.onnx", "tiny.pt"]


def test_explicit_reference_is_added_and_agrees_with_itself(artifacts, synth_root):
    report = run_bench([artifacts["int8"]], quick(synth_root, runs=1, tc=False, reference=artifacts["onnx"]))
    e = by_id(report)
    assert set(e) == {"tiny.int8.qdq.onnx@ort", "tiny.onnx@ort"}
    assert e["tiny.onnx@ort"]["agreement"] is None and e["tiny.onnx@ort"]["reference_note"] == "the --reference itself"
    assert e["tiny.int8.qdq.onnx@ort"]["agreement"]["reference"] == "tiny.onnx@ort"
    assert e["tiny.int8.qdq.onnx@ort"]["accuracy"]["tc"] is None


def test_markdown_opens_with_the_table_and_a_plot(bench):
    report, files = bench
    md = files["markdown"].read_text()
    lines = md.splitlines()
    assert lines[0].startswith("| entry |") and lines[1].startswith("|---")
    table_end = next(i for i, line in enumerate(lines) if not line.startswith("|"))
    assert table_end == 2 + len(report["entries"])
    assert lines[table_end + 1] == "![accuracy vs latency](accuracy_vs_latency.png)"
    assert "Timing methodology" in md and "Compute-only" in md and "exact synthetic flow" in md


def test_plots_are_valid_pngs(bench):
    _, files = bench
    for key in ("accuracy_latency", "tc", "int8_delta"):
        data = files[key].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        img = cv2.imread(str(files[key]))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def test_compare_shows_ratios_and_unmatched_entries(bench, tmp_path):
    a = bench[0]
    b = copy.deepcopy(a)
    entry = b["entries"][1]
    entry["latency"]["end_to_end"]["fps"] *= 2
    entry["accuracy"]["miou"] += 1.5
    b["entries"] = b["entries"][1:]
    b["timing"]["threads"] = 4
    diff = compare_reports(a, b)
    assert diff["settings"] == [("threads", 1, 4)]
    row = diff["matched"][0]
    assert row["id"] == entry["id"] and row["e2e_fps_ratio"] == pytest.approx(2.0, rel=1e-3)
    assert row["miou_delta"] == pytest.approx(1.5) and row["tc_delta"] == 0
    assert diff["only_a"] == [a["entries"][0]["id"]] and diff["only_b"] == []
    text = format_comparison(diff)
    assert "2.000x" in text and "+1.50" in text and a["entries"][0]["id"] in text and "threads 1 → 4" in text
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert load_report(tmp_path / "b.json")["schema"] == SCHEMA
    (tmp_path / "old.json").write_text(json.dumps({**b, "schema": "vsseg-edge-bench/1"}))
    old = load_report(tmp_path / "old.json")
    assert compare_reports(a, old)["settings"][0] == ("schema", SCHEMA, "vsseg-edge-bench/1")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(VssegError, match="not a vsseg-edge bench report"):
        load_report(tmp_path / "bad.json")


def test_unavailable_backend_and_unselected_backend_become_rows(artifacts, synth_root, tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here; this test is about its absence")
    except ImportError:
        pass
    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.core.manifest import write_manifest
    from vsseg_edge.core.preprocess import PreprocessSpec

    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"not an engine")
    write_manifest(
        engine,
        "engine",
        model="bench-tiny",
        classes=list(CITYSCAPES.classes),
        preprocess=PreprocessSpec(height=64, width=128),
        precision="fp16",
    )
    report = run_bench(
        [artifacts["onnx"], engine, artifacts["ckpt"]], quick(synth_root, runs=1, tc=False, backends=("ort", "trt"))
    )
    e = by_id(report)
    assert e["tiny.onnx@ort"]["status"] == "ok"
    assert e["tiny.engine@trt"]["status"] == "unavailable" and "tensorrt" in e["tiny.engine@trt"]["reason"]
    assert e["tiny.pt@torch"]["status"] == "skipped" and "--backends" in e["tiny.pt@torch"]["reason"]
    files = write_report(report, tmp_path / "out")
    md = (tmp_path / "out" / MD_NAME).read_text()
    assert "unavailable: tensorrt is not installed" in md.split("\n\n")[0]
    assert "tc" not in files  # no TC figures → no TC plot, and the report says so
    assert "Temporal consistency: nothing to plot" in md


def test_artifact_its_backend_refuses_becomes_a_failed_row(synth_root, tmp_path):
    import torch

    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.core.preprocess import PreprocessSpec
    from vsseg_edge.models.checkpoint import save_checkpoint

    ckpt = tmp_path / "alien.pt"
    save_checkpoint(
        ckpt,
        torch.nn.Conv2d(3, 19, 1),
        model_name="not-a-registered-model",
        classes=list(CITYSCAPES.classes),
        preprocess=PreprocessSpec(height=64, width=128),
    )
    (entry,) = run_bench([ckpt], quick(synth_root, runs=1, tc=False))["entries"]
    assert entry["status"] == "failed" and "not-a-registered-model" in entry["reason"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vsseg_edge.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_missing_model_is_one_line_error(synth_root, tmp_path):
    r = _cli("bench", tmp_path / "absent.onnx", "--dataset", synth_root)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path / 'absent.onnx'}: model file not found"


def test_cli_bench_and_compare(artifacts, synth_root, tmp_path):
    out = tmp_path / "rep"
    r = _cli(
        "bench",
        artifacts["onnx"],
        "--dataset",
        synth_root,
        "--out",
        out,
        "--runs",
        2,
        "--warmup",
        0,
        "--frames",
        1,
        "--threads",
        1,
        "--no-tc",
    )
    assert r.returncode == 0, r.stderr
    assert (out / "report.json").is_file() and "- command: `vsseg-edge bench " in (out / "report.md").read_text()
    assert "bench: 100%" in r.stderr  # the progress bar (tqdm writes to stderr)
    assert "not run `tiny.onnx` × trt — needs_engine" in r.stdout  # default --backends: every pair accounted for
    r = _cli("bench", "--compare", out / "report.json", out / "report.json")
    assert r.returncode == 0, r.stderr
    assert "1.000x" in r.stdout and "tiny.onnx@ort" in r.stdout


def test_benchmark_convenience_writes_the_report(artifacts, synth_root, tmp_path):
    """The call the demo makes: bench.benchmark(models, dataset, out, **BenchConfig options)."""
    from vsseg_edge.bench import benchmark

    report, files = benchmark(
        [artifacts["onnx"]], synth_root, tmp_path / "demo", runs=1, warmup=0, frames=1, tc=False, progress=False
    )
    assert report["entries"][0]["status"] == "ok" and report["entries"][0]["accuracy"]["tc"] is None
    assert files["json"].is_file() and files["markdown"].read_text().startswith("| entry |")
    assert files["accuracy_latency"].is_file() and "tc" not in files and "int8_delta" not in files


def test_same_file_names_in_two_folders_stay_separate(artifacts, synth_root, tmp_path):
    """Two students' `tiny.onnx` in different folders: distinct ids, and neither is the other's reference."""
    import shutil

    copies = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for suffix in ("", ".json"):
            shutil.copy(str(artifacts["onnx"]) + suffix, tmp_path / folder / (artifacts["onnx"].name + suffix))
        copies.append(tmp_path / folder / artifacts["onnx"].name)
    report = run_bench(copies, quick(synth_root, runs=1, tc=False))
    ids = [e["id"] for e in report["entries"]]
    assert ids == ["a/tiny.onnx@ort", "b/tiny.onnx@ort"]
    assert [e["name"] for e in report["entries"]] == ["a/tiny", "b/tiny"]
    assert all(e["agreement"] is None and e["reference_note"].startswith("FP32 root") for e in report["entries"])


def test_bench_on_unlabelled_video_scores_tc_in_the_models_classes(artifacts, tmp_path):
    """A video file is a frame source like a dataset: timed, TC with DIS flow, no mIoU (no labels)."""
    import numpy as np

    from vsseg_edge.core.labels import CITYSCAPES

    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 64))
    if not vw.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG/AVI")
    for i in range(4):
        frame = np.full((64, 128, 3), 60, np.uint8)
        frame[16:48, 10 + 8 * i : 40 + 8 * i] = 220  # a bright block moving right
        vw.write(frame)
    vw.release()
    report = run_bench([artifacts["onnx"]], quick(path, flow="dis"))
    (entry,) = report["entries"]
    assert report["dataset"]["name"] == "video" and report["dataset"]["labelled"] == 0
    assert report["flow"].startswith("OpenCV DIS")
    acc = entry["accuracy"]
    assert entry["status"] == "ok" and acc["miou"] is None and acc["labelled_frames"] == 0
    assert list(acc["tc_per_class"]) == list(CITYSCAPES.classes)
    assert acc["tc_pairs"] == 3 and 0 <= acc["tc"] <= 100


def test_rounds_pair_each_entry_with_its_reference(artifacts, synth_root):
    """--repeats 2: every entry timed in each round; speed ratios paired round by round (median over rounds)."""
    report = run_bench([artifacts["onnx"], artifacts["int8"]], quick(synth_root, runs=2, repeats=2, tc=False))
    onnx, int8 = (by_id(report)[i] for i in ("tiny.onnx@ort", "tiny.int8.qdq.onnx@ort"))
    assert report["timing"]["repeats"] == 2 and not report["timing"]["isolate"]
    for e in (onnx, int8):
        assert len(e["latency_rounds"]) == 2 and e["latency"]["compute"]["runs"] == 2
        assert e["latency"]["compute"]["p50_ms"] in [r["compute_p50_ms"] for r in e["latency_rounds"]]
    sp = int8["speed_vs_reference"]
    expected = [
        round(o["compute_p50_ms"] / q["compute_p50_ms"], 4)
        for o, q in zip(onnx["latency_rounds"], int8["latency_rounds"])
    ]
    assert sp["reference"] == onnx["id"] and sp["compute_rounds"] == expected and sp["rounds"] == 2
    assert sp["compute"] == pytest.approx(sum(expected) / 2)  # the median of two rounds
    assert "speed_vs_reference" not in onnx  # the FP32 root has no reference


def test_isolated_timing_runs_each_entry_in_a_process_of_its_own(artifacts, synth_root):
    """--isolate: the timing comes from a child process (bench.isolate) that opens only that artifact."""
    report = run_bench([artifacts["onnx"]], quick(synth_root, runs=2, isolate=True, accuracy=False))
    (e,) = report["entries"]
    assert e["status"] == "ok" and "process of its own" in report["timing"]["process"]
    assert len(e["latency_rounds"]) == 1 and e["latency"]["compute"]["runs"] == 2
    assert e["latency"]["input_size"] == [64, 128]


def test_one_file_twice_with_backend_options(artifacts, synth_root):
    """FILE::key=value benches the same file again with a backend option, as an entry of its own."""
    int8 = artifacts["int8"]
    report = run_bench([artifacts["onnx"], int8, f"{int8}::exact_qdq=true"], quick(synth_root, tc=False))
    ids = [e["id"] for e in report["entries"]]
    assert ids == ["tiny.onnx@ort", "tiny.int8.qdq.onnx@ort", "tiny.int8.qdq.onnx[exact_qdq=true]@ort"]
    exact = by_id(report)[ids[2]]
    assert exact["options"] == {"exact_qdq": True} and exact["status"] == "ok"
    assert exact["agreement"]["reference"] == "tiny.onnx@ort" and exact["speed_vs_reference"]["rounds"] == 1
    with pytest.raises(VssegError, match=r"option\(s\) \['fp16'\] do not apply to the ort backend"):
        run_bench([f"{int8}::fp16=true"], quick(synth_root, tc=False))
    with pytest.raises(VssegError, match="is not KEY=VALUE"):
        run_bench([f"{int8}::exact_qdq"], quick(synth_root, tc=False))


def test_speed_only_skips_the_accuracy_pass(artifacts, synth_root, tmp_path):
    report = run_bench([artifacts["onnx"], artifacts["int8"]], quick(synth_root, accuracy=False))
    assert report["flow"] is None and report["timing"]["accuracy"] is False
    for e in report["entries"]:
        assert e["status"] == "ok" and e["accuracy"]["miou"] is None and e["accuracy"]["tc"] is None
        assert e["latency"]["compute"]["runs"] == 3
    assert by_id(report)["tiny.int8.qdq.onnx@ort"]["agreement"]["percent"] > 50  # on the timed frames
    files = write_report(report, tmp_path / "r")
    assert "| — | — |" in files["markdown"].read_text()  # mIoU and TC columns empty, the report still written
