"""Ctrl-C and SIGTERM for long commands: unwind, clean up, exit 130 / 143.

Python stops at SIGTERM without running any `finally`, so an export killed during its parity check
left its temporary ONNX, and a calibration its temporary folder. The CLI therefore installs
`raise_on_signals` for every command: SIGINT and SIGTERM raise `errors.Interrupted` in the main thread,
the temporary files of `fileio.atomic_path` and `tempfile.TemporaryDirectory` are removed as the stack
unwinds, and `cli.main` exits 128 + the signal number. Commands that stop gracefully instead (training
saves `last.pt`, the runtime pipeline finalises its video) install their own handlers for their loop and
raise `Interrupted` themselves once what can be resumed is saved.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator

from .errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


_deferral = {"depth": 0, "pending": None}  # `deferred` blocks being run, and a signal that arrived in one


def raise_interrupted(signum, _frame=None) -> None:
    """A signal handler: raise `Interrupted` (a graceful loop installs it for the second Ctrl-C); inside a
    `deferred` block, remember the signal and raise when the block ends."""
    if _deferral["depth"]:
        _deferral["pending"] = _deferral["pending"] or signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (as handled by `raise_interrupted`) until the block ends, then raise `Interrupted`.

    For steps that must not be cut in half: removing a temporary folder (an `Interrupted` raised inside
    `shutil.rmtree` leaves the rest of the folder behind, and `tempfile.TemporaryDirectory` has already
    dropped its own clean-up by then), or creating one and taking charge of it. A flag rather than a signal
    mask: the signal may be delivered to any of the process's threads (onnxruntime's, torch's), while Python
    runs the handler in the main thread.
    """
    _deferral["depth"] += 1
    try:
        yield
    finally:
        _deferral["depth"] -= 1
        if not _deferral["depth"] and _deferral["pending"]:
            signum, _deferral["pending"] = _deferral["pending"], None
            raise Interrupted(signum)


@contextlib.contextmanager
def temporary_directory(prefix: str) -> Iterator[str]:
    """`tempfile.TemporaryDirectory` that an interrupt cannot leave behind: created and removed under
    `deferred`, so SIGINT/SIGTERM land before the folder exists or after it is gone, never half-way."""
    path = None
    try:
        with deferred():
            path = tempfile.mkdtemp(prefix=prefix)
        yield path
    finally:
        if path is not None:
            with deferred():
                shutil.rmtree(path, ignore_errors=True)


def raise_on_signals() -> Callable[[], None]:
    """Make SIGINT and SIGTERM raise `Interrupted` (main thread only); return a function restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, raise_interrupted)

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
