"""sha256 of artifacts, remembered between commands so a large engine is not rehashed at every open.

An artifact is checked against its manifest each time a command opens it (`manifest.read_manifest(verify=True)`).
Hashing a 100 MB engine takes about a second, so the digest is kept in `<cache>/sha256.json` under the user
cache folder ($VSSEG_EDGE_CACHE, else $XDG_CACHE_HOME/vsseg-edge, else ~/.cache/vsseg-edge), keyed by the
resolved path and the file's size, mtime_ns, ctime_ns and inode. Any change to the file (a rewrite, a
copy over it, `touch`) changes one of these and the file is hashed again; ctime cannot be set back by a
user, so a replacement that keeps the old size and mtime is still noticed. The cache is only an
optimisation: it is written atomically, holds the newest `MAX_ENTRIES`, and a cache that cannot be read or
written is ignored (the file is hashed every time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import VssegError

CACHE_NAME = "sha256.json"
MAX_ENTRIES = 512


def user_cache_dir() -> Path:
    """`$VSSEG_EDGE_CACHE`, else `$XDG_CACHE_HOME/vsseg-edge`, else `~/.cache/vsseg-edge`."""
    if os.environ.get("VSSEG_EDGE_CACHE"):
        return Path(os.environ["VSSEG_EDGE_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vsseg-edge"


def _key(path: Path) -> tuple[str, list[int]]:
    st = path.stat()
    return str(path.resolve()), [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _load(cache: Path) -> dict:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _store(cache: Path, entries: dict) -> None:
    from .fileio import atomic_write

    if len(entries) > MAX_ENTRIES:
        entries = dict(list(entries.items())[-MAX_ENTRIES:])
    try:
        with atomic_write(cache, "w") as fh:
            json.dump({"version": 1, "entries": entries}, fh)
    except (OSError, VssegError):
        pass  # a cache that cannot be written only costs a rehash next time


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of `path`, from the cache when the file is unchanged since it was last hashed."""
    from .fileio import sha256_file

    path = Path(path)
    name, stat = _key(path)
    cache = user_cache_dir() / CACHE_NAME
    entries = _load(cache)
    hit = entries.get(name)
    if isinstance(hit, list) and len(hit) == 2 and hit[0] == stat and isinstance(hit[1], str):
        return hit[1]
    digest = sha256_file(path)
    if _key(path)[1] == stat:  # unchanged while it was read: worth remembering
        entries.pop(name, None)
        entries[name] = [stat, digest]
        _store(cache, entries)
    return digest
