"""Frame stages: the torch device stage (run on CPU tensors here, on CUDA where present) and the pipeline's
overlap and latest-frame logic, checked with a simulated device whose work takes a known time.

The simulated device (`FakeDevice`) runs submitted frames one after the other on its own thread, like a CUDA
stream; the assertions are about ordering and bounds (frames in flight, a frame waiting behind another on the
device), never about how fast this machine is.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import torch

from tests.runtime.conftest import make_frames, read_video
from tests.runtime.test_live import SimulatedCamera
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.labels import CITYSCAPES
from vsseg_edge.core.preprocess import PreprocessSpec
from vsseg_edge.runtime.backends import open_backend
from vsseg_edge.runtime.backends.torch_backend import TorchBackend
from vsseg_edge.runtime.hud import bgr_lut
from vsseg_edge.runtime.pipeline import Pipeline
from vsseg_edge.runtime.sinks import MaskSink, NullSink, VideoSink
from vsseg_edge.runtime.sources import LiveSource, open_source
from vsseg_edge.runtime.stage import HostStage, SlotRing, StageResult, open_stage

CLASSES = list(CITYSCAPES.classes)
LUT = bgr_lut(CITYSCAPES)


def torch_backend(net, spec=PreprocessSpec(height=32, width=64), **kw) -> TorchBackend:
    import copy

    return TorchBackend(copy.deepcopy(net), preprocess_spec=spec, classes=CLASSES, device="cpu", **kw)


def test_device_stage_on_cpu_tensors_equals_the_host_stage(net):
    """A 2× shrink is exact on both paths: identical labels; the overlays agree within 1."""
    be = torch_backend(net)
    dev = open_stage(be, mode="device", lut=LUT, alpha=0.4, overlay=True, slots=3)
    host = open_stage(be, mode="host", lut=LUT, alpha=0.4, overlay=True, slots=3)
    assert dev.kind == "device" and isinstance(host, HostStage)
    seen = set()
    for frame in make_frames(5):
        a, b = dev.submit(frame).result(), host.submit(frame).result()
        assert a.labels.shape == frame.shape[:2] and a.labels.dtype == np.uint8
        np.testing.assert_array_equal(a.labels, b.labels)
        assert np.abs(a.vis.astype(np.int16) - b.vis).max() <= 1
        assert set(a.times) == {"upload_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "download_ms"}
        assert a.times["infer_ms"] > 0 and min(a.times.values()) >= 0
        seen.add(a.labels.tobytes())
    assert len(seen) > 1  # each result is its own frame's
    dev.close()


def test_a_logits_backend_still_gets_labels_from_the_device_stage(net):
    stage = open_stage(torch_backend(net, logits=True), mode="device", lut=LUT, alpha=0.5, overlay=False, slots=2)
    host = open_stage(torch_backend(net), mode="host", lut=LUT, alpha=0.5, overlay=False, slots=2)
    frame = make_frames(1)[0]
    got = stage.submit(frame).result().labels
    assert got.dtype == np.uint8 and got.shape == frame.shape[:2]
    np.testing.assert_array_equal(got, host.submit(frame).result().labels)


def test_slots_are_reused_and_results_survive_their_slot(net):
    """No buffer per frame: the same slot buffers cycle; a returned label map is a copy a sink may keep."""
    stage = open_stage(torch_backend(net), mode="device", lut=LUT, alpha=0.5, overlay=False, slots=2)
    frames = make_frames(6)
    pending = [stage.submit(frames[0]), stage.submit(frames[1])]
    assert stage.in_flight == 2
    buffers = {id(s.frame) for s in stage._ring._free} | {id(p._slot.frame) for p in pending}
    kept = [p.result() for p in pending]
    for frame in frames[2:]:
        p = stage.submit(frame)
        assert id(p._slot.frame) in buffers
        kept.append(p.result())
    assert stage.in_flight == 0 and kept[0].vis is None
    host = open_stage(torch_backend(net), mode="host", lut=LUT, alpha=0.5, overlay=False, slots=2)
    for frame, got in zip(frames, kept):  # earlier results were not overwritten by later frames
        np.testing.assert_array_equal(got.labels, host.submit(frame).result().labels)


def test_a_new_frame_size_rebuilds_the_buffers(net):
    stage = open_stage(torch_backend(net), mode="device", lut=LUT, alpha=0.5, overlay=True, slots=2)
    small = cv2.resize(make_frames(1)[0], (100, 50))
    a = stage.submit(make_frames(1)[0]).result()
    b = stage.submit(small).result()
    assert a.labels.shape == (64, 128) and b.labels.shape == b.vis.shape[:2] == (50, 100)
    with pytest.raises(VssegError, match=r"^frame: expected a BGR uint8 HxWx3 image, got float32"):
        stage.submit(small.astype(np.float32))


def test_mode_choice_and_refusals(net, onnx_model):
    be = torch_backend(net)
    assert isinstance(open_stage(be, mode="auto", lut=LUT, alpha=0.5, overlay=False, slots=4), HostStage)  # CPU
    with open_backend(onnx_model, threads=1) as ort_be:
        with pytest.raises(VssegError, match=r"^--preprocess device: the ort backend has no device stage"):
            open_stage(ort_be, mode="device", lut=LUT, alpha=0.5, overlay=False, slots=4)
    with pytest.raises(VssegError, match=r"^--preprocess gpu: expected one of auto, host, device$"):
        open_stage(be, mode="gpu", lut=LUT, alpha=0.5, overlay=False, slots=4)


def test_pipeline_with_the_device_stage_writes_the_host_path_results(tmp_path, net, video_file):
    outs = {}
    for mode in ("host", "device"):
        out = tmp_path / mode
        result = Pipeline(
            open_source(str(video_file)),
            torch_backend(net),
            [MaskSink(out / "m"), VideoSink(out / "v.mp4", fps=10)],
            preprocess=mode,
            stats_path=str(out / "s.jsonl"),
            handle_signals=False,
        ).run()
        assert result.frames == 12 and result.error is None
        outs[mode] = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((out / "m").glob("*.png"))]
        assert len(read_video(out / "v.mp4")) == 12
        if mode == "device":
            recs = result.records
            assert all(r["infer_ms"] > 0 and r["preprocess_ms"] > 0 for r in recs)
    assert len(outs["device"]) == 12
    for a, b in zip(outs["host"], outs["device"]):
        np.testing.assert_array_equal(a, b)


def test_run_command_preprocess_flag(tmp_path, image_folder, capsys):
    from vsseg_edge.models import create_model
    from vsseg_edge.models.checkpoint import save_checkpoint
    from vsseg_edge.runtime.run import run_model

    torch.manual_seed(0)
    ckpt = tmp_path / "espnet.pt"
    save_checkpoint(
        ckpt,
        create_model("espnet", 19).eval(),
        model_name="espnet",
        classes=CLASSES,
        preprocess=PreprocessSpec(height=32, width=64),
    )
    result = run_model(ckpt, source=str(image_folder), preprocess="device", save_masks=tmp_path / "m")
    assert result.frames == 6 and len(list((tmp_path / "m").glob("*.png"))) == 6
    assert "espnet.pt, input 32x64, labels, device stage ← " in capsys.readouterr().err
    run_model(ckpt, source=str(image_folder), max_frames=1)  # auto on the CPU: the host path
    assert ", host stage ← " in capsys.readouterr().err
    with pytest.raises(VssegError, match=r"^--preprocess cpu: expected auto, host or device$"):
        run_model(ckpt, source=str(image_folder), preprocess="cpu")


# -- the pipeline's overlap and latest-frame logic, with a simulated device ---------------------------------------
class FakeDevice:
    """A stage whose frames run one at a time on a worker thread (a CUDA stream), `compute_s` each.

    Records, for every frame, how many frames were queued or running on the device when it was submitted
    (`waiting`), and the largest number of frames submitted but not yet handed back (`max_in_flight`).
    """

    kind = "device"

    def __init__(self, compute_s: float):
        self.compute_s = compute_s
        self.jobs: list[threading.Event] = []
        self.waiting: list[int] = []
        self.in_flight = self.max_in_flight = 0
        self.idle_waits = 0
        self._lock = threading.Lock()
        self._work = threading.Semaphore(0)
        self._queue: list[threading.Event] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            self._work.acquire()
            with self._lock:
                done = self._queue[0]
            time.sleep(self.compute_s)
            with self._lock:
                self._queue.pop(0)
            done.set()

    def submit(self, image):
        done = threading.Event()
        with self._lock:
            self.waiting.append(len(self._queue))
            self._queue.append(done)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.jobs.append(done)
        self._work.release()
        stage = self

        class Pending:
            def result(self):
                done.wait()
                with stage._lock:
                    stage.in_flight -= 1
                return StageResult(np.zeros(image.shape[:2], np.uint8), None, {"infer_ms": stage.compute_s * 1e3})

        return Pending()

    def wait_idle(self):
        self.idle_waits += 1
        if self.jobs:
            self.jobs[-1].wait()

    def close(self):
        pass


class FakeBackend:
    name, device, classes, artifact = "fake", "fake", CLASSES, "fake"
    preprocess_spec = PreprocessSpec(height=64, width=128)

    def __init__(self, stage):
        self.stage = stage

    def device_stage(self, **kw):
        return self.stage

    def describe(self):
        return "fake"


def test_file_frames_overlap_on_the_device_in_order(video_file):
    """A file keeps the device busy: the next frames are submitted while one computes, within the slots."""
    dev = FakeDevice(0.02)
    result = Pipeline(
        open_source(str(video_file)), FakeBackend(dev), [NullSink()], queue_size=2, handle_signals=False
    ).run()
    assert [r["frame"] for r in result.records] == list(range(12))
    assert 3 <= dev.max_in_flight <= 4  # overlap, bounded by queue + the frame emitted + the frame submitted
    assert max(dev.waiting) >= 1 and dev.idle_waits == 0


def test_live_frames_never_wait_behind_another_on_the_device():
    """Latest-frame semantics end to end: a live frame is taken only when the device is free, so it starts at once;
    the camera's other frames are dropped (counted), and at most two frames are in flight."""
    dev = FakeDevice(0.03)
    src = LiveSource(lambda: SimulatedCamera(fps=200.0), "simulated camera", stall_timeout=5.0)
    result = Pipeline(src, FakeBackend(dev), [NullSink()], max_frames=10, handle_signals=False).run()
    assert result.frames == 10
    assert dev.waiting == [0] * len(dev.waiting)  # nothing queued or running on the device at any submit
    assert dev.max_in_flight <= 2 and dev.idle_waits >= 10
    assert result.summary["drops"] >= 10 * 3  # ~6 camera frames per 30 ms frame, the stale ones dropped


