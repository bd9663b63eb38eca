"""The TensorRT backend's device stage: frames through an engine on three CUDA streams, through cuda-python only.

    submit (infer thread)              upload stream         compute stream           download stream
    frame → pinned input of slot k ──► H2D into slot k ─ev─► execute_async_v3 ─ev─►  D2H into pinned slot k
    result (output thread): wait for slot k's download event; labels (host argmax for a logits engine), resize
    to the frame, overlay on the host; give slot k back

An engine exported with `--frame-size` (export/camera_1024x2048.yaml) takes the camera's frames as they are:
resize, channel order and normalisation run inside the engine and the host only copies the frame into the
pinned buffer; with the uint8 ArgMax output (`--argmax uint8`) only the label map comes back. Any other engine
gets `core.preprocess` on the host, as the host stage does. The stage needs no torch: an edge box runs it with
TensorRT and cuda-python alone; label resize and overlay stay on the host (they are cheap at the label map's
size and run on the output thread, overlapped with the next frames' inference).

Each slot owns pinned host and device buffers for the input and the first output, allocated once; the engine's
tensor addresses are pointed at the slot's buffers before each enqueue (one execution context, one compute
stream, so enqueues never overlap each other while uploads and downloads of neighbouring frames overlap them).
Every part is timed with CUDA events read when the frame is done. Checked here against a test double of
tensorrt / cuda-python (tests/runtime/test_trt_stage.py): the order of calls per stream, not TensorRT.
"""

from __future__ import annotations

import time

import numpy as np

from ...core.preprocess import labels_to_frame_size, preprocess
from ..hud import overlay
from ..stage import SlotRing, StageResult
from .trt import HostDeviceBuffer, cuda_call

_EVENTS = ("u0", "u1", "c0", "c1", "d0", "d1")


def takes_frames_as_they_are(spec, frame_hw: tuple[int, int]) -> bool:
    """True when `core.preprocess(frame, spec)` is the frame itself (a camera-frame graph at the frame's size)."""
    return (
        spec.dtype == "uint8" and spec.layout == "nhwc" and spec.channel_order == "bgr" and tuple(frame_hw) == spec.size
    )


class _Slot:
    def __init__(self, cudart, inp: tuple, out: tuple):
        self.inp = self.out = None
        self.ev = {}
        try:
            self.inp = HostDeviceBuffer(cudart, *inp)
            self.out = HostDeviceBuffer(cudart, *out)
            for name in _EVENTS:
                self.ev[name] = cuda_call(cudart.cudaEventCreate())
        except BaseException:
            self.free(cudart)
            raise
        self.image: np.ndarray | None = None
        self.host_ms = self.staged_ms = 0.0

    def free(self, cudart) -> None:
        for event in self.ev.values():
            cuda_call(cudart.cudaEventDestroy(event))
        self.ev = {}
        for buf in (self.inp, self.out):
            if buf is not None:
                buf.free()


class _Pending:
    def __init__(self, stage: TrtDeviceStage, slot: _Slot):
        self._stage, self._slot = stage, slot

    def result(self) -> StageResult:
        stage, slot = self._stage, self._slot
        rt, ev = stage.cudart, slot.ev
        cuda_call(rt.cudaEventSynchronize(ev["d1"]))
        ms = lambda a, b: float(cuda_call(rt.cudaEventElapsedTime(ev[a], ev[b])))  # noqa: E731
        times = {
            "upload_ms": slot.staged_ms + ms("u0", "u1"),
            "preprocess_ms": slot.host_ms,
            "infer_ms": ms("c0", "c1"),
            "download_ms": ms("d0", "d1"),
        }
        output, image = slot.out.host.copy(), slot.image
        slot.image = None
        stage._ring.release(slot)
        t0 = time.perf_counter()
        labels = labels_to_frame_size(stage.backend.to_labels(output)[0], image.shape[:2])
        t1 = time.perf_counter()
        vis = overlay(image, labels, stage.lut, stage.alpha) if stage.with_overlay else None
        times.update(postprocess_ms=(t1 - t0) * 1e3, overlay_ms=(time.perf_counter() - t1) * 1e3)
        return StageResult(labels, vis, times)


