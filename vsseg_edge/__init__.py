"""vsseg-edge: temporally consistent real-time semantic segmentation, from training to the edge."""

__version__ = "0.1.0"
