"""Keep the numerically delicate parts of the losses in float32 under mixed precision.

Under `torch.autocast` (fp16 on CUDA, bf16 on CPU) matmuls run in half precision and element-wise
maths follows its inputs: pixel coordinates of a 1024-wide frame are not representable in fp16 (steps
of 0.5–1 px above 512) and cosine graphs lose their small differences. These helpers promote to at
least float32 and switch autocast off for the enclosed block.
"""

from __future__ import annotations

import contextlib

import torch


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or unchanged when it is already float32/float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def no_autocast(x: torch.Tensor):
    """A context that disables autocast on x's device type (a no-op context where it cannot apply)."""
    try:
        return torch.autocast(device_type=x.device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know
        return contextlib.nullcontext()
