"""Several sources in one process: batching across sources, per-source outputs and stats, a stalled source.

The reference labels are computed independently (plain onnxruntime on each frame, argmax, resized to the frame),
so a frame sent to the wrong source, or a batch split wrongly, shows up as a label mismatch.
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time

import cv2
import numpy as np
from typer.testing import CliRunner

from tests.runtime.conftest import NFRAMES, H, W, make_frames, read_video, records_streamed, wait_for
from tests.runtime.test_live import SimulatedCamera
from tests.runtime.test_pipeline import offline_ort_labels
from vsseg_edge.cli import app
from vsseg_edge.runtime.backends import open_backend
from vsseg_edge.runtime.multi import MultiPipeline, Stream, source_name, source_names
from vsseg_edge.runtime.sinks import MaskSink, NullSink, Sink
from vsseg_edge.runtime.sources import CapturedFrame, LiveSource, Source, open_source
from vsseg_edge.runtime.stats import StatsCollector


class HeldSource(Source):
    """A source stalled until `release()`: `get` has nothing (queue.Empty), then it ends. Never blocks a caller."""

    live = True
    description = "held"

    def __init__(self):
        super().__init__()
        self.released = threading.Event()
        self.polled = 0

    def _run(self):
        self._stop.wait()

    def _finish(self):
        pass

    def get(self, timeout=None):
        self.polled += 1
        if self.released.is_set() or self._stop.is_set():
            return None
        raise queue.Empty

    def release(self):
        self.released.set()


class ReadySource(Source):
    """`n` frames, every one ready at once (no thread timing involved)."""

    def __init__(self, n, value):
        super().__init__()
        self.items = [CapturedFrame(i, np.full((H, W, 3), value, np.uint8), time.perf_counter(), 0.0) for i in range(n)]
        self.description = f"ready{value}"

    def start(self):
        return self

    def get(self, timeout=None):
        return self.items.pop(0) if self.items else None


class BatchRecorder:
    """Wraps a backend and records the batch size of every infer call."""

    def __init__(self, backend):
        self._be, self.sizes = backend, []

    def __getattr__(self, name):
        return getattr(self._be, name)

    def infer(self, batch):
        self.sizes.append(batch.shape[0])
        return self._be.infer(batch)


def _stream(name, source, sinks=None):
    return Stream(name, source, sinks or [NullSink()], StatsCollector(None))


def _masks(folder, n):
    return [cv2.imread(str(folder / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED) for i in range(n)]


def test_two_files_batched_into_their_own_outputs(tmp_path, batch_onnx, video_file, image_folder):
    video_frames = read_video(video_file)
    folder_files = sorted(image_folder.glob("*.png"))
    with open_backend(batch_onnx, threads=1) as be:
        assert be.max_batch is None  # the dynamic batch dimension takes any N
        rec = BatchRecorder(be)
        streams = [
            _stream("video", open_source(str(video_file)), [MaskSink(tmp_path / "video")]),
            _stream("folder", open_source(str(image_folder)), [MaskSink(tmp_path / "folder")]),
        ]
        result = MultiPipeline(streams, rec, handle_signals=False).run()
        spec = be.preprocess_spec
    assert result.stopped_by == "end" and result.error is None
    assert result.frames == NFRAMES + len(folder_files) == sum(rec.sizes)
    assert max(rec.sizes) <= 2 and result.batches["steps"] == len(rec.sizes)
    assert result.batches["histogram"] == {"1": rec.sizes.count(1), "2": rec.sizes.count(2)}
    for got, want in zip(_masks(tmp_path / "video", NFRAMES), offline_ort_labels(batch_onnx, video_frames, spec)):
        np.testing.assert_array_equal(got, want)
    folder_frames = [cv2.imread(str(p)) for p in folder_files]
    for p, want in zip(folder_files, offline_ort_labels(batch_onnx, folder_frames, spec)):
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "folder" / p.name), cv2.IMREAD_UNCHANGED), want)
    by_name = {s["name"]: s for s in result.streams}
    assert by_name["video"]["summary"]["frames"] == NFRAMES and by_name["folder"]["summary"]["frames"] == 6
    assert all(s["summary"]["drops"] == 0 and s["error"] is None for s in result.streams)


def test_ready_sources_fill_the_batch_round_robin(batch_onnx):
    with open_backend(batch_onnx, threads=1) as be:
        rec = BatchRecorder(be)
        streams = [_stream(f"s{k}", ReadySource(4, 40 * k)) for k in range(3)]
        result = MultiPipeline(streams, rec, max_batch=2, handle_signals=False).run()
    assert rec.sizes[:6] == [2] * 6  # 12 frames ready from the start: always full batches of the cap
    assert result.frames == 12 and [s["summary"]["frames"] for s in result.streams] == [4, 4, 4]


def test_a_static_batch_model_runs_one_frame_per_step(onnx_model):
    with open_backend(onnx_model, threads=1) as be:
        assert be.max_batch == 1
        rec = BatchRecorder(be)
        pipe = MultiPipeline(
            [_stream(f"s{k}", ReadySource(3, 50 * k)) for k in range(2)], rec, max_batch=8, handle_signals=False
        )
        assert pipe.max_batch == 1
        result = pipe.run()
    assert set(rec.sizes) == {1} and result.frames == 6


def test_a_stalled_source_does_not_stall_the_others(tmp_path, batch_onnx, video_file, image_folder):
    """The held source gives nothing until both files have written their last mask: only then is it released."""
    held = HeldSource()
    remaining = {"video": NFRAMES, "folder": 6}

    class ReleaseWhenFilesDone(Sink):
        def __init__(self, name):
            self.name = name

        def write(self, frame, labels, vis, hud):
            remaining[self.name] -= 1
            if not any(remaining.values()):
                held.release()
            return True

    with open_backend(batch_onnx, threads=1) as be:
        streams = [
            _stream(
                "video", open_source(str(video_file)), [MaskSink(tmp_path / "video"), ReleaseWhenFilesDone("video")]
            ),
            _stream("held", held),
            _stream("folder", open_source(str(image_folder)), [ReleaseWhenFilesDone("folder")]),
        ]
        result = MultiPipeline(streams, be, handle_signals=False).run()
    assert remaining == {"video": 0, "folder": 0} and held.released.is_set()
    assert result.stopped_by == "end" and result.frames == NFRAMES + 6
    assert [s["summary"]["frames"] for s in result.streams] == [NFRAMES, 0, 6]
    assert held.polled > 1  # asked at every step, never waited on
    assert len(list((tmp_path / "video").glob("*.png"))) == NFRAMES


def test_a_camera_that_stalls_ends_alone_with_its_error(batch_onnx, video_file):
    camera = SimulatedCamera(n=3, fps=100.0)  # three frames, then read() fails: the camera is gone

    def opener():
        if camera.produced >= camera.n:
            camera.hang = 0.05  # reconnects open a device that never gives a frame again
        return camera

    live = LiveSource(opener, "camera 7", max_retries=2, retry_delay=0.01, stall_timeout=0.5)
    with open_backend(batch_onnx, threads=1) as be:
        streams = [_stream("camera7", live), _stream("video", open_source(str(video_file)))]
        result = MultiPipeline(streams, be, handle_signals=False).run()
    assert result.stopped_by == "error"
    assert len(result.errors) == 1 and result.errors[0].startswith("camera7: camera 7: ")
    by_name = {s["name"]: s for s in result.streams}
    assert by_name["video"]["summary"]["frames"] == NFRAMES and by_name["video"]["error"] is None
    assert 1 <= by_name["camera7"]["summary"]["frames"] <= 3


def test_max_frames_counts_per_source(batch_onnx, video_file, image_folder):
    with open_backend(batch_onnx, threads=1) as be:
        streams = [_stream("video", open_source(str(video_file))), _stream("folder", open_source(str(image_folder)))]
        result = MultiPipeline(streams, be, max_frames=4, handle_signals=False).run()
    assert result.stopped_by == "max-frames" and [s["summary"]["frames"] for s in result.streams] == [4, 4]


def test_source_names_are_short_and_collision_free():
    assert source_name("0") == "camera0" and source_name("csi://1") == "csi1"
    assert source_name("v4l2:///dev/video2") == "video2" and source_name("file:///data/clip.mp4") == "clip"
    assert source_name("rtsp://user:pw@10.0.0.5:554/live/ch1") == "10.0.0.5-ch1"
    assert source_name("rtp://@:1234") == "rtp-1234" and source_name("frames/*.png") == "frames"
    assert source_name("cam ! appsink") == "pipeline" and source_name("/data/seq/") == "seq"
    assert source_names(["a/cam.mp4", "b/cam.mp4", "c/x.mp4", "d/cam.avi"]) == ["cam-1", "cam-2", "x", "cam-3"]


# ----------------------------------------------------------------------------------------- the CLI ----
def test_cli_two_sources_per_source_masks_and_stats(tmp_path, batch_onnx, video_file, image_folder):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shutil.copy(video_file, a / "cam.mp4")
    shutil.copy(video_file, b / "cam.mp4")
    masks, stats = tmp_path / "masks", tmp_path / "stats"
    r = CliRunner().invoke(
        app,
        [
            "run",
            str(batch_onnx),
            "--source",
            str(a / "cam.mp4"),
            "--source",
            str(b / "cam.mp4"),
            "--source",
            str(image_folder),
            "--save-masks",
            str(masks),
            "--stats",
            str(stats),
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    names = ["cam-1", "cam-2", image_folder.name]
    assert sorted(p.name for p in masks.iterdir()) == sorted(names)
    assert len(list((masks / "cam-1").glob("*.png"))) == len(list((masks / "cam-2").glob("*.png"))) == NFRAMES
    np.testing.assert_array_equal(_masks(masks / "cam-1", NFRAMES), _masks(masks / "cam-2", NFRAMES))
    summary = json.loads((stats / "summary.json").read_text())
    assert [s["name"] for s in summary["sources"]] == names and summary["errors"] == []
    for s in summary["sources"]:
        recs = [json.loads(line) for line in (stats / f"{s['name']}.jsonl").read_text().splitlines()]
        assert len(recs) == s["summary"]["frames"] > 0 and all(1 <= rec["batch"] <= 3 for rec in recs)
        assert s["summary"]["fps"] > 0 and s["summary"]["drops"] == 0
    assert "cam-1" in r.output and "batches" in r.output


def test_cli_refuses_outputs_over_inputs_and_file_names_for_folders(tmp_path, batch_onnx, video_file, image_folder):
    src = tmp_path / "frames"
    shutil.copytree(image_folder, src)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    runner = CliRunner()
    r = runner.invoke(
        app, ["run", str(batch_onnx), "--source", str(src), "--source", str(video_file), "--save-masks", str(tmp_path)]
    )  # tmp_path/frames would be the masks of 'frames'
    assert r.exit_code != 0 and "is an input of this command" in str(r.exception or r.output)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    r = runner.invoke(
        app,
        [
            "run",
            str(batch_onnx),
            "--source",
            str(src),
            "--source",
            str(video_file),
            "--save",
            str(tmp_path / "out.mp4"),
        ],
    )
    assert r.exit_code != 0 and "names a folder" in str(r.exception or r.output)
    assert not (tmp_path / "out.mp4").exists()
    r = runner.invoke(app, ["run", str(batch_onnx), "--source", str(video_file), "--max-batch", "2"])
    assert r.exit_code != 0 and "several --source" in str(r.exception or r.output)
    # --bitrate sets a stream: with several sources (MP4 files in a folder) it is refused, not ignored
    out = tmp_path / "videos"
    args = ["run", str(batch_onnx), "--source", str(src), "--source", str(video_file), "--save", str(out)]
    r = runner.invoke(app, [*args, "--bitrate", "1000000"])
    assert r.exit_code != 0 and "--bitrate" in str(r.exception or r.output) and not out.exists()


def test_cli_two_sources_write_one_video_each(tmp_path, batch_onnx, video_file, image_folder):
    out = tmp_path / "videos"
    r = CliRunner().invoke(
        app,
        [
            "run",
            str(batch_onnx),
            "--source",
            str(video_file),
            "--source",
            str(image_folder),
            "--save",
            str(out),
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert len(read_video(out / f"{video_file.stem}.mp4")) == NFRAMES
    assert len(read_video(out / f"{image_folder.name}.mp4")) == 6
    assert make_frames(1)[0].shape == read_video(out / f"{video_file.stem}.mp4")[0].shape


def test_sigterm_stops_every_source_and_writes_the_summary(tmp_path, batch_onnx):
    """A real `vsseg-edge run` of two sources stopped by SIGTERM: exit 143, every stats file complete."""
    import signal
    import subprocess
    import sys

    long_video = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(long_video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (W, H))
    for f in make_frames(8) * 250:  # 2000 frames: far more than the run gets through before the signal
        writer.write(f)
    writer.release()
    stats = tmp_path / "stats"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vsseg_edge.cli",
            "run",
            str(batch_onnx),
            "--source",
            str(long_video),
            "--source",
            f"file://{long_video}",
            "--stats",
            str(stats),
            "--threads",
            "1",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stderr.readline()
    assert "2 sources" in first, first
    wait_for(lambda: records_streamed(stats), proc, what="the first frames' records")
    proc.send_signal(signal.SIGTERM)  # mid-stream, whatever the machine's load: frames went through, handled
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err
    summary = json.loads((stats / "summary.json").read_text())
    assert summary["stopped_by"] == "signal" and summary["signal"] == signal.SIGTERM
    for s in summary["sources"]:
        lines = (stats / f"{s['name']}.jsonl").read_text().splitlines()
        assert len(lines) == s["summary"]["frames"] < 2000 and all(json.loads(line) for line in lines)
    assert "interrupted by SIGTERM" in err.strip().splitlines()[-1]


def test_cli_two_sources_colour_masks_and_frame_json(tmp_path, batch_onnx, video_file, image_folder):
    masks, frames_json = tmp_path / "masks", tmp_path / "frames"
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "run",
            str(batch_onnx),
            "--source",
            str(video_file),
            "--source",
            str(image_folder),
            "--save-masks",
            str(masks),
            "--mask-format",
            "color",
            "--frame-json",
            str(frames_json),
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    colour = cv2.imread(str(masks / video_file.stem / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert colour.ndim == 3 and colour.shape[:2] == (H, W)  # class colours, not ids
    lines = (frames_json / f"{image_folder.name}.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line) for line in lines)
    assert len((frames_json / f"{video_file.stem}.jsonl").read_text().splitlines()) == NFRAMES
    r = runner.invoke(
        app,
        [
            "run",
            str(batch_onnx),
            "--source",
            str(video_file),
            "--source",
            str(image_folder),
            "--stats",
            str(tmp_path / "same"),
            "--frame-json",
            str(tmp_path / "same"),
        ],
    )
    assert r.exit_code != 0 and "give each output its own folder" in str(r.exception or r.output)
    for bad, msg in (
        (["--save", "rtp://127.0.0.1:5004"], "names a folder"),
        (["--frame-json", "-"], "names a folder"),
        (["--preprocess", "device"], "on the host"),
    ):
        r = runner.invoke(
            app, ["run", str(batch_onnx), "--source", str(video_file), "--source", str(image_folder), *bad]
        )
        assert r.exit_code != 0 and msg in str(r.exception or r.output), (bad, r.output)
