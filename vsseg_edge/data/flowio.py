"""Optical-flow files: Middlebury .flo, NumPy .npy and KITTI 16-bit PNG.

A flow field is float32 HxWx2 (u, v) in pixels, *forward* from frame a to frame b: the pixel at (x, y)
in a is seen at (x + u, y + v) in b. Invalid vectors (KITTI's valid bit 0) read back as NaN.

KITTI's format stores u, v as uint16 = value * 64 + 2**15 with a third channel for validity; it is
lossless PNG, 1/64-pixel precise and compresses smooth fields well, so the synthetic set uses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import VssegError
from ..core.fileio import atomic_write, write_png

FLO_MAGIC = 202021.25
SUFFIXES = (".flo", ".npy", ".png")


def read_flow(path: str | Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a flow file (.flo, .npy or KITTI .png) as float32 HxWx2, checking its size when asked."""
    path = Path(path)
    if not path.is_file():
        raise VssegError(f"{path}: flow file not found")
    suffix = path.suffix.lower()
    if suffix == ".flo":
        flow = _read_flo(path)
    elif suffix == ".npy":
        try:
            flow = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise VssegError(f"{path}: not a readable .npy flow ({exc})") from None
    elif suffix == ".png":
        flow = _read_kitti_png(path)
    else:
        raise VssegError(f"{path}: unknown flow format; expected one of {SUFFIXES}")
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise VssegError(f"{path}: flow has shape {flow.shape}, expected HxWx2")
    if expected_hw is not None and flow.shape[:2] != tuple(expected_hw):
        raise VssegError(
            f"{path}: flow is {flow.shape[0]}x{flow.shape[1]} (HxW), expected {expected_hw[0]}x{expected_hw[1]}"
        )
    return flow.astype(np.float32, copy=False)


def write_flow(path: str | Path, flow: np.ndarray) -> None:
    """Write float32 HxWx2 flow atomically; the format follows the suffix. NaN marks invalid vectors."""
    path = Path(path)
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be HxWx2, got {flow.shape}")
    suffix = path.suffix.lower()
    # the bytes go through the Python file (`fh.write`), never `ndarray.tofile` (np.save uses it on a real file):
    # tofile writes past Python with C stdio and reports a full disk as an OSError without errno ("N requested
    # and M written"), which `atomic_write` cannot tell from a bug; a Python write says ENOSPC, one line
    if suffix == ".flo":
        header = np.array([FLO_MAGIC], np.float32).tobytes() + np.array(flow.shape[1::-1], np.int32).tobytes()
        with atomic_write(path) as fh:
            fh.write(header)
            fh.write(np.ascontiguousarray(flow).data)
    elif suffix == ".npy":
        with atomic_write(path) as fh:
            np.save(_WriteOnly(fh), flow)  # not a file object to numpy: it writes through `write`
    elif suffix == ".png":
        _write_kitti_png(path, flow)
    else:
        raise VssegError(f"{path}: unknown flow format; expected one of {SUFFIXES}")


class _WriteOnly:
    """A file seen by numpy as a plain writable object, so `np.save` calls `write` (see `write_flow`)."""

    def __init__(self, fh):
        self.write = fh.write


def _read_flo(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if len(raw) < 12 or np.frombuffer(raw[:4], np.float32)[0] != np.float32(FLO_MAGIC):
        raise VssegError(f"{path}: not a Middlebury .flo file (bad magic number)")
    w, h = (int(v) for v in np.frombuffer(raw[4:12], np.int32))
    expected = 12 + w * h * 2 * 4
    if w <= 0 or h <= 0 or len(raw) != expected:
        raise VssegError(f"{path}: .flo header says {w}x{h} but the file has {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw[12:], np.float32).reshape(h, w, 2).copy()


def _read_kitti_png(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint16:
        raise VssegError(f"{path}: not a KITTI flow PNG (expected 16-bit, 3 channels)")
    bgr = img.astype(np.float32)
    flow = (bgr[..., 2:0:-1] - 2.0**15) / 64.0  # OpenCV order is (valid, v, u)
    flow[img[..., 0] == 0] = np.nan
    return flow


def _write_kitti_png(path: Path, flow: np.ndarray) -> None:
    valid = np.isfinite(flow).all(axis=2)
    if np.abs(np.where(valid[..., None], flow, 0)).max(initial=0) >= 512:
        raise ValueError("KITTI flow PNG holds |flow| < 512 px")
    q = np.where(valid[..., None], np.rint(flow.astype(np.float64) * 64.0 + 2.0**15), 0).astype(np.uint16)
    img = np.dstack([valid.astype(np.uint16), q[..., 1], q[..., 0]])
    write_png(path, img)  # encoded in memory, written checked: a full disk is one line, not an empty PNG
