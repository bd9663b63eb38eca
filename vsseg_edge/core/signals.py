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

import signal
import threading
from collections.abc import Callable

from .errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def raise_interrupted(signum, _frame=None) -> None:
    """A signal handler: raise `Interrupted` (a graceful loop installs it for the second Ctrl-C)."""
    raise Interrupted(signum)


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
