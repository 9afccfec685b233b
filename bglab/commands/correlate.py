"""``bglab correlate``: (being written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``correlate`` command to the bglab app (not yet)."""
