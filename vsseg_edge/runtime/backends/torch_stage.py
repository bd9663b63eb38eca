"""The torch backend's device stage: a uint8 frame in, labels (and the overlay) at the frame's size out, on the GPU.

    submit (infer thread)        upload stream          compute stream                         download stream
    frame → pinned slot k  ──►  H2D into slot k ─ev─►  preprocess → model + argmax →
                                                       label resize [→ overlay] → slot k ─ev─►  D2H into pinned slot k
    result (output thread): wait for slot k's download event, copy the labels out, give slot k back

Each frame takes one slot of a fixed ring (pinned host and device buffers for the frame, the labels and the
overlay), allocated once per frame size, so while frame n computes, frame n+1 uploads and frame n−1 downloads,
and nothing is allocated per frame but the op results torch's caching allocator serves from its pool. With
`cuda_graph` the three compute parts are CUDA graphs captured at the first frame and replayed on a static frame
buffer (no allocation at all, one launch each). Every part is timed with CUDA events that are read only once the
frame is done, so timing adds no synchronisation. `wait_idle` (live sources) blocks until the model part of the
last frame has finished: the newest camera frame is then taken and starts at once instead of waiting behind it.

The preprocessing is `runtime/device.py`, the second implementation of `core.preprocess`. On a CPU device the same
code runs synchronously (no streams, wall-clock timers); that is how the CPU test suite checks this stage.
"""

from __future__ import annotations

import time

import numpy as np

from ..device import DevicePreprocess, LabelResize, overlay
from ..stage import SlotRing, StageResult

_EVENTS = ("u0", "u1", "c0", "c1", "c2", "c3", "d0", "d1")


class _WallEvent:
    """A CPU stand-in for torch.cuda.Event(enable_timing=True): the work before `record` is already done."""

    def record(self, stream=None) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: _WallEvent) -> float:
        return (end.t - self.t) * 1e3

    def synchronize(self) -> None:
        pass


class _Slot:
    """One frame in flight: its pinned host buffers, device buffers and timing events."""

    def __init__(self, torch, hw: tuple[int, int], device, with_overlay: bool):
        cuda = device.type == "cuda"

        def pair(shape):
            dev = torch.empty(shape, dtype=torch.uint8, device=device)
            return (torch.empty(shape, dtype=torch.uint8, pin_memory=True) if cuda else dev), dev

        self.host_frame, self.frame = pair((*hw, 3))
        self.host_labels, self.labels = pair(hw)
        self.host_vis, self.vis = pair((*hw, 3)) if with_overlay else (None, None)
        self.host_frame_np = self.host_frame.numpy()
        make = (lambda: torch.cuda.Event(enable_timing=True)) if cuda else _WallEvent
        self.ev = {name: make() for name in _EVENTS}
        self.staged_ms = 0.0


class _Pending:
    def __init__(self, stage: TorchDeviceStage, slot: _Slot):
        self._stage, self._slot = stage, slot

    def result(self) -> StageResult:
        slot, ev = self._slot, self._slot.ev
        ev["d1"].synchronize()
        labels = slot.host_labels.numpy().copy()  # a sink may keep it: the slot's buffer goes back to the ring
        vis = slot.host_vis.numpy().copy() if slot.host_vis is not None else None
        ms = lambda a, b: float(ev[a].elapsed_time(ev[b]))  # noqa: E731
        times = {
            "upload_ms": slot.staged_ms + ms("u0", "u1"),
            "preprocess_ms": ms("c0", "c1"),
            "infer_ms": ms("c1", "c2"),
            "postprocess_ms": ms("c2", "c3"),
            "download_ms": ms("d0", "d1"),
        }
        self._stage._ring.release(slot)
        return StageResult(labels, vis, times)


