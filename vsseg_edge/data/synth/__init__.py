"""The synthetic street-scene video generator: the toolkit's embedded default dataset (see writer.py)."""

from .writer import generate

__all__ = ["generate"]
