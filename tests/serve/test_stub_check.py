"""PyTriton's Python stub must load this interpreter's libpython: the check and its one-line message."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from vsseg_edge.serve._triton import linked_libpython, stub_problem

LDD = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibcudart-09529672.so.12.6.77 => /x/nvidia_pytriton.libs/libcudart-09529672.so.12.6.77 (0x00007f21)
\tlibpython3.11.so.1.0 => /lib/x86_64-linux-gnu/libpython3.11.so.1.0 (0x00007f21b5200000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f21)
"""


def test_ldd_output_is_parsed():
    assert linked_libpython(LDD) == ("libpython3.11.so.1.0", "/lib/x86_64-linux-gnu/libpython3.11.so.1.0")
    assert linked_libpython("\tlibpython3.12.so.1.0 => not found\n") == ("libpython3.12.so.1.0", None)
    assert linked_libpython("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n") is None


def test_same_library_or_same_build_passes(tmp_path):
    lib = tmp_path / "libpython3.11.so.1.0"
    lib.write_bytes(b"x")
    link = tmp_path / "link.so"
    link.symlink_to(lib)
    never = lambda path: pytest.fail("the version is only asked when the files differ")  # noqa: E731
    assert stub_problem(("libpython3.11.so.1.0", str(link)), lib, "3.11.2 (main)", never) is None
    other = tmp_path / "copy.so"
    other.write_bytes(b"x")
    assert stub_problem(("libpython3.11.so.1.0", str(other)), lib, "3.11.2 (main)", lambda p: "3.11.2 (main)") is None


def test_another_build_is_named_in_one_line(tmp_path):
    msg = stub_problem(
        ("libpython3.11.so.1.0", "/usr/lib/libpython3.11.so.1.0"),
        None,
        "3.11.7 (main, pyenv)",
        lambda p: "3.11.2 (main, Debian)",
    )
    assert msg is not None and "\n" not in msg
    assert "loads /usr/lib/libpython3.11.so.1.0 (Python 3.11.2)" in msg and "Python 3.11.7" in msg
    assert "_recursion_count" in msg and "/usr/bin/python3 -m venv" in msg
    missing = stub_problem(("libpython3.11.so.1.0", None), None, "3.11.7 (main)")
    assert "cannot find libpython3.11.so.1.0" in missing


def test_this_interpreter_passes_the_check():
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton is not installed (pip install 'vsseg-edge[serve]')")
    from vsseg_edge.serve._triton import stub_python_problem

    assert stub_python_problem() is None


def test_a_separately_built_python_is_caught():
    """The case measured on this project's machines: a pyenv 3.11.7 next to the system's 3.11.2."""
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton is not installed (pip install 'vsseg-edge[serve]')")
    from pytriton.utils.distribution import get_libs_path, get_stub_path

    stub = Path(get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}"))
    other = [
        p
        for p in Path.home().glob(f".pyenv/versions/{sys.version_info[0]}.{sys.version_info[1]}.*/bin/python3")
        if subprocess.run(
            [str(p), "-c", "import sys; print(sys.version)"], capture_output=True, text=True
        ).stdout.strip()
        != sys.version
    ]
    if not other:
        pytest.skip(f"no separately built Python {sys.version_info[0]}.{sys.version_info[1]} (pyenv) on this machine")
    code = (
        "import sys; from pathlib import Path; from vsseg_edge.serve._triton import stub_python_problem; "
        "print(stub_python_problem(Path(sys.argv[1]), Path(sys.argv[2])))"
    )
    out = subprocess.run(
        [str(other[0]), "-c", code, str(stub), str(get_libs_path())],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "PyTriton's Triton Python stub loads" in out.stdout and "_recursion_count" in out.stdout
