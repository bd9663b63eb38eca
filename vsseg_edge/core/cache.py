"""Where vsseg-edge keeps what it computes once and reuses: one folder per kind of cache.

`$VSSEG_EDGE_CACHE/<kind>`, else `$XDG_CACHE_HOME/vsseg-edge/<kind>`, else `~/.cache/vsseg-edge/<kind>`.
Every command that reads or fills a cache (training, `eval`, `bench`, `data flow`, video decoding) resolves
it here, so what one command computed the others find; never a folder inside a dataset (which may be
read-only or shared) and never /tmp (cleared at reboot).
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(kind: str) -> Path:
    """The cache folder for `kind` (e.g. "flow", "frames"); not created here."""
    if os.environ.get("VSSEG_EDGE_CACHE"):
        return Path(os.environ["VSSEG_EDGE_CACHE"]) / kind
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vsseg-edge" / kind