class TrtDeviceStage:
    """Frames through a TrtBackend's engine, `slots` frames in flight at most (see the module docstring)."""

    kind = "device"

    def __init__(self, backend, *, lut: np.ndarray, alpha: float, overlay: bool, slots: int = 4):
        self.backend, self.cudart = backend, backend._cudart
        self.lut, self.alpha, self.with_overlay = lut, float(alpha), overlay
        self._streams: dict[str, object] = {}
        self._slots: list[_Slot] = []
        self._last: _Slot | None = None
        try:
            for name in ("upload", "compute", "download"):
                self._streams[name] = cuda_call(self.cudart.cudaStreamCreate())
            inp, out = backend.io_buffers()
            self._input_name, self._output_name = inp[0], out[0]
            for _ in range(max(2, slots)):
                self._slots.append(_Slot(self.cudart, inp[1:], out[1:]))
        except BaseException:
            self.close()
            raise
        self._ring = SlotRing(self._slots)

    def submit(self, image: np.ndarray) -> _Pending:
        rt, be, s = self.cudart, self.backend, self._streams
        spec = be.preprocess_spec
        slot = self._ring.acquire()
        ev = slot.ev
        t0 = time.perf_counter()
        if takes_frames_as_they_are(spec, image.shape[:2]) and image.shape[2:] == (3,):
            slot.host_ms = 0.0
            np.copyto(slot.inp.host[0], image)
        else:
            batch = preprocess(image, spec)
            t1 = time.perf_counter()
            slot.host_ms, t0 = (t1 - t0) * 1e3, t1
            np.copyto(slot.inp.host, batch)
        slot.staged_ms = (time.perf_counter() - t0) * 1e3
        slot.image = image
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(rt.cudaEventRecord(ev["u0"], s["upload"]))
        cuda_call(rt.cudaMemcpyAsync(slot.inp.device, slot.inp.host.ctypes.data, slot.inp.nbytes, h2d, s["upload"]))
        cuda_call(rt.cudaEventRecord(ev["u1"], s["upload"]))
        cuda_call(rt.cudaStreamWaitEvent(s["compute"], ev["u1"], 0))
        cuda_call(rt.cudaEventRecord(ev["c0"], s["compute"]))
        be.execute_on(s["compute"], {self._input_name: slot.inp.device, self._output_name: slot.out.device})
        cuda_call(rt.cudaEventRecord(ev["c1"], s["compute"]))
        cuda_call(rt.cudaStreamWaitEvent(s["download"], ev["c1"], 0))
        cuda_call(rt.cudaEventRecord(ev["d0"], s["download"]))
        cuda_call(rt.cudaMemcpyAsync(slot.out.host.ctypes.data, slot.out.device, slot.out.nbytes, d2h, s["download"]))
        cuda_call(rt.cudaEventRecord(ev["d1"], s["download"]))
        self._last = slot
        return _Pending(self, slot)

    def wait_idle(self) -> None:
        """Block until the engine has finished the last submitted frame (its download may still run)."""
        if self._last is not None:
            cuda_call(self.cudart.cudaEventSynchronize(self._last.ev["c1"]))

    @property
    def in_flight(self) -> int:
        return self._ring.in_flight

    def close(self) -> None:
        """Wait for every queued copy and execution (their buffers must outlive them), then free everything."""
        rt = self.cudart
        for stream in self._streams.values():
            cuda_call(rt.cudaStreamSynchronize(stream))
        for slot in self._slots:
            slot.free(rt)
        self._slots = []
        for stream in self._streams.values():
            cuda_call(rt.cudaStreamDestroy(stream))
        self._streams = {}
        self._last = None
