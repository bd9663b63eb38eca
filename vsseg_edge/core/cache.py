"""The user cache folder: `$VSSEG_EDGE_CACHE`, else `$XDG_CACHE_HOME/vsseg-edge`, else `~/.cache/vsseg-edge`.

Derived data that any run may reuse (decoded video frames, ONNX exports of zoo models) lives in one
subfolder of it per kind; never in /tmp, never inside a dataset or the package.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(kind: str) -> Path:
    """The cache subfolder for `kind` (e.g. "frames", "zoo"); not created here."""
    if os.environ.get("VSSEG_EDGE_CACHE"):
        return Path(os.environ["VSSEG_EDGE_CACHE"]) / kind
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vsseg-edge" / kind
