"""Tiny fixtures for the calibration tests: a Cityscapes-layout folder of 64x128 frames and a tiny FP32 ONNX.

The frames are smooth colour fields with a few rectangles (so the tiny model's predictions have structure),
labels are the rectangles' classes as Cityscapes labelIds; the model is a few Conv/BN/ReLU + a residual Add
+ a bilinear Resize back to the input size, exported with torch's TorchScript exporter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

H, W = 64, 128
LABEL_IDS = (7, 8, 11, 21, 26)  # road, sidewalk, building, vegetation, car -> trainIds 0, 1, 2, 8, 13


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One BGR frame and its labelIds map."""
    img = np.zeros((H, W, 3), np.float32)
    img[:] = rng.uniform(40, 200, 3)
    img += np.linspace(0, 40, W, dtype=np.float32)[None, :, None]
    lab = np.full((H, W), LABEL_IDS[0], np.uint8)
    for _ in range(4):
        y0, x0 = rng.integers(0, H - 16), rng.integers(0, W - 24)
        h, w = rng.integers(8, 24), rng.integers(12, 48)
        cls = int(rng.integers(1, len(LABEL_IDS)))
        img[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, 3)
        lab[y0 : y0 + h, x0 : x0 + w] = LABEL_IDS[cls]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def make_cityscapes(root: Path, n_train: int = 12, n_val: int = 6, seed: int = 0) -> Path:
    """Cityscapes sequence layout: train frames unlabelled, val frames labelled (gtFine labelIds)."""
    import cv2

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        city = "trcity" if split == "train" else "vacity"
        img_dir = root / "leftImg8bit_sequence" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, lab = scene(rng)
            stem = f"{city}_000000_{i:06d}"
            cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"), img)
            if split == "val":
                gt_dir = root / "gtFine" / split / city
                gt_dir.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelIds.png"), lab)
    return root


def make_image_folder(folder: Path, n: int = 10, seed: int = 1) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), scene(rng)[0])
    return folder


def export_tiny_onnx(path: Path, num_classes: int = 19, seed: int = 0, narrow: bool = False) -> Path:
    """A tiny segmentation net as FP32 ONNX (opset 17) with a vsseg-edge manifest. `narrow`: the residual
    branch is a 16 → 12 → 12 → 16 bottleneck whose 12 → 12 convolution TensorRT has no int8 kernel for."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.set_num_threads(1)

    def cbr(i, o, s=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.down, self.res = cbr(3, 8, 2), cbr(8, 16, 2), cbr(16, 16)
            if narrow:
                self.res = nn.Sequential(cbr(16, 12), nn.Conv2d(12, 12, 3, 1, 2, dilation=2), nn.ReLU(), cbr(12, 16))
            self.head = nn.Conv2d(16, num_classes, 1)

        def forward(self, x):
            y = self.down(self.stem(x))
            y = self.head(y + self.res(y))
            return nn.functional.interpolate(y, size=(H, W), mode="bilinear", align_corners=False)

    net = Tiny().eval()
    with torch.no_grad():  # non-trivial BN statistics so that folding matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return save_onnx(net, path, "tiny", num_classes)


def qdq_session(model, exact: bool, optimized_path=None):
    """An onnxruntime CPU session on a Q/DQ ModelProto: exact Q/DQ arithmetic (no graph optimisation) or
    onnxruntime's integer kernels (ORT_ENABLE_ALL; `optimized_path` keeps the optimised graph)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL if exact else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    so.intra_op_num_threads, so.log_severity_level = 1, 3
    if optimized_path:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def save_onnx(net, path: Path, name: str, num_classes: int = 19) -> Path:
    """`net` (image → logits at H × W) as FP32 ONNX (opset 17) with a vsseg-edge manifest."""
    import torch

    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.core.manifest import write_manifest
    from vsseg_edge.core.preprocess import PreprocessSpec

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        net,
        torch.zeros(1, 3, H, W),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
    )
    write_manifest(
        path,
        "onnx",
        model=name,
        classes=list(CITYSCAPES.classes)[:num_classes],
        preprocess=PreprocessSpec(height=H, width=W),
        opset=17,
    )
    return path


# --- fixtures ----------------------------------------------------------------------------------------------

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def cs_root(tmp_path_factory) -> Path:
    """Cityscapes-layout folder: 12 unlabelled train frames, 6 labelled val frames (64x128)."""
    return make_cityscapes(tmp_path_factory.mktemp("cs"))


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """The tiny FP32 ONNX with its manifest (read-only for the tests: copy before changing)."""
    return export_tiny_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="session")
def narrow_onnx(tmp_path_factory) -> Path:
    """The tiny model with a 12 → 12 convolution (`export_tiny_onnx(narrow=True)`; read-only)."""
    return export_tiny_onnx(tmp_path_factory.mktemp("model") / "narrow.onnx", narrow=True)


@pytest.fixture(scope="session")
def thin_onnx(tmp_path_factory) -> Path:
    """Two convolutions of 4 channels: nothing TensorRT runs in int8 (read-only)."""
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 19, 1)).eval()
    return save_onnx(net, tmp_path_factory.mktemp("model") / "thin.onnx", "thin")


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")