def test_slot_ring_waits_for_a_free_slot():
    ring = SlotRing(["a", "b"])
    assert ring.acquire() == "a" and ring.acquire() == "b" and ring.in_flight == 2
    with pytest.raises(TimeoutError):
        ring.acquire(timeout=0.01)
    threading.Timer(0.05, ring.release, ["a"]).start()
    assert ring.acquire(timeout=5.0) == "a"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_stage_equals_the_host_stage(net, cuda_graph):
    """On CUDA: streams, pinned slots and (optionally) the three CUDA graphs give the host path's labels."""
    import copy

    spec = PreprocessSpec(height=32, width=64)
    gpu = TorchBackend(copy.deepcopy(net), preprocess_spec=spec, classes=CLASSES, fp16=False, cuda_graph=cuda_graph)
    cpu = torch_backend(net, spec)
    dev = open_stage(gpu, mode="auto", lut=LUT, alpha=0.5, overlay=True, slots=4)
    host = open_stage(cpu, mode="host", lut=LUT, alpha=0.5, overlay=True, slots=4)
    assert dev.kind == "device" and dev.cuda
    frames = make_frames(8)
    pending = [dev.submit(f) for f in frames[:3]]  # three frames in flight at once
    results = [p.result() for p in pending] + [dev.submit(f).result() for f in frames[3:]]
    for frame, got in zip(frames, results):
        want = host.submit(frame).result()
        assert (got.labels == want.labels).mean() >= 0.999
        assert np.abs(got.vis.astype(np.int16) - want.vis).max() <= 1
        assert got.times["infer_ms"] > 0 and got.times["upload_ms"] > 0
    dev.close()
