"""CLI commands of this room (registered by vsseg_edge.cli); heavy imports stay inside the commands."""

from __future__ import annotations


def register(app, data_app) -> None:
    """No commands yet."""
