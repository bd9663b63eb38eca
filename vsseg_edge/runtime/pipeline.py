"""The per-frame pipeline: capture → (preprocess + infer) → (postprocess + render), each in its own thread.

    source reader thread ──(bounded queue, or latest-frame slot for live sources)──► infer thread
    infer thread ──(bounded queue)──► output thread ──► sinks, stats

Stages overlap, so throughput is bounded by the slowest stage, not their sum. For a live source the
infer thread takes a frame only once the output queue is empty, so a slow output stage (a big window,
video encoding) makes the capture drop frames instead of queueing stale results behind it. The infer thread does the
preprocessing (so a live source only pays for frames that are actually used); the output thread does
the host argmax / resize to the frame and the rendering. Shutdown — end of stream, --max-frames,
Ctrl-C / SIGTERM, the window's q, or an error in any stage — always drains the output queue, closes
every sink (the video is finalised) and writes the stats. The calling thread waits in short joins and
does the window's GUI calls (`Sink.pump`), so signals and the GUI are handled on the main thread.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..core.labels import label_set_for
from ..core.signals import raise_interrupted
from .backends import Backend
from .hud import bgr_lut
from .sinks import Sink
from .sources import Source
from .stage import open_stage
from .stats import FrameTimes, StatsCollector, summarize

END = object()  # the end marker of the output queue


@dataclass
class RunResult:
    """What a run did: frames written, why it stopped, the stats summary, and an error line if any."""

    frames: int
    stopped_by: str  # "end" | "max-frames" | "signal" | "user" | "error"
    summary: dict
    error: str | None = None
    records: list[dict] = field(default_factory=list)
    signal: int | None = None  # the signal that stopped the run (stopped_by "signal")


def recent_rate(recent) -> tuple[float, float]:
    """(frames per second, median latency in ms) of the last frames, given as (finish time s, latency ms) pairs
    (at least two): what the HUD shows."""
    (t_first, _), (t_last, _) = recent[0], recent[-1]
    return (len(recent) - 1) / max(t_last - t_first, 1e-9), float(np.median([lat for _, lat in recent]))


class OutputHandoff:
    """The hand-off every pipeline has: the inference thread puts its results in a bounded queue (`_out`), the
    output thread (`_output_thread`) takes them and emits them (`_emit`), until the end marker. A full queue
    holds inference back (back-pressure); after a failure the output thread drains without rendering. A
    subclass sets `_out`, `_output_thread`, `_stop`, `_errors`, `_stopped_by` and defines `_emit` and `_fail`."""

    def _put(self, item, force: bool = False) -> bool:
        """Blocking put (back-pressure); an item is abandoned on stop, the end marker only if output is gone."""
        while self._output_thread.is_alive():
            try:
                self._out.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._stop.is_set() and not force:
                    return False
        return False

    def _output_loop(self) -> None:
        while True:
            item = self._out.get()
            if item is END:
                return
            if self._errors and self._stopped_by == "error":
                continue  # drain without rendering after a failure
            try:
                self._emit(*item)
            except BaseException as exc:
                self._fail(exc)


class Pipeline(OutputHandoff):
    """Run `backend` on every frame of `source` (or the latest one, for live sources) into `sinks`."""

    def __init__(
        self,
        source: Source,
        backend: Backend,
        sinks: list[Sink],
        *,
        alpha: float = 0.5,
        max_frames: int | None = None,
        stats_path: str | None = None,
        queue_size: int = 2,
        handle_signals: bool = True,
        preprocess: str = "auto",
    ):
        self.source, self.backend, self.sinks = source, backend, list(sinks)
        self.alpha, self.max_frames = alpha, max_frames
        self.stats = StatsCollector(stats_path)
        self._out: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._stopped_by = "end"
        self._errors: list[BaseException] = []
        self._lut = bgr_lut(
            label_set_for(backend.classes or [str(i) for i in range(255)], getattr(backend, "palette", None))
        )
        self._needs_overlay = any(s.needs_overlay for s in self.sinks)
        self._recent = deque(maxlen=30)  # (t_done, latency) of the last frames, for the HUD
        self._handle_signals = handle_signals
        self._signal: int | None = None
        # frames in flight: the output queue, the one being emitted and the one being submitted
        self.stage = open_stage(
            backend, mode=preprocess, lut=self._lut, alpha=alpha, overlay=self._needs_overlay, slots=queue_size + 2
        )

    # -- control ---------------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self._stopped_by = reason
        self._stop.set()
        self.source.stop()

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self.request_stop("error")

    # -- stages ----------------------------------------------------------------------------------------
    def _infer_loop(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and n >= self.max_frames:
                    self.request_stop("max-frames")
                    break
                if self.source.live and not self._out.empty():
                    time.sleep(0.001)  # output busy: take the newest frame only when it can move on at once
                    continue
                if self.source.live:
                    self.stage.wait_idle()  # the device is free: the newest frame starts at once
                try:
                    frame = self.source.get(timeout=0.1)
                except queue.Empty:
                    continue
                if frame is None:
                    break
                times = FrameTimes(frame.index, frame.t_captured, frame.capture_ms)
                self._put((frame, self.stage.submit(frame.image), times))
                n += 1
        except BaseException as exc:  # reported by run(); the output thread still drains and closes
            self._fail(exc)
        finally:
            self._put(END, force=True)

    def _emit(self, frame, pending, times: FrameTimes) -> None:
        result = pending.result()
        t1 = time.perf_counter()
        labels, vis = result.labels, result.vis
        times.set_stages(result.times)  # before the sinks: --frame-json reports the stages so far
        frame.times = times
        hud = self._hud_lines()
        keep_going = True
        for sink in self.sinks:
            keep_going = sink.write(frame, labels, vis, hud) and keep_going
        t2 = time.perf_counter()
        times.render_ms += (t2 - t1) * 1e3
        times.t_done = t2
        self.stats.add(times.record(self.source.drops, self.source.decode_failures))
        self._recent.append((t2, (t2 - times.t_captured) * 1e3))
        if not keep_going:
            self.request_stop("user")

    def _hud_lines(self) -> list[str]:
        if len(self._recent) < 2:
            return [self.backend.describe()]
        fps, lat = recent_rate(self._recent)
        return [
            f"{fps:5.1f} FPS  latency {lat:6.1f} ms",
            f"drops {self.source.drops}",
            f"{self.backend.name} {self.backend.device}",
        ]

    # -- run -------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Run to the end of the stream (or a stop); always finalise sinks and stats."""
        restore = self._install_signals()
        self._output_thread = threading.Thread(target=self._output_loop, name="output", daemon=True)
        infer_thread = threading.Thread(target=self._infer_loop, name="infer", daemon=True)
        try:
            for sink in self.sinks:
                sink.start(self.source)
            self.source.start()
            self._output_thread.start()
            infer_thread.start()
            self._wait(infer_thread, self._output_thread)
        finally:
            self.source.stop()
            self._close_all()
            restore()
        return self._result()

    def _wait(self, *threads: threading.Thread) -> None:
        wait_pumping(threads, self.sinks, self.request_stop, self._fail)

    def _close_all(self) -> None:
        try:
            self.stage.close()
        except BaseException as exc:
            self._errors.append(exc)
        for sink in self.sinks:
            try:
                sink.close()
            except BaseException as exc:
                self._errors.append(exc)
        self.stats.close()
        self.source.join(timeout=1.0)

    def _result(self) -> RunResult:
        if self._errors:
            raise self._errors[0]
        summary = summarize(self.stats.records, self.source.drops, self.source.decode_failures)
        stopped = "error" if self.source.error and self._stopped_by == "end" else self._stopped_by
        return RunResult(len(self.stats.records), stopped, summary, self.source.error, self.stats.records, self._signal)

    def _install_signals(self):
        if not self._handle_signals:
            return lambda: None
        return stop_on_signals(self.request_stop, lambda signum: setattr(self, "_signal", self._signal or signum))


def wait_pumping(threads, sinks, request_stop, fail) -> None:
    """Join `threads` in short joins, which keep the calling thread free for signal handlers and for the
    window's GUI calls (`Sink.pump`, on the thread that runs the pipeline)."""
    gui = [s for s in sinks if s.interactive]
    tick = 0.01 if gui else 0.1
    for thread in threads:
        while thread.is_alive():
            for sink in gui:
                try:
                    if not sink.pump():
                        request_stop("user")
                except Exception as exc:
                    fail(exc)
            thread.join(tick)


def stop_on_signals(request_stop, record=None):
    """First Ctrl-C / SIGTERM calls `record(signum)` and `request_stop("signal")` (a clean stop; the command then
    raises `Interrupted` itself); a second Ctrl-C interrupts at once. Returns the function that restores the
    previous handlers (a no-op off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        if record is not None:
            record(signum)
        request_stop("signal")
        signal.signal(signal.SIGINT, raise_interrupted)  # a second Ctrl-C stops at once

    for s in previous:
        signal.signal(s, handler)

    def restore():
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
