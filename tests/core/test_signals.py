"""Signals in long commands (core/signals.py): `deferred` holds SIGINT/SIGTERM until a step that must not be cut
is done, and `temporary_directory` cannot be left behind half-removed by an interrupt."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from vsseg_edge.core import signals
from vsseg_edge.core.errors import Interrupted


@pytest.fixture
def handlers():
    restore = signals.raise_on_signals()
    yield
    restore()


def test_a_signal_inside_deferred_is_raised_when_the_block_ends(handlers):
    done = []
    with pytest.raises(Interrupted) as info:
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("after the signal")  # the block runs to its end
    assert done == ["after the signal"] and info.value.signum == signal.SIGTERM
    with pytest.raises(Interrupted):  # outside a deferred block the handler raises at once
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass


def test_nested_deferred_raises_once_at_the_outermost_end(handlers):
    seen = []
    with pytest.raises(Interrupted):
        with signals.deferred():
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGINT)
            seen.append("inner block ended without raising")
    assert seen == ["inner block ended without raising"]


def test_temporary_directory_is_removed_whole_even_when_interrupted_during_removal(handlers, monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    real_rmtree = shutil.rmtree

    def slow_rmtree(path, *a, **kw):  # the signal lands while the folder is being removed
        os.kill(os.getpid(), signal.SIGTERM)
        return real_rmtree(path, *a, **kw)

    monkeypatch.setattr(shutil, "rmtree", slow_rmtree)
    with pytest.raises(Interrupted):
        with signals.temporary_directory("vsseg-test-") as tmp:
            for i in range(50):
                (Path(tmp) / f"f{i}").write_bytes(b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_temporary_directory_is_removed_when_the_body_is_interrupted(handlers, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(Interrupted):
        with signals.temporary_directory("vsseg-test-") as tmp:
            (Path(tmp) / "partial").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    assert list(tmp_path.iterdir()) == []
