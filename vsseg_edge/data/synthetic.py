"""The synthetic street-scene set (implemented in `vsseg_edge.data.synth`)."""

from .synth import generate  # noqa: F401
