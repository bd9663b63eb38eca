"""The model registry, after timm's style: `@register_model(name)` on a factory, one `create_model`.

A factory takes `(num_classes, **kwargs)` and returns an `nn.Module` following the output contract of
`vsseg_edge.models._base.SegModel`. The registry itself imports nothing heavy; the factories do.
"""

from __future__ import annotations

import re
from typing import Callable

from ..core.errors import VssegError

_MODELS: dict[str, Callable] = {}


def register_model(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register a factory `fn(num_classes, **kw) -> nn.Module` under `name`."""

    def wrap(fn: Callable) -> Callable:
        if name in _MODELS and _MODELS[name] is not fn:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def create_model(name: str, num_classes: int, **kwargs):
    """Build a registered model; an unknown name or a bad class count is a one-line VssegError."""
    if name not in _MODELS:
        raise VssegError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise VssegError(f"model {name!r}: num_classes must be a positive integer, got {num_classes!r}")
    try:
        return _MODELS[name](num_classes, **kwargs)
    except TypeError as exc:
        # factories forward **kw down to the model class: an unknown key surfaces as Python's call error
        match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if match is None or match[1] not in kwargs:
            raise
        raise VssegError(
            f"model {name!r}: does not take the keyword argument {match[1]!r} (model.kwargs: {sorted(kwargs)})"
        ) from None