class TorchDeviceStage:
    """Frames through a TorchBackend on its device, `slots` frames in flight at most (see the module docstring)."""

    kind = "device"

    def __init__(self, backend, *, lut: np.ndarray, alpha: float, overlay: bool, slots: int = 4):
        torch = self._torch = backend._torch
        self.backend, self.alpha, self.with_overlay, self.slots = backend, float(alpha), overlay, max(2, slots)
        self.device = torch.device(backend.device)
        self.cuda = self.device.type == "cuda"
        self._lut = torch.from_numpy(np.ascontiguousarray(lut)).to(self.device)
        if self.cuda:
            self._streams = {k: torch.cuda.Stream(self.device) for k in ("upload", "compute", "download")}
        self._hw: tuple[int, int] | None = None
        self._ring: SlotRing | None = None
        self._last: _Slot | None = None
        self._graphs = None

    # -- the three compute parts (what a CUDA graph captures) -----------------------------------------------
    def _pre(self, frame):
        return self.backend.prepare(self._preprocess(frame))

    def _model(self, x):
        return self.backend._forward(x, labels=True)[0]

    def _post(self, frame, labels):
        hw = tuple(labels.shape)
        if hw not in self._label_resizers:  # the model's output size; made at the first (warm-up) frame
            self._label_resizers[hw] = LabelResize(hw, self._hw, self.device)
        big = self._label_resizers[hw](labels)
        vis = overlay(frame, big, self._lut, self.alpha) if self.with_overlay else None
        return big, vis

    # -- setup ------------------------------------------------------------------------------------------------
    def _setup(self, hw: tuple[int, int]) -> None:
        """Buffers for frames of `hw` (after every frame of the previous size is done)."""
        if self._ring is not None:
            for _ in range(self._ring.size):  # the output thread gives them back as it finishes those frames
                self._ring.acquire()
        self._ring = self._graphs = self._last = None
        spec = self.backend.preprocess_spec
        self._preprocess = DevicePreprocess(spec, hw, self.device)
        self._label_resizers: dict[tuple[int, int], LabelResize] = {}
        self._hw = hw
        self._ring = SlotRing([_Slot(self._torch, hw, self.device, self.with_overlay) for _ in range(self.slots)])

    def _stream(self, name: str):
        import contextlib

        return self._torch.cuda.stream(self._streams[name]) if self.cuda else contextlib.nullcontext()

    # -- per frame --------------------------------------------------------------------------------------------
    def submit(self, image: np.ndarray) -> _Pending:
        from ...core.errors import VssegError

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise VssegError(f"frame: expected a BGR uint8 HxWx3 image, got {image.dtype} {image.shape}")
        if image.shape[:2] != self._hw:
            self._setup(image.shape[:2])
        slot = self._ring.acquire()
        ev = slot.ev
        t0 = time.perf_counter()
        np.copyto(slot.host_frame_np, image)
        slot.staged_ms = (time.perf_counter() - t0) * 1e3
        with self._stream("upload"):
            ev["u0"].record()
            if self.cuda:
                slot.frame.copy_(slot.host_frame, non_blocking=True)
            ev["u1"].record()
        with self._stream("compute"), self._torch.inference_mode():
            if self.cuda:
                self._streams["compute"].wait_event(ev["u1"])
            self._compute(slot)
        with self._stream("download"):
            if self.cuda:
                self._streams["download"].wait_event(ev["c3"])
            ev["d0"].record()
            if self.cuda:
                slot.host_labels.copy_(slot.labels, non_blocking=True)
                if slot.vis is not None:
                    slot.host_vis.copy_(slot.vis, non_blocking=True)
            ev["d1"].record()
        self._last = slot
        return _Pending(self, slot)

    def _compute(self, slot: _Slot) -> None:
        ev = slot.ev
        if self.backend.cuda_graph:
            return self._replay(slot)
        ev["c0"].record()
        x = self._pre(slot.frame)
        ev["c1"].record()
        labels = self._model(x)
        ev["c2"].record()
        big, vis = self._post(slot.frame, labels)
        slot.labels.copy_(big)
        if vis is not None:
            slot.vis.copy_(vis)
        ev["c3"].record()

    def _replay(self, slot: _Slot) -> None:
        """The compute parts as three CUDA graphs on a static frame buffer, captured at the first frame."""
        from .torch_backend import capture_graph

        if self._graphs is None:
            frame = slot.frame.clone()
            art = self.backend.artifact
            pre, x = capture_graph(self._torch, self._pre, frame, art)
            model, labels = capture_graph(self._torch, self._model, x, art)
            post, (big, vis) = capture_graph(self._torch, lambda small: self._post(frame, small), labels, art)
            # every static tensor stays referenced: the graphs read and write their memory on each replay
            self._graphs = (frame, pre, model, post, big, vis, x, labels)
        frame, pre, model, post, big, vis = self._graphs[:6]
        ev = slot.ev
        ev["c0"].record()
        frame.copy_(slot.frame)
        pre.replay()
        ev["c1"].record()
        model.replay()
        ev["c2"].record()
        post.replay()
        slot.labels.copy_(big)
        if vis is not None:
            slot.vis.copy_(vis)
        ev["c3"].record()

    def wait_idle(self) -> None:
        """Block until the model part of the last submitted frame is done (its label resize may still run)."""
        if self._last is not None:
            self._last.ev["c2"].synchronize()

    @property
    def in_flight(self) -> int:
        return self._ring.in_flight if self._ring is not None else 0

    def close(self) -> None:
        """Wait for queued device work (its buffers must outlive it), then drop every buffer and graph."""
        if self.cuda:
            for stream in self._streams.values():
                stream.synchronize()
        self._ring = self._graphs = self._last = None
        self._hw = None
