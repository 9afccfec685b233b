"""Pickle-free training state: an optimizer's state as safetensors-ready tensors plus JSON scalars, written with
the one atomic checkpoint writer (:func:`bglab.io.tensorfiles.save_tensors`).

Every trainer (``bglab train-seg``, ``bglab train-det`` and ``bglab experiment``) checkpoints with these, so a
resumed run restores Adam's moments and step counts exactly, no checkpoint is ever half-written, and none needs
``pickle``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["from_json_float", "load_optimizer", "optimizer_tensors", "to_json"]


def to_json(x: Any) -> Any:
    """``x`` with tensors / numpy scalars as plain numbers and non-finite floats as strings (round-trips)."""
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def from_json_float(x: Any) -> Any:
    """Undo :func:`to_json` for one value: ``"inf"``, ``"-inf"``, ``"nan"`` back to floats."""
    if isinstance(x, str) and x in ("inf", "-inf", "nan"):
        return float(x)
    return x


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors (``{prefix}{param id}.{name}``, CPU copies) and JSON scalars
    (``{"param_groups": [...], "state": {param id: {name: value}}}``)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": to_json(sd["param_groups"]), "state": {}}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars["state"].setdefault(str(pid), {})[k] = to_json(v)
    return tensors, scalars


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    """Restore what :func:`optimizer_tensors` split (``tensors`` without the prefix). Experiment checkpoints
    written before this module kept the per-parameter scalars under ``"scalars"``; they load too."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for pid, st in scalars.get("state", scalars.get("scalars", {})).items():
        state.setdefault(int(pid), {}).update(st)
    groups = [{k: from_json_float(v) for k, v in g.items()} for g in scalars["param_groups"]]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
