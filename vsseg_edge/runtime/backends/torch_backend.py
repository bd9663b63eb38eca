"""torch backend: a vsseg-edge checkpoint (or an nn.Module in memory) run eagerly.

By default the argmax runs on the device and only the uint8 labels cross to the host; `logits=True` returns
the float logits instead (export parity compares them with onnxruntime's). On CUDA (when available) the
model runs in FP16 and channels-last by default, and optionally replays a captured CUDA graph
(`cuda_graph=True`; the input shape must stay fixed, which the runtime guarantees). The CUDA paths (pinned
staging buffer, CUDA graph replay) have tests marked `gpu`, skipped without CUDA. A model whose forward
copies a host tensor to the GPU (PSPNet's numpy-built pooling matrices) cannot be captured; that is a
one-line error naming --cuda-graph.
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

    def __init__(self, model, *, preprocess_spec: PreprocessSpec, classes: list[str], artifact: str = "<module>",
                 device: str | None = None, fp16: bool | None = None, channels_last: bool | None = None,
                 cuda_graph: bool = False, logits: bool = False):
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
            raise VssegError(f"{artifact}: the torch backend takes float32 NCHW input, the checkpoint's "
                             f"preprocessing says {preprocess_spec.dtype} {preprocess_spec.layout}")
        model = model.eval().to(self.device)
        if self.fp16:
            model = model.half()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._model = model
        self._graph = self._pinned = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, **options) -> "TorchBackend":
        from ...models.checkpoint import checkpoint_preprocess, model_from_checkpoint

        model, ckpt = model_from_checkpoint(path)
        return cls(model, preprocess_spec=checkpoint_preprocess(ckpt, str(path)), classes=ckpt["classes"],
                   artifact=str(path), **options)

    def _forward(self, x):
        out = self._model(x)
        out = out["out"] if isinstance(out, dict) else out
        if self.output_kind == "logits":
            return out.float()
        return out.argmax(1).to(self._torch.uint8)

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
        x = x.half() if self.fp16 else x
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            x = self._to_device(batch)
            if self.cuda_graph:
                return self._replay(x)
            return self._forward(x).cpu().numpy()

    def _replay(self, x) -> np.ndarray:
        """Capture once for this input shape (after a warm-up on a side stream), then copy in and replay."""
        torch = self._torch
        if self._graph is None or self._static_in.shape != x.shape:
            self._static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._forward(self._static_in)
            torch.cuda.current_stream().wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self._graph):
                    self._static_out = self._forward(self._static_in)
            except RuntimeError as exc:  # e.g. a forward that copies a host tensor to the GPU each call
                self._graph = None
                reason = str(exc).splitlines()[0][:160]
                raise VssegError(f"--cuda-graph: {Path(self.artifact).name} cannot be captured in a CUDA graph "
                                 f"({reason}); run without --cuda-graph") from None
        self._static_in.copy_(x)
        self._graph.replay()
        return self._static_out.cpu().numpy()

    def close(self) -> None:
        self._model = self._graph = self._pinned = None
