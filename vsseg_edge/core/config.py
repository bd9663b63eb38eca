"""Frozen dataclass configs loaded from YAML, with overrides from the command line.

Unknown keys are rejected with the valid keys listed; `key.sub=value` overrides parse their value as
YAML; the resolved config serialises back to a plain dict stored in checkpoints and manifests.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import VssegError

T = TypeVar("T")
_YAML11_MISSED_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def from_dict(cls: type[T], data: dict | None, where: str) -> T:
    """Build dataclass `cls` from a dict, recursing into nested dataclass fields."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise VssegError(f"{where}: expected a mapping, got {type(data).__name__}")
    flds = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(flds))
    if unknown:
        raise VssegError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(flds)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise VssegError(f"{where}: {exc}") from None


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise VssegError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise VssegError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, where) for v in value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_MISSED_FLOAT.fullmatch(value.strip()):
        return float(value)  # `1e-4`: YAML 1.1 (PyYAML) reads an exponent without a dot as a string
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise VssegError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise VssegError(f"{where}: expected int, got {value!r}")
    return value


def to_dict(cfg) -> dict:
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply `a.b=value` overrides (value parsed as YAML) to a nested dict, returning a new dict."""
    import copy

    import yaml

    data = copy.deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise VssegError(f"--override {item!r}: expected key=value (e.g. optim.lr=0.01)")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise VssegError(f"--override {item!r}: {p} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            reason = str(exc).splitlines()[0]
            raise VssegError(
                f"--override {item!r}: the value is not valid YAML ({reason}); quote it, e.g. -o 'data.crop=[64, 128]'"
            ) from None
    return data


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise VssegError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise VssegError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise VssegError(f"{path}: expected a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    data = load_yaml(path) if path else {}
    return from_dict(cls, apply_overrides(data, overrides), str(path or cls.__name__))


MAX_SIDE = 8192  # pixels: a larger frame or model input is a typo, and allocating it would exhaust memory


def parse_size(text: str, flag: str = "--size", minimum: int = 1, maximum: int = MAX_SIDE) -> tuple[int, int]:
    """'HxW' in pixels (e.g. 512x1024; '×' and spaces accepted) → (H, W); a one-line error naming `flag`
    when it is not two integers from `minimum` to `maximum`. The one reader of sizes for every command."""
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise VssegError(f"{flag} {text}: expected HxW in pixels, each side {minimum} to {maximum}, e.g. 512x1024")
    h, w = (int(p) for p in parts)
    if min(h, w) < minimum or max(h, w) > maximum:
        raise VssegError(f"{flag} {text}: height and width must be {minimum} to {maximum} pixels")
    return h, w
