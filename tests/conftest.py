"""Shared fixtures. Tests build their data with the synthetic generator; real data in ../shared is optional."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# caches (DIS flow, decoded video) go to a folder of this test session, never the user's ~/.cache
_CACHE = tempfile.mkdtemp(prefix="vsseg-test-cache-")
os.environ["VSSEG_EDGE_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
SHARED_DATA = Path(os.environ.get("VSSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not present: {path} (optional; see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A tiny synthetic street-scene set in the Cityscapes layout: 2 train + 1 val sequences, 6 frames, 64x128."""
    from vsseg_edge.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, num_train=2, num_val=1, frames=6, height=64, width=128, seed=0)
    return root
