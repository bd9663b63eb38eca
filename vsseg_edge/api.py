"""The Python API: one object that segments frames, streams and files with any vsseg-edge model.

    from vsseg_edge import Segmenter

    seg = Segmenter("espnet-cityscapes")          # a zoo name, or a path: .onnx / .engine / .pt
    labels = seg(frame)                           # BGR uint8 HxWx3 (OpenCV's order) → uint8 HxW class ids
    for frame, labels in seg.stream("video.mp4"):  # any source `run` takes: csi://0, /dev/video0, rtsp://…
        cv2.imwrite("out.png", seg.overlay(frame, labels))

It is the CLI's runtime without its threads: the same backends (chosen from the file, TensorRT for engines,
onnxruntime for ONNX, torch for checkpoints), the same one preprocessing from the artifact's manifest, the
same sources (`runtime.uri` grammar, jetson-utils' options). `__call__` is synchronous and returns labels at
the frame's size; `stream` reads with the source's own reader thread (latest-frame dropping on live
sources, every frame of files), so a slow consumer of a camera sees fresh frames rather than a backlog.

Nothing here imports torch unless the model is a checkpoint: an `edge` install (onnxruntime + OpenCV) uses
it with ONNX models and engines.
"""

from __future__ import annotations

import os
import queue
from pathlib import Path
from typing import Iterator

import numpy as np

from .core.errors import VssegError

__all__ = ["Segmenter"]


def resolve_model(model: str | os.PathLike) -> Path:
    """A path, or a zoo model's name (through the zoo's resolver where this installation has one)."""
    try:
        from .zoo import resolve
    except ImportError:  # a vsseg-edge without the zoo: paths only
        return Path(model)
    return Path(resolve(model))


class Segmenter:
    """Segment frames with one model; see the module docstring.

    model      a zoo name or a model file (.engine/.plan TensorRT, .onnx onnxruntime, .pt torch checkpoint)
    backend    "trt" | "ort" | "torch" (default: from the file)
    classes    a class file (or set name) whose names and colours replace the model's
    size       (height, width) to run a size-free model at (default: its manifest's)
    threads    onnxruntime intra-op threads (0: its default)
    device     torch backend device ("cpu", "cuda", "cuda:1"; default: CUDA when available)
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        backend: str | None = None,
        classes: str | os.PathLike | None = None,
        size: tuple[int, int] | None = None,
        threads: int = 0,
        device: str | None = None,
    ):
        from .core.classes import check_model_classes, resolve_classes
        from .runtime.backends import infer_backend_name, open_backend

        self.model = resolve_model(model)
        name = backend or infer_backend_name(self.model)
        options: dict = {}
        if name == "ort" and threads:
            options["threads"] = int(threads)
        if name == "torch" and device is not None:
            options["device"] = device
        self._backend = open_backend(self.model, backend, **options)
        try:
            if size is not None:
                h, w = (int(v) for v in size)
                self._backend.check_spec(self._backend.preprocess_spec.replace(height=h, width=w))
            if classes is not None:
                ls = check_model_classes(resolve_classes(classes), self._backend.classes, f"classes={classes}")
                self._backend.classes, self._backend.palette = list(ls.classes), ls.palette_list()
        except BaseException:
            self._backend.close()
            raise
        self._label_set = self._backend.label_set
        from .runtime.hud import bgr_lut

        self._lut = bgr_lut(self._label_set)

    # -- what the model is ------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Class names; a label map's value i is `classes[i]` (255: no class)."""
        return list(self._label_set.classes)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        """RGB colour of each class (the model's class file, or the built-in set's)."""
        return [tuple(c) for c in self._label_set.palette]

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the frames are resized to for the model."""
        return self._backend.preprocess_spec.size

    def describe(self) -> str:
        return self._backend.describe()

    # -- segmenting -------------------------------------------------------------------------------------
    def __call__(self, frame: np.ndarray | str | os.PathLike, *, rgb: bool = False) -> np.ndarray:
        """Labels (uint8 HxW, class ids at the frame's size) of one frame: a BGR uint8 HxWx3 array (`rgb=True`
        for RGB arrays, e.g. from PIL or imageio) or an image file's path."""
        from .core.preprocess import labels_to_frame_size, preprocess

        image = self._image(frame, rgb)
        output = self._backend.infer(preprocess(image, self._backend.preprocess_spec))
        return labels_to_frame_size(self._backend.to_labels(output)[0], image.shape[:2])

    def _image(self, frame, rgb: bool) -> np.ndarray:
        if isinstance(frame, (str, os.PathLike)):
            from .core.fileio import read_image

            return read_image(frame)
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise VssegError(
                f"frame: expected a uint8 HxWx3 image (BGR, or RGB with rgb=True), got {frame.dtype} {frame.shape}"
            )
        return np.ascontiguousarray(frame[..., ::-1]) if rgb else frame

    def stream(
        self, source: str | int | os.PathLike, *, max_frames: int | None = None, timeout: float = 30.0, **source_options
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(frame, labels) for each frame of a source: a file, folder, glob, csi://N, /dev/videoN, a camera
        index, rtsp://…, rtp://@:PORT. `source_options` are jetson-utils' input options (width, height, rate,
        flip, sensor_mode, codec). A live source that stops giving frames for `timeout` seconds, or ends with
        an error, raises a one-line VssegError; the source is closed when the loop ends or breaks."""
        from .runtime.sources import open_source
        from .runtime.uri import SourceOptions

        src = open_source(
            source if not isinstance(source, os.PathLike) else str(source), options=SourceOptions(**source_options)
        )
        src.start()
        n = 0
        try:
            while max_frames is None or n < max_frames:
                try:
                    frame = src.get(timeout=timeout)
                except queue.Empty:
                    raise VssegError(f"{src.description}: no frame for {timeout:g} s") from None
                if frame is None:
                    if src.error:
                        raise VssegError(src.error)
                    return
                yield frame.image, self(frame.image)
                n += 1
        finally:
            src.stop()
            src.join()

    # -- showing ----------------------------------------------------------------------------------------
    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """The class colours of a label map, as a BGR image (no-class pixels black)."""
        return self._lut[np.asarray(labels, np.uint8)]

    def overlay(self, frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The class colours blended over the frame (BGR): alpha 0 shows the frame, 1 only the colours."""
        from .runtime.hud import overlay

        if not 0.0 <= alpha <= 1.0:
            raise VssegError(f"alpha {alpha}: expected a value in [0, 1]")
        frame = self._image(frame, False)
        if labels.shape != frame.shape[:2]:
            raise VssegError(f"labels {labels.shape} do not match the frame {frame.shape[:2]}")
        return overlay(frame, np.asarray(labels, np.uint8), self._lut, alpha)

    def shares(self, labels: np.ndarray) -> dict[str, float]:
        """Fraction of the pixels of each class present in a label map, largest first."""
        from .runtime.frame_json import class_shares

        return class_shares(np.asarray(labels, np.uint8), self.classes)[0]

    # -- lifetime ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the backend (sessions, GPU buffers); the Segmenter cannot be used afterwards."""
        self._backend.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Segmenter({str(self.model)!r}: {self.describe()})"
