"""TensorBoard event files of a training run (`out/tb`), optional: their failure is a warning, not the run's end.

`metrics.jsonl` is the run's log: every record goes there first, through a checked write (a full disk there ends
the run with one line naming it). The event files are a second view of the same records for TensorBoard, written
by TensorBoard's own background thread, which keeps a failed write (a full disk, a quota, a read-only folder) and
raises it at the next `add_scalar` or at `close`: a traceback from training, or one that replaces the run's own
error when `close` runs in a `finally`. Here a failure of the event writer — on opening, on a write, on close —
is one warning line naming the event file and the step it stops at; the writer is then dropped and training goes
on, the records still in `metrics.jsonl`. Ending an hours-long run over a copy of its log would lose more than
it protects; if the disk is really full, the next checked write (the log, a checkpoint) ends the run in one line.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path


def _warn(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)  # above the progress bar


class EventWriter:
    """`add_scalar` and `close` of TensorBoard's SummaryWriter that never raise (see the module docstring)."""

    def __init__(self, logdir: Path, warn=_warn):
        self.logdir, self.warn = Path(logdir), warn
        self.file = str(self.logdir)  # the event file once TensorBoard has named it
        self.failed = False
        self._writer = None
        self._step: int | None = None
        self._hook = None

    def open(self, summary_writer) -> EventWriter | None:
        before = set(self.logdir.glob("events.out.tfevents.*")) if self.logdir.is_dir() else set()
        self._quiet_writer_thread()
        try:
            self._writer = summary_writer(str(self.logdir))
        except Exception as exc:  # noqa: BLE001  (the folder or the file cannot be made: a warning, no events)
            new = set(self.logdir.glob("events.out.tfevents.*")) - before if self.logdir.is_dir() else set()
            if len(new) == 1:
                self.file = str(new.pop())
            self._report(exc, "no events are written for this run")
            return None
        with contextlib.suppress(AttributeError):  # TensorBoard's name for the file; the folder where it hides it
            self.file = str(self._writer.file_writer.event_writer._file_name)
        return self

    def add_scalar(self, tag: str, value, step: int) -> None:
        if self._writer is None:
            return
        self._step = step
        try:
            self._writer.add_scalar(tag, value, step)
        except Exception as exc:  # noqa: BLE001
            writer, self._writer = self._writer, None
            with contextlib.suppress(Exception):
                writer.close()  # TensorBoard raises its kept error again; its thread has ended with it
            self._report(exc, f"the events stop before step {step}")

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
        except Exception as exc:  # noqa: BLE001
            self._report(exc, "the last events may be missing" + (f" (to step {self._step})" if self._step else ""))
        else:
            self._restore_hook()

    def _report(self, exc: Exception, what: str) -> None:
        self.failed = True
        self._restore_hook()
        with contextlib.suppress(OSError):  # an event file that got nothing is no record of this run
            if Path(self.file).is_file() and Path(self.file).stat().st_size == 0:
                Path(self.file).unlink()
        reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
        self.warn(f"TensorBoard events {self.file}: cannot write ({reason}); {what} (metrics.jsonl has every record)")

    def _quiet_writer_thread(self) -> None:
        """TensorBoard's writer thread keeps its error for the next call (which reports it here) and also raises
        it, which Python prints as a thread traceback: that print is left out while this writer is open."""
        previous = threading.excepthook

        def hook(args):
            if type(args.thread).__name__ != "_AsyncWriterThread":
                previous(args)

        self._hook, threading.excepthook = previous, hook

    def _restore_hook(self) -> None:
        if self._hook is not None:
            threading.excepthook, self._hook = self._hook, None


def open_event_writer(logdir: Path, warn=_warn) -> EventWriter | None:
    """An `EventWriter` on `logdir`, or None where TensorBoard is not installed or its file cannot be made."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return EventWriter(logdir, warn).open(SummaryWriter)
