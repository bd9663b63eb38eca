"""Helpers of the reliability corpus: the CLI run in this process or in a child, and what a refusal must look like.

`vs(*args)` runs `vsseg_edge.cli.main` in-process (exit code, stdout, stderr, and any exception that escaped
`main`: a traceback a user would see); `child(*args)` runs it in a child process for the signal cases, after
registering the tiny model (tiny_model.py) there too. `refused(result, *words)` is the contract of a user
error: exit 2, no traceback, and a last line `error: …` naming what was wrong.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

_spec = importlib.util.spec_from_file_location("rel_tiny_model", HERE / "tiny_model.py")
tiny_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_model)

# what a child process runs: register the tiny model, then the CLI with the given arguments
CHILD = (
    "import importlib.util, sys\n"
    f"spec = importlib.util.spec_from_file_location('rel_tiny_model', {str(HERE / 'tiny_model.py')!r})\n"
    "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
    "from vsseg_edge.cli import main\n"
    "sys.argv = ['vsseg-edge', *sys.argv[1:]]\n"
    "main()\n"
)


@dataclass
class Result:
    """What a command line did: exit code, stdout, stderr, and the exception that escaped `main` (a traceback)."""

    code: int | None
    out: str
    err: str
    exc: BaseException | None = None

    @property
    def last_line(self) -> str:
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


def vs(*args) -> Result:
    """`vsseg-edge ARGS` in this process: (exit code, stdout, stderr, escaped exception)."""
    from vsseg_edge.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["vsseg-edge", *[str(a) for a in args]]
    code, exc = 0, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001  (a traceback a user would see)
        code, exc = None, e
    finally:
        sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue(), exc)


def refused(r: Result, *words: str, code: int = 2) -> None:
    """The command failed with `code` and ONE error line containing every word, and no traceback."""
    assert r.exc is None, f"traceback: {r.exc!r}\n{r.err[-2000:]}"
    assert r.code == code, f"exit {r.code}, expected {code}\n{r.err[-2000:]}"
    assert "Traceback" not in r.err, r.err[-2000:]
    line = r.last_line
    assert line.startswith("error: "), r.err[-2000:]
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"


def child(*args, env: dict | None = None, **kw) -> subprocess.Popen:
    """`vsseg-edge ARGS` in a child process (stdout/stderr piped), for the signal cases."""
    full = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *[str(a) for a in args]],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def temp_leftovers(root: Path) -> list[Path]:
    """Temporary files and folders vsseg-edge writers make (`.NAME.*.tmp*`, `vsseg-calib-*`) under `root`."""
    return sorted(p for p in Path(root).rglob("*") if ".tmp" in p.name or p.name.startswith("vsseg-calib"))


def fill(disk: Path, leave: int = 0) -> None:
    """Write into `disk` until only `leave` bytes are free (a tmpfs counts whole pages)."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    if free > leave:
        with open(disk / f"filler-{free}", "wb") as fh:
            fh.write(b"\0" * (free - leave))


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def read(path: Path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def copy_artifact(src: Path, folder: Path, name: str | None = None) -> Path:
    """Copy an artifact and its manifest into `folder` (optionally renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / (name or src.name)
    shutil.copy2(src, dst)
    man = src.with_name(src.name + ".json")
    if man.is_file():
        shutil.copy2(man, dst.with_name(dst.name + ".json"))
    return dst


TRAIN = {
    "iterations": 2,
    "batch_size": 1,
    "threads": 1,
    "log_every": 1,
    "ckpt_every": 1,
    "val_max_sequences": 1,
    "val_tc": False,
    "device": "cpu",
    "classes": "cityscapes",
    "data": {"crop": [64, 128], "scale_range": [1.0, 1.0], "workers": 0, "offsets": [1]},
    "model": {"name": tiny_model.NAME},
    "preprocess": {"height": 64, "width": 128},
    "loss": {"weights": {"seg": 1.0, "aux": 0.0}},
}


def write_recipe(folder: Path, synth_root: Path, name: str = "run", out_dir: Path | None = None, **changes) -> Path:
    """A 2-step recipe training the tiny model on the synthetic set; `changes` are dotted keys."""
    import json

    import yaml

    from vsseg_edge.core.config import apply_overrides

    data = json.loads(json.dumps(TRAIN))
    data.update(name=name, out_dir=str(out_dir or folder / "runs"))
    data["data"]["root"] = str(synth_root)
    data = apply_overrides(data, [f"{key}={json.dumps(value)}" for key, value in changes.items()])
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# `bench` at its quickest: one timed run of one frame on onnxruntime, no TC (the corpus checks files, not figures)
QUICK_BENCH = ("--runs", "1", "--warmup", "0", "--frames", "1", "--no-tc", "--backends", "ort")
