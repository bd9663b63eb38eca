"""The legacy path: TensorRT 8.6 / 10 implicit INT8 calibration (IInt8EntropyCalibrator2) for older JetPacks.

TensorRT deprecated implicit calibration in 10.1 and removed it in 11; the Q/DQ model is the primary path.
Where an old TensorRT still needs a calibrator, this module gives one whose logic is ours and testable
without TensorRT:

- `calibration_cache_key`: sha256 over the model's sha256, the preprocessing, the sha1 of the frame list,
  the batch size and the algorithm. The cache file carries its key in a header line and is read back only
  when the key matches, so a cache made for another model, preprocessing or frame set is never reused.
- `BatchFeeder`: frames → fixed-size float32 batches through THE preprocessing (`core.preprocess`).
- `make_entropy_calibrator(trt, ...)`: a thin `trt.IInt8EntropyCalibrator2` subclass, defined only when a
  tensorrt module is given (the engine builder passes the one it imported).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.errors import VssegError
from ..core.fileio import atomic_write
from ..core.preprocess import PreprocessSpec, preprocess_batch
from .frames import SampledFrame

CACHE_FORMAT = 1
ALGORITHM = "entropy2"
_HEADER = b"#vsseg-edge-calibration-cache "


def calibration_cache_key(
    model_sha256: str, spec: PreprocessSpec, frames_sha1: str, batch_size: int, algorithm: str = ALGORITHM
) -> str:
    """The identity of a calibration: any change of model, preprocessing, frames or batch gives a new key."""
    material = {
        "format": CACHE_FORMAT,
        "model_sha256": model_sha256,
        "preprocess": spec.to_dict(),
        "frames_sha1": frames_sha1,
        "batch_size": int(batch_size),
        "algorithm": algorithm,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class CalibrationCache:
    """A TensorRT calibration cache file bound to one key (first line `#vsseg-edge-calibration-cache <key>`)."""

    def __init__(self, path: str | Path, key: str):
        self.path, self.key = Path(path), key
        self.last_read: str = "not read"  # "hit" | "missing" | "foreign key" | "not read" (for logs and tests)

    @classmethod
    def in_dir(cls, folder: str | Path, key: str) -> CalibrationCache:
        """`folder/calib-<key prefix>.cache`: one file per key, so caches of different models coexist."""
        return cls(Path(folder) / f"calib-{key[:16]}.cache", key)

    def read(self) -> bytes | None:
        """The cached TensorRT bytes, or None when absent or made under another key."""
        if not self.path.is_file():
            self.last_read = "missing"
            return None
        raw = self.path.read_bytes()
        head, _, body = raw.partition(b"\n")
        if head != _HEADER + self.key.encode():
            self.last_read = "foreign key"
            return None
        self.last_read = "hit"
        return body

    def write(self, data: bytes) -> None:
        with atomic_write(self.path, "wb") as fh:
            fh.write(_HEADER + self.key.encode() + b"\n" + bytes(data))


class BatchFeeder:
    """Fixed-size batches of preprocessed frames; the last partial batch is dropped (TensorRT needs full ones)."""

    def __init__(self, frames: Sequence[SampledFrame], spec: PreprocessSpec, batch_size: int = 1):
        if batch_size < 1:
            raise VssegError(f"calibration batch size must be ≥ 1, got {batch_size}")
        if len(frames) < batch_size:
            raise VssegError(f"{len(frames)} calibration frame(s) cannot fill one batch of {batch_size}")
        self.frames, self.spec, self.batch_size = list(frames), spec, batch_size
        self.batches_served = 0

    @property
    def num_batches(self) -> int:
        return len(self.frames) // self.batch_size

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.input_shape(self.batch_size)

    def next_batch(self) -> np.ndarray | None:
        if self.batches_served >= self.num_batches:
            return None
        i = self.batches_served * self.batch_size
        batch = preprocess_batch([f.read() for f in self.frames[i : i + self.batch_size]], self.spec)
        self.batches_served += 1
        return np.ascontiguousarray(batch)


def make_entropy_calibrator(trt, feeder: BatchFeeder, cache: CalibrationCache, to_device: Callable[[np.ndarray], int]):
    """An IInt8EntropyCalibrator2 for `trt` (the imported tensorrt module) feeding `feeder`'s batches.

    `to_device(batch)` copies a host batch into a device buffer and returns its address (the engine room
    owns CUDA memory). Refuses TensorRT versions without implicit calibration (11 and later).
    """
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        version = getattr(trt, "__version__", "?")
        raise VssegError(
            f"TensorRT {version} has no implicit INT8 calibration (removed in 11); "
            "build the INT8 engine from the Q/DQ model (vsseg-edge calibrate) instead"
        )
    return _calibrator_class(trt)(feeder, cache, to_device)


_CLASSES: dict[int, type] = {}


def _calibrator_class(trt) -> type:
    """Define the subclass once per tensorrt module (the base class exists only when tensorrt does)."""
    if id(trt) in _CLASSES:
        return _CLASSES[id(trt)]
    base = trt.IInt8EntropyCalibrator2

    class VssegEntropyCalibrator(base):
        def __init__(self, feeder: BatchFeeder, cache: CalibrationCache, to_device):
            base.__init__(self)
            self.feeder, self.cache, self.to_device = feeder, cache, to_device
            self._keep = None  # the current batch must stay alive while TensorRT reads it

        def get_batch_size(self) -> int:
            return self.feeder.batch_size

        def get_batch(self, names, *args):
            batch = self.feeder.next_batch()
            if batch is None:
                return None
            self._keep = batch
            return [int(self.to_device(batch))]

        def read_calibration_cache(self):
            return self.cache.read()

        def write_calibration_cache(self, data) -> None:
            self.cache.write(bytes(data))

    _CLASSES[id(trt)] = VssegEntropyCalibrator
    return VssegEntropyCalibrator
