"""Several sources in one process: one capture thread per source, one batched inference, per-source outputs.

    source 0 ─ capture thread ─┐                                          ┌─► sinks + stats of source 0
    source 1 ─ capture thread ─┼─► batcher + infer thread ──(queue)──► output thread ─┤
    source k ─ capture thread ─┘                                          └─► sinks + stats of source k

Each source keeps its own capture thread and policy (`runtime.sources`): a live source keeps only its latest
frame and counts the ones it replaced as drops; a file or folder delivers every frame in order. The batcher never
waits on one source: at each step it takes, without blocking, one frame from every source that has one ready
(round robin, at most `max_batch`), preprocesses them with the one preprocessing and runs them as one batch. So a
stalled source simply contributes nothing, and batches fill by themselves when inference is slower than the
cameras (while a batch runs, every source captures its next frame). There is no batching window: no frame waits
for a frame of another source. `max_batch` is capped by what the backend takes (`Backend.max_batch`: a
dynamic-batch ONNX from `export --dynamic-batch` or an engine from `build-engine --batch` takes more than one).

The output thread splits a batch's labels back to their sources: resize to the frame, overlay, that source's
sinks and its own stats (per-source FPS, latency, drops, decode failures). A source that fails (a camera gone
for good, a stream stalled past its timeout) ends alone, with its error line; the others run on, and the run
then ends with a non-zero exit. Stopping (end of every source, Ctrl-C / SIGTERM, q in a window, an error in the
backend or a sink) drains the output queue and closes every sink and stats file, as the single-source pipeline.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ..core.errors import VssegError
from ..core.preprocess import labels_to_frame_size, preprocess_batch
from .backends import Backend
from .hud import bgr_lut, overlay
from .pipeline import END, OutputHandoff, recent_rate, stop_on_signals, wait_pumping
from .sinks import Sink
from .sources import Source
from .stats import FrameTimes, StatsCollector, summarize

_WILDCARD = re.compile(r"[*?\[]")


def source_name(spec: str) -> str:
    """A short file-system-safe name for a `--source` value: the file or folder name without its suffix, the
    camera index (`camera0`), the stream's host and last path part; used for per-source output names."""
    spec = str(spec).strip()
    if spec.isdigit():
        return f"camera{spec}"
    if "!" in spec:
        return "pipeline"
    if "://" in spec:
        url = urlsplit(spec)
        parts = [p for p in url.path.split("/") if p and not _WILDCARD.search(p)]
        last = Path(parts[-1]).stem if parts else ""
        if url.scheme == "csi":
            name = f"csi{url.netloc}"
        elif url.scheme in ("file", "v4l2"):
            name = last or url.scheme
        else:
            port = url.netloc.rsplit(":", 1)[-1] if ":" in url.netloc else ""
            name = "-".join(p for p in (url.hostname, last) if p) or "-".join(p for p in (url.scheme, port) if p)
    else:
        parts = [p for p in Path(spec).parts if p not in ("/", ".", "..") and not _WILDCARD.search(p)]
        name = (
            (Path(parts[-1]).stem if Path(spec).suffix and not _WILDCARD.search(Path(spec).name) else parts[-1])
            if parts
            else ""
        )
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "source"


def source_names(specs: list[str]) -> list[str]:
    """Collision-free names, in the order of the flags: a name that several sources share gets -1, -2 … on each."""
    names = [source_name(s) for s in specs]
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if counts[n] > 1:
            seen[n] = seen.get(n, 0) + 1
            n = f"{n}-{seen[n]}"
        out.append(n)
    return out


@dataclass
class Stream:
    """One source of a multi-source run, its name, its sinks and its stats."""

    name: str
    source: Source
    sinks: list[Sink]
    stats: StatsCollector
    taken: int = 0  # frames the batcher took from it
    ended: bool = False
    recent: deque = field(default_factory=lambda: deque(maxlen=30))  # (t_done, latency ms) for the HUD


@dataclass
class MultiRunResult:
    """What a multi-source run did: per-source summaries and errors, the batch sizes, why it stopped."""

    frames: int
    stopped_by: str  # "end" | "max-frames" | "signal" | "user" | "error"
    streams: list[dict]  # name, source, summary, error
    batches: dict  # steps, batch size mean/max/histogram, preprocess and infer time per batch
    errors: list[str] = field(default_factory=list)  # one line per failed source
    signal: int | None = None  # the signal that stopped the run (the CLI then exits 128 + it)

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None

    def summary(self) -> dict:
        return {
            "frames": self.frames,
            "stopped_by": self.stopped_by,
            "signal": self.signal,
            "sources": self.streams,
            "batches": self.batches,
            "errors": self.errors,
        }


