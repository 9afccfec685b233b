"""``bglab challenge``: (being written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``challenge`` command to the bglab app (not yet)."""
