"""torch backend: a vsseg-edge checkpoint (or an nn.Module in memory) run eagerly.

By default the argmax runs on the device and only the uint8 labels cross to the host; `logits=True` returns
the float logits instead (export parity compares them with onnxruntime's). On CUDA (when available) the
model runs in FP16 and channels-last by default, and optionally replays a captured CUDA graph
(`cuda_graph=True`; the input shape must stay fixed, which the runtime guarantees). The CUDA paths (pinned
staging buffer, CUDA graph replay, the device stage) have tests marked `gpu`, skipped without CUDA. A model
whose forward copies a host tensor to the GPU each call cannot be captured; that is a one-line error naming
--cuda-graph.

`infer` takes a batch prepared on the host (bench, parity, the host stage). The runtime on CUDA uses
`device_stage` instead: the uint8 frame goes to the GPU and preprocessing, argmax, label resize and overlay
run there, frames overlapping on separate streams (torch_stage.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import VssegError
from ...core.preprocess import PreprocessSpec
from . import Backend


class TorchBackend(Backend):
    """Run an nn.Module following the vsseg-edge output contract (logits N×C×H×W); return labels N×H×W, or
    the logits as float32 with `logits=True`."""

    name = "torch"
    output_kind = "labels"
    dynamic_size = True  # the students are fully convolutional; their own input check names valid sizes
    max_batch = None  # any batch

    def __init__(
        self,
        model,
        *,
        preprocess_spec: PreprocessSpec,
        classes: list[str],
        artifact: str = "<module>",
        device: str | None = None,
        fp16: bool | None = None,
        channels_last: bool | None = None,
        cuda_graph: bool = False,
        logits: bool = False,
    ):
        import torch

        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        on_gpu = self.device.startswith("cuda")
        self.fp16 = on_gpu if fp16 is None else bool(fp16)
        self.channels_last = on_gpu if channels_last is None else bool(channels_last)
        if cuda_graph and not on_gpu:
            raise VssegError("torch backend: CUDA graphs need a CUDA device")
        self.cuda_graph = cuda_graph
        self.output_kind = "logits" if logits else "labels"
        self.preprocess_spec, self.classes, self.artifact = preprocess_spec, list(classes), artifact
        if preprocess_spec.dtype != "float32" or preprocess_spec.layout != "nchw":
            raise VssegError(
                f"{artifact}: the torch backend takes float32 NCHW input, the checkpoint's "
                f"preprocessing says {preprocess_spec.dtype} {preprocess_spec.layout}"
            )
        model = model.eval().to(self.device)
        if self.fp16:
            model = model.half()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._model = model
        self._graph = self._pinned = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, **options) -> TorchBackend:
        from ...models.checkpoint import checkpoint_preprocess, model_from_checkpoint

        model, ckpt = model_from_checkpoint(path)
        be = cls(
            model,
            preprocess_spec=checkpoint_preprocess(ckpt, str(path)),
            classes=ckpt["classes"],
            artifact=str(path),
            **options,
        )
        be.palette = ckpt.get("palette")
        return be

    def _forward(self, x, labels: bool | None = None):
        """The model on a device input: uint8 labels (argmax on the device) or float logits, as `output_kind` says
        unless `labels` says otherwise (the device stage always wants labels)."""
        out = self._model(x)
        out = out["out"] if isinstance(out, dict) else out
        if not (self.output_kind == "labels" if labels is None else labels):
            return out.float()
        return out.argmax(1).to(self._torch.uint8)

    def prepare(self, x):
        """A float32 NCHW input already on the device → the model's precision and memory format."""
        x = x.half() if self.fp16 else x
        return x.contiguous(memory_format=self._torch.channels_last) if self.channels_last else x

    def device_stage(self, *, lut, alpha: float, overlay: bool, slots: int, required: bool = False):
        """The frame stage on the device (torch_stage.py): on CUDA by default, on the CPU only when `required`."""
        if not (self.device.startswith("cuda") or required):
            return None
        from .torch_stage import TorchDeviceStage

        return TorchDeviceStage(self, lut=lut, alpha=alpha, overlay=overlay, slots=slots)

    def _to_device(self, batch: np.ndarray):
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch))
        if self.device != "cpu":
            # one pinned staging buffer, reused: the previous frame's async copy has finished, since
            # `infer` ends with a synchronous copy of the labels to the host
            if self._pinned is None or self._pinned.shape != x.shape:
                self._pinned = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
            self._pinned.copy_(x)
            x = self._pinned.to(self.device, non_blocking=True)
        return self.prepare(x)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            x = self._to_device(batch)
            if self.cuda_graph:
                return self._replay(x)
            return self._forward(x).cpu().numpy()

    def _replay(self, x) -> np.ndarray:
        """Capture once for this input shape (after a warm-up on a side stream), then copy in and replay."""
        if self._graph is None or self._static_in.shape != x.shape:
            self._graph = None
            self._static_in = x.clone()
            self._graph, self._static_out = capture_graph(self._torch, self._forward, self._static_in, self.artifact)
        self._static_in.copy_(x)
        self._graph.replay()
        return self._static_out.cpu().numpy()

    def close(self) -> None:
        self._model = self._graph = self._pinned = None


def capture_graph(torch, fn, static_in, artifact: str):
    """(graph, output) of `fn(static_in)` captured in a CUDA graph after a warm-up on a side stream.

    Replaying the graph reruns `fn` on whatever `static_in` holds and writes the same output tensor.
    A function that cannot be captured (e.g. one that copies a host tensor to the GPU each call) is a one-line
    error naming --cuda-graph.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            out = fn(static_in)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0][:160]
        raise VssegError(
            f"--cuda-graph: {Path(artifact).name} cannot be captured in a CUDA graph "
            f"({reason}); run without --cuda-graph"
        ) from None
    return graph, out
