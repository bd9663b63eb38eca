"""Reading state-dict files safely and loading them with strict, one-line-error key checks."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from ..core.errors import VssegError


def safe_torch_load(path: Path, what: str):
    """`torch.load(weights_only=True)` with one-line errors naming `path` and the `what` it should be.

    Checkpoints and weight files both load through here: a pickle that needs more than tensors and plain
    values is refused, never executed.
    """
    if not path.is_file():
        raise VssegError(f"{path}: {what} not found")
    if path.stat().st_size == 0:
        raise VssegError(f"{path}: empty file (0 bytes); expected a torch {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise VssegError(
            f"{path}: refused to unpickle: it needs more than tensors and plain values ({_refusal_reason(exc)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError) as exc:
        raise VssegError(f"{path}: not a readable torch {what} ({_short(exc)})") from None


def _short(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut at a word boundary (never mid-word), or its type."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return text


def _refusal_reason(exc: BaseException) -> str:
    """What the weights-only unpickler refused (its line naming the GLOBAL), not torch's advice to unpickle anyway."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln:
            return _short(ln.split("Unpickler error: ", 1)[-1])
    return _short(exc)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict with `weights_only=True`; unwrap {"state_dict": …} / {"model": …}; drop "module."."""
    path = Path(path)
    obj = safe_torch_load(path, "weights file")
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VssegError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_checked(
    module: nn.Module, state: dict[str, torch.Tensor], where: str, what: str, ignore_prefixes: tuple[str, ...] = ()
) -> None:
    """Load `state` into `module` strictly (after dropping `ignore_prefixes`), or raise ONE line saying why."""
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own = module.state_dict()
    for k in own:  # files saved before torch 0.4.1 have no BatchNorm step counters; they do not matter
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = own[k]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} of other shape (e.g. {shapes[0]})")
        raise VssegError(f"{where}: not a {what} state dict: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def load_weights_file(module: nn.Module, path: str | Path, what: str, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """`read_state_dict` + `load_checked`: the one way a local weights file gets into a module."""
    load_checked(module, read_state_dict(path), str(path), what, ignore_prefixes)
