"""``bglab variants``: (being written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``variants`` command to the bglab app (not yet)."""
