"""Students and teachers behind one registry: `create_model(name, num_classes, **kw)`.

Importing this package imports torch (it is the torch room). See `_base.SegModel` for the output
contract every model follows, and `list_models()` for the names.
"""

from . import bisenetv2, espnet, pspnet  # noqa: F401  (registers the models)
from ._base import SegModel
from ._registry import create_model, list_models, register_model
from .espnet import load_espnet_weights, published_preprocess

__all__ = ["SegModel", "create_model", "list_models", "load_espnet_weights", "published_preprocess", "register_model"]
