"""The synthetic street-scene video generator: the toolkit's embedded default dataset (see writer.py).

`generate` is loaded on first use, so that importing `vsseg_edge.data.synth.commands` (for the CLI) stays
free of numpy and OpenCV.
"""

__all__ = ["generate"]


def __getattr__(name: str):
    if name == "generate":
        from .writer import generate

        return generate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