class MultiPipeline(OutputHandoff):
    """Run `backend` on the frames of several sources, batched per step, into each source's own sinks."""

    def __init__(
        self,
        streams: list[Stream],
        backend: Backend,
        *,
        max_batch: int | None = None,
        alpha: float = 0.5,
        max_frames: int | None = None,
        queue_size: int = 2,
        handle_signals: bool = True,
        poll_s: float = 0.001,
    ):
        if not streams:
            raise VssegError("run: no source")
        cap = backend.max_batch
        wanted = max_batch or len(streams)
        self.max_batch = max(1, min(wanted, cap) if cap else wanted)
        self.streams, self.backend = streams, backend
        self.alpha, self.max_frames, self.poll_s = alpha, max_frames, poll_s
        self._out: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._stopped_by = "end"
        self._errors: list[BaseException] = []
        self._lut = bgr_lut(backend.label_set)  # the model's classes and colours (or its class file's)
        self._live = any(s.source.live for s in streams)
        self._next = 0  # round-robin start of the next step
        # per step, compact (a day of a 30 steps/s run keeps ~50 MB): batch size, preprocess and infer ms
        self._batch_sizes, self._pre_ms, self._infer_ms = array("H"), array("d"), array("d")
        self._handle_signals = handle_signals
        self._signal: int | None = None
        self._output_thread: threading.Thread | None = None

    @property
    def sinks(self) -> list[Sink]:
        return [sink for st in self.streams for sink in st.sinks]

    # -- control ---------------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self._stopped_by = reason
        self._stop.set()
        for st in self.streams:
            st.source.stop()

    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self.request_stop("error")

    def _record_signal(self, signum: int) -> None:
        self._signal = self._signal or signum

    # -- batcher + inference -----------------------------------------------------------------------------
    def _take_ready(self) -> list[tuple[int, object]]:
        """One frame from each source that has one ready now (never waits), round robin, at most max_batch."""
        ready, n = [], len(self.streams)
        for k in range(n):
            i = (self._next + k) % n
            st = self.streams[i]
            if st.ended:
                continue
            if self.max_frames is not None and st.taken >= self.max_frames:
                st.ended = True
                st.source.stop()
                continue
            try:
                frame = st.source.get(timeout=0)
            except queue.Empty:
                continue
            if frame is None:
                st.ended = True
                continue
            st.taken += 1
            ready.append((i, frame))
            if len(ready) == self.max_batch:
                self._next = (i + 1) % n  # full: the next step starts with the sources left out of this one
                return ready
        self._next = (self._next + 1) % n
        return ready

    def _infer_loop(self) -> None:
        spec = self.backend.preprocess_spec
        try:
            while not self._stop.is_set():
                if all(st.ended for st in self.streams):
                    if self.max_frames is not None and all(st.taken >= self.max_frames for st in self.streams):
                        self._stopped_by = "max-frames"
                    break
                if self._live and not self._out.empty():
                    time.sleep(self.poll_s)  # output busy: take the newest frames only when they can move on
                    continue
                ready = self._take_ready()
                if not ready:
                    time.sleep(self.poll_s)
                    continue
                t0 = time.perf_counter()
                batch = preprocess_batch([frame.image for _, frame in ready], spec)
                t1 = time.perf_counter()
                output = self.backend.infer(batch)
                t2 = time.perf_counter()
                self._batch_sizes.append(len(ready))
                self._pre_ms.append((t1 - t0) * 1e3)
                self._infer_ms.append((t2 - t1) * 1e3)
                self._put((ready, output, (t1 - t0) * 1e3, (t2 - t1) * 1e3))
        except BaseException as exc:  # reported by run(); the output thread still drains and closes
            self._fail(exc)
        finally:
            self._put(END, force=True)

    # -- output (the hand-off is `pipeline.OutputHandoff`) ------------------------------------------------
    def _emit(self, ready, output: np.ndarray, preprocess_ms: float, infer_ms: float) -> None:
        t0 = time.perf_counter()
        labels = self.backend.to_labels(output)
        per_frame_ms = (time.perf_counter() - t0) * 1e3 / len(ready)
        for (i, frame), lab in zip(ready, labels):
            st = self.streams[i]
            t1 = time.perf_counter()
            lab = labels_to_frame_size(lab, frame.image.shape[:2])
            t2 = time.perf_counter()
            vis = overlay(frame.image, lab, self._lut, self.alpha) if any(s.needs_overlay for s in st.sinks) else None
            keep_going = True
            for sink in st.sinks:
                keep_going = sink.write(frame, lab, vis, self._hud_lines(st, len(ready))) and keep_going
            t3 = time.perf_counter()
            times = FrameTimes(
                frame.index,
                frame.t_captured,
                frame.capture_ms,
                preprocess_ms,
                infer_ms,
                per_frame_ms + (t2 - t1) * 1e3,
                (t3 - t2) * 1e3,
                t3,
            )
            rec = times.record(st.source.drops, st.source.decode_failures)
            rec["batch"] = len(ready)  # the frame shared its preprocess and infer times with batch - 1 others
            st.stats.add(rec)
            st.recent.append((t3, (t3 - frame.t_captured) * 1e3))
            if not keep_going:
                self.request_stop("user")

    def _hud_lines(self, st: Stream, batch: int) -> list[str]:
        if len(st.recent) < 2:
            return [st.name, self.backend.describe()]
        fps, lat = recent_rate(st.recent)
        return [
            f"{st.name}  {fps:5.1f} FPS  latency {lat:6.1f} ms",
            f"drops {st.source.drops}  batch {batch}",
            f"{self.backend.name} {self.backend.device}",
        ]

    # -- run -------------------------------------------------------------------------------------------
    def run(self) -> MultiRunResult:
        """Run until every source ends (or a stop); always finalise every source's sinks and stats."""
        restore = stop_on_signals(self.request_stop, self._record_signal) if self._handle_signals else (lambda: None)
        self._output_thread = threading.Thread(target=self._output_loop, name="output", daemon=True)
        infer_thread = threading.Thread(target=self._infer_loop, name="batch-infer", daemon=True)
        try:
            for st in self.streams:
                for sink in st.sinks:
                    sink.start(st.source)
            for st in self.streams:
                st.source.start()
            self._output_thread.start()
            infer_thread.start()
            wait_pumping((infer_thread, self._output_thread), self.sinks, self.request_stop, self._fail)
        finally:
            for st in self.streams:
                st.source.stop()
            self._close_all()
            restore()
        return self._result()

    def _close_all(self) -> None:
        for st in self.streams:
            for sink in st.sinks:
                try:
                    sink.close()
                except BaseException as exc:
                    self._errors.append(exc)
            try:
                st.stats.close()
            except BaseException as exc:
                self._errors.append(exc)
        for st in self.streams:
            st.source.join(timeout=1.0)

    def _result(self) -> MultiRunResult:
        if self._errors:
            raise self._errors[0]
        streams, errors = [], []
        for st in self.streams:
            summary = summarize(st.stats.records, st.source.drops, st.source.decode_failures)
            streams.append(
                {"name": st.name, "source": st.source.description, "summary": summary, "error": st.source.error}
            )
            if st.source.error:
                errors.append(f"{st.name}: {st.source.error}")
        stopped = "error" if errors and self._stopped_by in ("end", "max-frames") else self._stopped_by
        return MultiRunResult(
            sum(len(st.stats.records) for st in self.streams),
            stopped,
            streams,
            self._batch_summary(),
            errors,
            self._signal,
        )

    def _batch_summary(self) -> dict:
        sizes = np.array(self._batch_sizes, np.int64)
        pre, inf = np.array(self._pre_ms, np.float64), np.array(self._infer_ms, np.float64)

        def pct(v):
            return (
                {"p50": round(float(np.percentile(v, 50)), 3), "p99": round(float(np.percentile(v, 99)), 3)}
                if len(v)
                else {"p50": None, "p99": None}
            )

        return {
            "steps": int(sizes.size),
            "max_batch": self.max_batch,
            "mean": round(float(sizes.mean()), 3) if sizes.size else None,
            "histogram": {str(k): int((sizes == k).sum()) for k in range(1, self.max_batch + 1)},
            "preprocess_ms": pct(pre),
            "infer_ms": pct(inf),
        }


