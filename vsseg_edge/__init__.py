"""vsseg-edge: temporally consistent real-time semantic segmentation, from training to the edge.

`from vsseg_edge import Segmenter` is the Python API (`vsseg_edge.api`); it is imported on first use, so
`import vsseg_edge` (and the CLI's `--help`) stays instant.
"""

__version__ = "0.1.0"

__all__ = ["Segmenter", "__version__"]


def __getattr__(name: str):
    if name == "Segmenter":
        from .api import Segmenter

        return Segmenter
    raise AttributeError(f"module 'vsseg_edge' has no attribute {name!r}")
