"""The frame stage the pipeline calls: a captured frame in, its label map (and overlay) at the frame's size out.

    pending = stage.submit(image)       infer thread: start the work for one frame (may return before it is done)
    result = pending.result()           output thread: wait for it → StageResult(labels, vis, times)
    stage.wait_idle()                   live sources: block until the device can start a new frame at once
    stage.close()

`HostStage` is the host path every backend has: `core.preprocess` + `backend.infer` in `submit` (so a live
source only pays for frames that are used), host argmax, label resize and overlay in `result`. A backend that
runs on a GPU may offer a device stage instead (`backend.device_stage(...)`): upload the uint8 frame, do
everything on the device, bring the labels back, with up to `slots` frames in flight on separate streams.
`SlotRing` is the fixed set of buffers such a stage cycles through: a slot is taken in `submit` and given back
after `result`, so nothing is allocated per frame and a slot is never reused while its frame is in flight.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..core.preprocess import labels_to_frame_size, preprocess
from .hud import overlay

MODES = ("auto", "host", "device")


@dataclass
class StageResult:
    """uint8 labels at the frame's size, the overlay (when asked) and the stage times in milliseconds."""

    labels: np.ndarray
    vis: np.ndarray | None
    times: dict[str, float] = field(default_factory=dict)


class _HostPending:
    def __init__(self, stage: HostStage, image: np.ndarray, output: np.ndarray, times: dict):
        self._stage, self._image, self._output, self._times = stage, image, output, times

    def result(self) -> StageResult:
        t0 = time.perf_counter()
        s = self._stage
        labels = labels_to_frame_size(s.backend.to_labels(self._output)[0], self._image.shape[:2])
        t1 = time.perf_counter()
        vis = overlay(self._image, labels, s.lut, s.alpha) if s.with_overlay else None
        # the overlay is render work on the host path (measured as such before the stage existed)
        self._times.update(postprocess_ms=(t1 - t0) * 1e3, overlay_ms=(time.perf_counter() - t1) * 1e3)
        return StageResult(labels, vis, self._times)


class HostStage:
    """`core.preprocess` and `backend.infer` on the infer thread; argmax, resize, overlay on the output thread."""

    kind = "host"

    def __init__(self, backend, *, lut: np.ndarray, alpha: float, overlay: bool):
        self.backend, self.lut, self.alpha, self.with_overlay = backend, lut, alpha, overlay

    def submit(self, image: np.ndarray) -> _HostPending:
        t0 = time.perf_counter()
        batch = preprocess(image, self.backend.preprocess_spec)
        t1 = time.perf_counter()
        output = self.backend.infer(batch)
        t2 = time.perf_counter()
        return _HostPending(self, image, output, {"preprocess_ms": (t1 - t0) * 1e3, "infer_ms": (t2 - t1) * 1e3})

    def wait_idle(self) -> None:
        """The infer thread itself does the work: when it asks, nothing is running."""

    def close(self) -> None:
        pass


def open_stage(backend, *, mode: str = "auto", lut: np.ndarray, alpha: float, overlay: bool, slots: int):
    """The backend's device stage where `mode` and the backend allow it, else the host stage.

    auto: the device stage when the backend runs on a GPU and offers one; device: the device stage or a one-line
    error saying why not; host: always the host stage.
    """
    from ..core.errors import VssegError

    if mode not in MODES:
        raise VssegError(f"--preprocess {mode}: expected one of {', '.join(MODES)}")
    make = getattr(backend, "device_stage", None)
    if mode != "host" and make is not None:
        stage = make(lut=lut, alpha=alpha, overlay=overlay, slots=slots, required=mode == "device")
        if stage is not None:
            return stage
    if mode == "device":
        raise VssegError(
            f"--preprocess device: the {getattr(backend, 'name', 'given')} backend has no device "
            "stage (the torch and TensorRT backends on a GPU have one); use --preprocess host"
        )
    return HostStage(backend, lut=lut, alpha=alpha, overlay=overlay)


class SlotRing:
    """`n` reusable slots: `acquire` takes the oldest free one (waiting while all are in flight), `release` frees it."""

    def __init__(self, slots: list):
        self._free = list(slots)
        self.size = len(self._free)
        self._cond = threading.Condition()

    def acquire(self, timeout: float | None = None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._free, timeout):
                raise TimeoutError("every slot is in flight")
            return self._free.pop(0)

    def release(self, slot) -> None:
        with self._cond:
            self._free.append(slot)
            self._cond.notify()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self.size - len(self._free)
