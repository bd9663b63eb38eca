"""The one place that imports PyTriton and tritonclient, and the check of PyTriton's Python stub.

Both packages come with the `serve` extra; a missing one is a one-line MissingDependency naming it.

PyTriton runs each model instance behind Triton's Python backend, whose stub is a binary linked against
`libpython3.X.so.1.0` and found by the dynamic linker, not by the interpreter that started the server. When that
library is not this interpreter's own build (a pyenv or conda Python next to the system's, both 3.X), the stub
runs another Python's C code over this one's standard library and fails while loading the model, e.g.
`'_thread.RLock' object has no attribute '_recursion_count'` (3.11.2's libpython under 3.11.7's threading.py).
`stub_python_problem` finds this before the server starts: it asks the dynamic linker which libpython the stub
loads (`ldd`, with the library path PyTriton sets) and compares that file, or failing that its `Py_GetVersion()`,
with this interpreter's.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from ..core.errors import MissingDependency, VssegError

SERVE_INSTALL = "pip install 'vsseg-edge[serve]'"


def _require(module: str, dist: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(f"{dist} is not installed ({exc}); install it with: {SERVE_INSTALL}") from None


def pytriton():
    """The pytriton modules the server uses: (triton, model_config, decorators)."""
    _require("pytriton", "nvidia-pytriton")
    return (
        importlib.import_module("pytriton.triton"),
        importlib.import_module("pytriton.model_config"),
        importlib.import_module("pytriton.decorators"),
    )


def tritonclient(protocol: str):
    """tritonclient.grpc or tritonclient.http."""
    if protocol not in ("grpc", "http"):
        raise VssegError(f"protocol {protocol!r}: expected grpc or http")
    return _require(f"tritonclient.{protocol}", f"tritonclient[{protocol}]")


def model_config_pb2():
    """Triton's model configuration protobuf (the schema of config.pbtxt), as tritonclient ships it."""
    return _require("tritonclient.grpc.model_config_pb2", "tritonclient[grpc]")


# ---------------------------------------------------------------------------- the Python stub check ----
def interpreter_libpython() -> Path | None:
    """This interpreter's shared libpython (LIBDIR/INSTSONAME), or None when it was built without one."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not libdir or not soname:
        return None
    path = Path(libdir) / soname
    return path if path.is_file() else None


def linked_libpython(ldd_output: str) -> tuple[str, str | None] | None:
    """(soname, path or None when 'not found') of the libpython in `ldd` output; None when none is linked."""
    for line in ldd_output.splitlines():
        m = re.match(r"\s*(libpython[\w.]*\.so[\w.]*)\s*=>\s*(\S+)", line)
        if m:
            return m.group(1), None if m.group(2) == "not" else m.group(2)
    return None


def library_version(path: str) -> str | None:
    """`Py_GetVersion()` of a libpython file, read in a child process (the library is never loaded here)."""
    code = (
        "import ctypes, sys; f = ctypes.CDLL(sys.argv[1]).Py_GetVersion; f.restype = ctypes.c_char_p; "
        "print(f().decode())"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def stub_problem(
    linked: tuple[str, str | None] | None, own: Path | None, own_version: str, version_of=library_version
) -> str | None:
    """Why the stub cannot run this interpreter's Python (one line), or None when it can.

    `linked`: what the stub's libpython resolves to; `own`: this interpreter's libpython; `version_of(path)`:
    the version string of a libpython file (only asked when the two files differ)."""
    hint = (
        "make the virtualenv from the Python whose libpython the stub loads (the system's: /usr/bin/python3 -m "
        "venv), not a separately built one (pyenv, conda)"
    )
    if linked is None:
        return None  # a stub without libpython: nothing to compare
    soname, path = linked
    here = f"this interpreter is Python {own_version.split()[0]} ({sys.executable})"
    if path is None:
        return f"PyTriton's Triton Python stub cannot find {soname} ({here}); {hint}"
    if own is not None and os.path.realpath(path) == os.path.realpath(own):
        return None
    theirs = version_of(path)
    if theirs is not None and theirs == own_version:  # the same build at another path
        return None
    return (
        f"PyTriton's Triton Python stub loads {path} (Python {theirs.split()[0] if theirs else 'unknown'}) but "
        f"{here}: the model would fail to load (e.g. '_thread.RLock' object has no attribute "
        f"'_recursion_count'); {hint}"
    )


def stub_python_problem(stub: Path | None = None, libs: Path | None = None) -> str | None:
    """Check PyTriton's stub for this interpreter (see the module docstring); None when fine or not checkable."""
    if stub is None or libs is None:
        _require("pytriton", "nvidia-pytriton")
        from pytriton.utils.distribution import get_libs_path, get_stub_path

        stub = stub or Path(get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}"))
        libs = libs or Path(get_libs_path())
    if not Path(stub).is_file():
        return (
            f"PyTriton has no Triton Python stub for Python {sys.version_info[0]}.{sys.version_info[1]} "
            f"({stub} is missing)"
        )
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (env.get("LD_LIBRARY_PATH"), str(libs)) if p)
    try:
        out = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, env=env, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None  # no ldd (not glibc): the server's own error will say what is wrong
    return stub_problem(linked_libpython(out.stdout), interpreter_libpython(), sys.version)
