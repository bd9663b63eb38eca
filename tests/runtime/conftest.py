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
        img[h // 2 :] = (90, 90, 90)
        x = (8 * t) % (w - 24)
        img[h // 3 : h // 3 + 20, x : x + 24] = (30, 30, 220)
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


def export_onnx(
    net, path: Path, *, output: str = "logits", dynamic: bool = False, spec=None, batch: bool = False
) -> Path:
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
        torch.onnx.export(
            net,
            x,
            str(path),
            input_names=["input"],
            output_names=[output],
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
        output=output,
        dynamic_batch=batch,
    )
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


def wait_for(predicate, proc=None, timeout: float = 120.0, what: str = "the condition") -> None:
    """Wait until `predicate()` holds: an event to wait on, never a fixed sleep (a loaded machine is slow).

    `proc`, a child process the condition depends on: its end first fails at once, with its stderr. The
    timeout only bounds a test that would otherwise hang; it is no measure of speed.
    """
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}:\n{err[-2000:]}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def records_streamed(folder: Path, stem: str = "*") -> bool:
    """A `--stats` file `folder/STEM.jsonl` of a running `vsseg-edge run` holds records: its temporary file
    (renamed onto the target at the end) has data, so frames went through the pipeline, whose signal handlers
    are installed by then."""
    return folder.is_dir() and any(p.stat().st_size > 0 for p in folder.glob(f".{stem}.jsonl.*.tmp.jsonl"))


def port_bound(port: int, kind: str) -> bool:
    """A socket on this machine is bound to `port`: UDP (`kind="udp"`) or a listening TCP socket (`"tcp"`), read
    from /proc/net (an attempt to connect would itself be taken as the client by a listening FFmpeg)."""
    listening = "07" if kind == "udp" else "0A"  # the `st` column: UDP's unconnected state 07, TCP's LISTEN 0A
    for table in (f"/proc/net/{kind}", f"/proc/net/{kind}6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == listening:
                return True
    return False


class TensorTableEngine:
    """TensorRT engine double with the name-based I/O of TensorRT >= 8.5, read from `_io`: a list of
    (name, "in" | "out", shape, dtype) in the engine's order. Subclasses add `create_execution_context`."""

    _io: list = []

    @property
    def num_io_tensors(self):
        return len(self._io)

    def get_tensor_name(self, i):
        return self._io[i][0]

    def get_tensor_mode(self, name):
        return {n: m for n, m, _, _ in self._io}[name]

    def get_tensor_shape(self, name):
        return {n: s for n, _, s, _ in self._io}[name]

    def get_tensor_dtype(self, name):
        return {n: d for n, _, _, d in self._io}[name]


class HostMemory:
    """cuda-python's allocations in a test double: host memory stands in for pinned and device memory alike
    (copies are memmove); `blocks` keeps each buffer alive, `freed` lists what was released."""

    def __init__(self):
        self.blocks, self.freed, self.calls = {}, [], []

    def alloc(self, nbytes):
        import ctypes

        buf = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def free(self, ptr):
        self.freed.append(ptr)
        return (0,)
