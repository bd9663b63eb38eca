"""What `bench` is asked to measure: an artifact file, optionally with options for the backend that runs it.

    model.int8.qdq.onnx                          the file, run as its backend does by default
    model.int8.qdq.onnx::shift_int8=false        the same file with a backend option (a second entry)
    model.pt::fp16=true,channels_last=true       torch options

Options are the keyword arguments of `runtime.backends.open_backend` for that backend (ort: shift_int8,
exact_qdq, providers as A+B; torch: fp16, channels_last, cuda_graph; trt: device). Values read as booleans
(true/false), integers, numbers or text. One file may appear several times with different options; each is
its own entry, named `file[opt=value]@backend`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import VssegError

SEPARATOR = "::"
OPTIONS = {
    "ort": ("shift_int8", "exact_qdq", "providers"),
    "torch": ("fp16", "channels_last", "cuda_graph"),
    "trt": ("device",),
}


@dataclass(frozen=True)
class Artifact:
    """A file to bench and the backend options it runs with (empty: the backend's defaults)."""

    path: Path
    options: dict = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """`[k=v,…]` for an artifact with options, else empty: what tells its entry apart from the plain file."""
        return "[" + ",".join(f"{k}={_text(v)}" for k, v in self.options.items()) + "]" if self.options else ""

    def spec(self) -> str:
        """The command-line form (`path` or `path::k=v,…`), as `parse_artifact` reads it."""
        opts = ",".join(f"{k}={_text(v)}" for k, v in self.options.items())
        return f"{self.path}{SEPARATOR}{opts}" if opts else str(self.path)


def parse_artifact(spec, backend: str | None = None) -> Artifact:
    """`path` or `path::k=v,…` (or an Artifact, or a (path, options) pair) → Artifact; one-line errors."""
    if isinstance(spec, Artifact):
        art = spec
    elif isinstance(spec, tuple):
        art = Artifact(Path(spec[0]), dict(spec[1]))
    else:
        text = str(spec)
        path, _, opts = text.partition(SEPARATOR)
        art = Artifact(Path(path), _parse_options(opts, text))
    if backend is not None:
        bad = [k for k in art.options if k not in OPTIONS.get(backend, ())]
        if bad:
            raise VssegError(
                f"{art.spec()}: option(s) {bad} do not apply to the {backend} backend; "
                f"expected {', '.join(OPTIONS.get(backend, ())) or 'none'}"
            )
    return art


def _parse_options(text: str, where: str) -> dict:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VssegError(f"{where}: backend option {item!r} is not KEY=VALUE")
        out[key.strip()] = _value(value.strip())
    return out


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.split("+") if "+" in text else text


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)