def format_multi_summary(result: MultiRunResult) -> str:
    """One line per source (frames, FPS, drops, decode failures, latency p50/p99, error) and the batch sizes."""
    w = max([len(s["name"]) for s in result.streams] + [6]) + 2
    lines = [f"{'source':<{w}}{'frames':>8}{'fps':>8}{'drops':>7}{'decode':>8}{'lat p50':>9}{'lat p99':>9}"]
    for s in result.streams:
        m = s["summary"]
        fps = f"{m['fps']:.2f}" if m.get("fps") else "n/a"
        p50, p99 = m["latency_ms"]["p50"], m["latency_ms"]["p99"]
        lat = f"{p50:>9.1f}{p99:>9.1f}" if p50 is not None else f"{'n/a':>9}{'n/a':>9}"
        line = f"{s['name']:<{w}}{m['frames']:>8}{fps:>8}{m['drops']:>7}{m['decode_failures']:>8}{lat}"
        lines.append(line + (f"  error: {s['error']}" if s["error"] else ""))
    b = result.batches
    if b["steps"]:
        lines.append(
            f"batches {b['steps']} (mean {b['mean']:.2f} frames, at most {b['max_batch']}); per batch: "
            f"preprocess p50 {b['preprocess_ms']['p50']:.1f} ms, infer p50 {b['infer_ms']['p50']:.1f} ms"
        )
    return "\n".join(lines)
