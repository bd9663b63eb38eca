"""The README's examples: the toy-size tour and the Python API example run as written; every other command line
uses commands and options that exist."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.conftest import REPO
from vsseg_edge.cli import app

README = (REPO / "README.md").read_text()


def _blocks(lang: str) -> list[tuple[str, str]]:
    """(heading, code) of every fenced block in `lang`."""
    out, heading = [], ""
    for m in re.finditer(r"^(#+ [^\n]*)$|^```(\w*)\n(.*?)^```", README, re.M | re.S):
        if m[1]:
            heading = m[1]
        elif m[2] == lang:
            out.append((heading, m[3]))
    return out


def _commands(code: str) -> list[list[str]]:
    lines = []
    for line in code.splitlines():
        line = line.split(" | ")[0]  # a pipe into another program (jq)
        if line.startswith("vsseg-edge "):
            lines.append(shlex.split(line, comments=True))
    return lines


def _tour() -> str:
    return next(code for heading, code in _blocks("bash") if heading.startswith("## A tour"))


def test_every_readme_command_uses_existing_commands_and_options():
    root = typer.main.get_command(app)
    checked = 0
    for _, code in _blocks("bash"):
        for argv in _commands(code):
            cmd, rest = root, argv[1:]
            while hasattr(cmd, "commands") and rest and rest[0] in cmd.commands:
                cmd, rest = cmd.commands[rest[0]], rest[1:]
            assert not hasattr(cmd, "commands"), f"not a command: {' '.join(argv)}"
            known = {o for p in cmd.params for o in (*p.opts, *getattr(p, "secondary_opts", []))}
            flags = [t.strip("[]") for t in rest if t.strip("[").startswith("-") and t.strip("[]") != "-"]
            unknown = [f for f in flags if f.split("=")[0] not in known]
            assert not unknown, f"{' '.join(argv)}: unknown option(s) {unknown}"
            checked += 1
    assert checked >= 20


@pytest.mark.slow
def test_the_tour_and_the_python_example_run_as_written(tmp_path):
    """The tour block, line by line, in a fresh folder (with the recipes it names), then the API example."""
    shutil.copytree(REPO / "train", tmp_path / "train")
    for argv in _commands(_tour()):
        proc = subprocess.run(
            [sys.executable, "-m", "vsseg_edge.cli", *argv[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert (tmp_path / "tour" / "m.int8.qdq.onnx.json").is_file() and (tmp_path / "tour" / "overlay.mp4").is_file()
    assert (tmp_path / "tour" / "report" / "report.md").is_file()
    code = next(code for heading, code in _blocks("python") if heading == "## Python API")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "tour" / "overlay.png").is_file() and proc.stdout.count("(64, 128, 3)") == 3
    assert not list(Path(tmp_path).rglob("*.tmp*"))  # no temporary file left by any step
