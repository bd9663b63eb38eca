"""Fixtures of the serving tests: free loopback ports, tiny models (float NCHW logits, uint8 NHWC labels)."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pytest

from tests.runtime.conftest import (
    H,
    W,
    export_onnx,
    tiny_net,
    video_file,  # noqa: F401  (the runtime tests' synthetic video, a fixture here too)
)
from vsseg_edge.serve.ports import free_port_run, free_ports  # noqa: F401  (the serving tests import them from here)


@contextlib.contextmanager
def triton_start_lock():
    """One Triton start-up at a time on this machine (test processes of `-n N` included): PyTriton's start-up
    handshake gives the serving process one second, which two start-ups on two busy cores can miss."""
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / "vsseg-edge-triton-start.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def export_uint8_labels(path: Path, *, batch: bool = True) -> Path:
    """The tiny net as `export --uint8-input --argmax uint8 [--dynamic-batch]` shapes it: uint8 NHWC frames in the
    model's channel order, normalisation inside the graph, uint8 labels out."""
    import torch
    from torch import nn

    from vsseg_edge.core.labels import CITYSCAPES
    from vsseg_edge.core.manifest import write_manifest
    from vsseg_edge.core.preprocess import PreprocessSpec

    spec = PreprocessSpec(height=H, width=W, layout="nhwc", dtype="uint8")

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_net()
            self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

        def forward(self, x):
            x = (x.permute(0, 3, 1, 2).float() - self.mean) / self.std
            return self.net(x).argmax(1).to(torch.uint8)

    axes = {"input": {0: "batch"}, "labels": {0: "batch"}} if batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Wrapped().eval(),
            torch.zeros(spec.input_shape(2 if batch else 1), dtype=torch.uint8),
            str(path),
            input_names=["input"],
            output_names=["labels"],
            opset_version=17,
            dynamo=False,
            dynamic_axes=axes,
        )
    write_manifest(
        path,
        "onnx",
        model="tiny",
        classes=list(CITYSCAPES.classes),
        preprocess=spec,
        output="labels",
        dynamic_batch=batch,
    )
    return path


@pytest.fixture(scope="session")
def serve_models(tmp_path_factory):
    """{'logits_batch', 'logits_static', 'uint8_labels', 'uint8_labels_static'} → ONNX paths with manifests."""
    folder = tmp_path_factory.mktemp("serve_models")
    net = tiny_net()
    return {
        "logits_batch": export_onnx(net, folder / "tiny_batch.onnx", batch=True),
        "logits_static": export_onnx(net, folder / "tiny_static.onnx"),
        "uint8_labels": export_uint8_labels(folder / "tiny_u8.onnx"),
        "uint8_labels_static": export_uint8_labels(folder / "tiny_u8_static.onnx", batch=False),
    }
