"""Safetensors files, the one format bglab stores weights and checkpoints in (no pickle): one atomic writer and
one reader, used by every trainer and loader."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["read_tensors", "save_tensors"]


def save_tensors(path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` (torch tensors, moved to the CPU) as one safetensors file, atomically
    (:func:`bglab.io.files.atomic_write_bytes`: an interrupted save leaves the previous checkpoint, never half a
    file); returns the path."""
    from safetensors.torch import save

    from bglab.io.files import atomic_write_bytes

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                metadata=dict(metadata) if metadata is not None else None)
    return atomic_write_bytes(path, data)


def read_tensors(path: str | Path, *, tensors: bool = True) -> tuple[dict[str, str], dict[str, Any]]:
    """``(metadata, tensors)`` of a safetensors file in one pass (``tensors=False``: the header only); the
    reader's own errors pass through for the caller to name the file and the fix."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        found = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118 - no iterator
    return meta, found
