"""Safe file writes and image reads with one-line errors.

Every writer in vsseg-edge goes through `atomic_write` (or `atomic_path`): the data goes to a temporary
file in the target folder which is renamed over the target only when complete, so an interrupted run
never leaves a truncated artifact behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import VssegError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` if the block succeeds.

    The temporary name keeps the target's suffix so that writers which dispatch on the extension
    (cv2.imwrite, torch.onnx.export) behave as they would on the target.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual mode
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file for writing; it replaces `target` only if the block completes."""
    with atomic_path(target) as tmp, open(tmp, mode) as fh:
        yield fh


def write_json(target: str | os.PathLike, obj) -> None:
    with atomic_write(target, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """Parse a JSON file, or raise one line naming the file: missing (as `what`) or not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise VssegError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VssegError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _imread(path: str | os.PathLike, flags_name: str, what: str) -> tuple[Path, np.ndarray]:
    """cv2.imread with one-line errors for a missing or unreadable file (`what` names the kind of image)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise VssegError(f"{path}: {what} not found")
    img = cv2.imread(str(path), getattr(cv2, flags_name))
    if img is None:
        raise VssegError(f"{path}: not a readable {what} (corrupt or unsupported format)")
    return path, img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a colour image as BGR uint8 HxWx3 (OpenCV's order), or raise a one-line error."""
    return _imread(path, "IMREAD_COLOR", "image")[1]


def read_label(path: str | os.PathLike, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a single-channel label PNG as uint8 HxW, checking its size when `expected_hw` is given."""
    path, lab = _imread(path, "IMREAD_UNCHANGED", "label image")
    if lab.ndim == 3:
        raise VssegError(f"{path}: expected a single-channel label PNG, got {lab.shape[2]} channels")
    if lab.dtype != np.uint8:
        if lab.max() > 255:
            raise VssegError(f"{path}: label values up to {lab.max()} do not fit uint8 class ids")
        lab = lab.astype(np.uint8)
    if expected_hw is not None and lab.shape != tuple(expected_hw):
        raise VssegError(
            f"{path}: label is {lab.shape[0]}x{lab.shape[1]} (HxW), expected {expected_hw[0]}x{expected_hw[1]}"
        )
    return lab


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    import cv2

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), array):
            raise VssegError(f"{path}: could not write PNG")
