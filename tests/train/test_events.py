"""The training run's TensorBoard events (`train.events`): optional, so a failure is one warning, never an error."""

from __future__ import annotations

import errno
import threading

from vsseg_edge.train.events import EventWriter


class _Writer:
    """A SummaryWriter that fails where it is told to, as TensorBoard does (its kept error raised again)."""

    fail_open = fail_add = fail_close = False

    def __init__(self, logdir):
        if self.fail_open:
            raise OSError(errno.EACCES, "Permission denied")
        self.logdir, self.scalars, self.closed = logdir, [], False

    def add_scalar(self, tag, value, step):
        if self.fail_add:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True
        if self.fail_close or self.fail_add:
            raise OSError(errno.ENOSPC, "No space left on device")


def _open(tmp_path, writer):
    warnings = []
    ev = EventWriter(tmp_path / "tb", warnings.append).open(writer)
    return ev, warnings


def test_events_are_written_and_closed(tmp_path):
    hook = threading.excepthook
    ev, warnings = _open(tmp_path, _Writer)
    assert threading.excepthook is not hook  # the writer thread's traceback is kept quiet while open
    ev.add_scalar("loss", 1.0, 1)
    writer = ev._writer
    ev.close()
    assert writer.scalars == [("loss", 1.0, 1)] and writer.closed and warnings == []
    assert threading.excepthook is hook


def test_a_writer_that_cannot_open_is_one_warning(tmp_path):
    hook = threading.excepthook
    ev, warnings = _open(tmp_path, type("W", (_Writer,), {"fail_open": True}))
    assert ev is None and threading.excepthook is hook
    assert warnings == [
        f"TensorBoard events {tmp_path / 'tb'}: cannot write (Permission denied); no events are "
        "written for this run (metrics.jsonl has every record)"
    ]


def test_a_failed_write_is_one_warning_and_the_writer_is_dropped(tmp_path):
    hook = threading.excepthook
    ev, warnings = _open(tmp_path, type("W", (_Writer,), {"fail_add": True}))
    ev.add_scalar("loss", 1.0, 3)
    ev.add_scalar("loss", 0.5, 4)  # no second warning: the writer is gone
    ev.close()
    assert len(warnings) == 1 and "cannot write (No space left on device); the events stop before step 3" in warnings[0]
    assert threading.excepthook is hook


def test_a_failed_close_is_one_warning(tmp_path):
    ev, warnings = _open(tmp_path, type("W", (_Writer,), {"fail_close": True}))
    ev.add_scalar("loss", 1.0, 7)
    ev.close()
    ev.close()
    assert len(warnings) == 1 and "the last events may be missing (to step 7)" in warnings[0]


def test_an_empty_event_file_of_a_failed_writer_is_removed(tmp_path):
    class Named(_Writer):
        fail_add = True

        def __init__(self, logdir):
            super().__init__(logdir)
            from pathlib import Path
            from types import SimpleNamespace

            Path(logdir).mkdir(parents=True)
            name = Path(logdir) / "events.out.tfevents.1"
            name.touch()
            self.file_writer = SimpleNamespace(event_writer=SimpleNamespace(_file_name=str(name)))

    ev, warnings = _open(tmp_path, Named)
    ev.add_scalar("loss", 1.0, 1)
    assert warnings[0].startswith(f"TensorBoard events {tmp_path / 'tb' / 'events.out.tfevents.1'}: cannot write")
    assert list((tmp_path / "tb").iterdir()) == []
