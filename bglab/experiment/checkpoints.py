"""Run checkpoints: one safetensors file per run (weights, optimiser state while unfinished, the JSON state in its
metadata, mirrored beside it as .json), read back without pickle; the trained classifier rebuilt from one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bglab.errors import BglabError
from bglab.io.files import atomic_write_text

__all__ = ["build_run_model", "checkpoint_state", "load_checkpoint", "restore_optimizer", "save_checkpoint"]


def save_checkpoint(path: Path, model: Any, optimizer: Any | None, state: dict[str, Any]) -> None:
    import torch

    from bglab.train.classifiers import trained_state
    from bglab.io.tensorfiles import save_tensors

    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().cpu().contiguous().clone()
                                        for k, v in trained_state(model).items()}
    st = dict(state)
    if optimizer is not None:
        from bglab.train.state import optimizer_tensors

        otens, st["optimizer"] = optimizer_tensors(optimizer, prefix="optim.")
        tensors.update(otens)
    text = json.dumps(st, sort_keys=True, default=str)
    save_tensors(path, tensors, {"bglab": text})
    atomic_write_text(path.with_suffix(".json"), json.dumps(st, indent=2, sort_keys=True, default=str) + "\n")


def _read(path: Path, *, tensors: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run checkpoint's state and (with ``tensors``) every tensor, in one pass over the file."""
    from bglab.io.tensorfiles import read_tensors

    try:
        meta, found = read_tensors(path, tensors=tensors)
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        raise BglabError(f"cannot read checkpoint: {exc}", path=path, hint="delete it to retrain this run") from None
    if "bglab" not in meta:
        raise BglabError("checkpoint has no bglab state", path=path, hint="delete it to retrain this run")
    return json.loads(meta["bglab"]), found


def checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The state of a run checkpoint from its header alone (no tensor is read: resume checks every run)."""
    return _read(Path(path), tensors=False)[0]


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(state, model_state_dict, optimizer_tensors)`` of a run checkpoint (safetensors; no pickle)."""
    state, tensors = _read(Path(path), tensors=True)
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k[6:]: v for k, v in tensors.items() if k.startswith("optim.")}
    return state, model, optim


def build_run_model(state: Mapping[str, Any], weights: Mapping[str, Any]) -> Any:
    """The trained classifier of a run checkpoint (``state`` and weights from :func:`load_checkpoint`), in eval
    mode; a frozen pretrained backbone (``tune: head``) comes from its checksum-verified weights file."""
    from bglab.train.classifiers import build_classifier, load_trained

    opts = {k: v for k, v in state["model"].items() if k != "name"}
    model = build_classifier(state["model"]["name"], len(state["classes"]), int(state["channels"]),
                             int(state["size"]), **opts)
    load_trained(model, weights)
    return model.eval()


def restore_optimizer(optimizer: Any, state: dict[str, Any], tensors: dict[str, Any]) -> None:
    from bglab.train.state import load_optimizer

    if state.get("optimizer"):
        load_optimizer(optimizer, tensors, state["optimizer"])

