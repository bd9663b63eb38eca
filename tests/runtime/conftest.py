"""Fixtures of the runtime tests: a tiny segmentation net, its ONNX (+manifest), a synthetic video and folder.

Frames are 64×128 BGR with moving coloured shapes, so the tiny net's label maps change from frame to frame.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

H, W, NFRAMES = 64, 128, 12


def make_frames(n: int = NFRAMES, h: int = H, w: int = W, seed: int = 0) -> list[np.ndarray]:
    """Synthetic street-like frames: a gradient 'sky/road', a moving bright box and noise (BGR uint8)."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[: h // 2] = (200, 120, 60)
        img[h // 2:] = (90, 90, 90)
        x = (8 * t) % (w - 24)
        img[h // 3: h // 3 + 20, x: x + 24] = (30, 30, 220)
        img = np.clip(img.astype(np.int16) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        frames.append(img)
    return frames


def tiny_net(num_classes: int = 19):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1)).eval()


class ArgmaxNet:
    """Wraps a net so that the exported graph ends with the argmax (output 'labels', uint8)."""

    def __new__(cls, net):
        import torch
        from torch import nn

        class _M(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x).argmax(1).to(torch.uint8)

        return _M().eval()


def export_onnx(net, path: Path, *, output: str = "logits", dynamic: bool = False, spec=None,
                batch: bool = False) -> Path:
    """`dynamic`: any input H×W; `batch`: a dynamic batch dimension (what `export --dynamic-batch` gives)."""
    import torch

    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.core.manifest import write_manifest
    from vsseg_edge.core.preprocess import PreprocessSpec

    spec = spec or PreprocessSpec(height=H, width=W)
    x = torch.zeros(spec.input_shape(2 if batch else 1))
    axes = {"input": {2: "h", 3: "w"}} if dynamic else None
    if batch:
        axes = {"input": {0: "batch", **(axes or {}).get("input", {})}, output: {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is what the brief asks for
        torch.onnx.export(net, x, str(path), input_names=["input"], output_names=[output], opset_version=17,
                          dynamo=False, dynamic_axes=axes)
    write_manifest(path, "onnx", model="tiny", classes=list(CITYSCAPES.classes), preprocess=spec, output=output,
                   dynamic_batch=batch)
    return path


@pytest.fixture(scope="session")
def net():
    import torch

    torch.set_num_threads(1)
    return tiny_net()


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory, net) -> Path:
    return export_onnx(net, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def batch_onnx(tmp_path_factory, net) -> Path:
    return export_onnx(net, tmp_path_factory.mktemp("onnx") / "tiny_batch.onnx", batch=True)


@pytest.fixture(scope="session")
def onnx_labels_model(tmp_path_factory, net) -> Path:
    return export_onnx(ArgmaxNet(net), tmp_path_factory.mktemp("onnx") / "tiny_labels.onnx", output="labels")


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> Path:
    import cv2

    path = tmp_path_factory.mktemp("video") / "synthetic.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    for f in make_frames():
        writer.write(f)
    writer.release()
    return path


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    import cv2

    folder = tmp_path_factory.mktemp("folder")
    for i, f in enumerate(make_frames(6, seed=1)):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), f)
    return folder


def read_video(path: Path) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames
