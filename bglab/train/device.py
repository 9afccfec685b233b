"""Where torch trains: one rule for ``--device`` (``cpu``, ``cuda``, ``cuda:N`` or ``auto``) in every training
command (``experiment``, ``train-seg``, ``train-det``), checked before anything is written."""

from __future__ import annotations

from bglab.errors import ConfigError


def resolve_device(name: str) -> str:
    """The torch device for ``name``: ``auto`` -> ``cuda`` where torch sees a GPU, else ``cpu``; ``cuda`` without
    a GPU, or an unknown name, raises :class:`ConfigError` (``cpu`` is the bit-reproducible default)."""
    import torch

    name = str(name).lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device {name!r}", hint="use cpu, cuda or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but torch sees no GPU",
                          hint="use --device cpu, or auto (the GPU where there is one)")
    return name
