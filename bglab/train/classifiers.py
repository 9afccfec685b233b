"""Image classifiers for the background experiments (plain PyTorch, small inputs, CPU friendly).

- ``cnn`` (alias ``vgg``): a VGG-style stack of 3x3 conv blocks (conv-ReLU-conv-ReLU-maxpool), a hidden
  fully-connected layer and the output layer, with ``dropout`` (before each fully-connected layer) and
  ``batchnorm`` (after each conv) switches: the reference study's network is ``cnn`` with dropout 0.5 and no
  batch-norm on 64x64 greyscale input.
- ``resnet18``: ResNet-18 (BasicBlocks 2-2-2-2) adapted to small inputs: a 3x3 stride-1 stem without max-pool,
  global average pooling, configurable ``width`` (64 is the original).

Every network takes ``(N, in_ch, size, size)`` float input and returns ``(N, num_classes)`` logits; build them
with :func:`build_classifier`. Unknown names or options raise :class:`~bglab.errors.ConfigError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bglab.errors import ConfigError

__all__ = ["CLASSIFIERS", "ResNetSmall", "SmallVGG", "build_classifier", "count_parameters"]


class SmallVGG(nn.Module):
    """VGG-style CNN: ``len(widths)`` blocks of two 3x3 convs and a 2x2 max-pool, then FC ``hidden`` -> classes."""

    def __init__(self, num_classes: int, in_ch: int = 1, size: int = 64, *, widths: Sequence[int] = (32, 64, 128),
                 hidden: int = 256, dropout: float = 0.5, batchnorm: bool = False) -> None:
        super().__init__()
        if not widths:
            raise ConfigError("model.widths: needs at least one block width", hint="e.g. widths: [32, 64, 128]")
        widths = [_width("model.widths", w) for w in widths]
        hidden = _width("model.hidden", hidden)
        if size < 2 ** len(widths):
            raise ConfigError(f"model: input size {size} is too small for {len(widths)} pooling blocks",
                              hint=f"use size >= {2 ** len(widths)} or fewer widths")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model.dropout: {dropout!r} must be in [0, 1)")
        layers: list[nn.Module] = []
        c = in_ch
        for w in widths:
            for _ in range(2):
                layers.append(nn.Conv2d(c, int(w), 3, padding=1, bias=not batchnorm))
                if batchnorm:
                    layers.append(nn.BatchNorm2d(int(w)))
                layers.append(nn.ReLU(inplace=True))
                c = int(w)
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = size // 2 ** len(widths)
        head: list[nn.Module] = [nn.Flatten()]
        if dropout > 0:
            head.append(nn.Dropout(float(dropout)))
        head += [nn.Linear(c * side * side, int(hidden), bias=not batchnorm)]
        if batchnorm:
            head.append(nn.BatchNorm1d(int(hidden)))
        head.append(nn.ReLU(inplace=True))
        if dropout > 0:
            head.append(nn.Dropout(float(dropout)))
        head.append(nn.Linear(int(hidden), num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """ResNet-18 layout for small inputs: 3x3 stem (no max-pool), 4 stages of 2 BasicBlocks, global pooling."""

    def __init__(self, num_classes: int, in_ch: int = 1, size: int = 64, *, width: int = 64,
                 blocks: Sequence[int] = (2, 2, 2, 2), dropout: float = 0.0) -> None:
        super().__init__()
        if size < 8:
            raise ConfigError(f"model: input size {size} is too small for resnet18", hint="use size >= 8")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model.dropout: {dropout!r} must be in [0, 1)")
        w = _width("model.width", width)
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        cin = w
        for i, n in enumerate(blocks):
            cout = w * 2 ** i
            for j in range(int(n)):
                stages.append(_BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(float(dropout)) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.layers(self.stem(x))).flatten(1)
        return self.fc(self.drop(x))


#: name -> constructor ``(num_classes, in_ch, size, **opts)``
CLASSIFIERS: dict[str, Callable[..., nn.Module]] = {
    "cnn": SmallVGG,
    "vgg": SmallVGG,
    "resnet18": ResNetSmall,
}


def _width(key: str, value: Any) -> int:
    """A channel / unit count in [1, MAX_WIDTH] (see :mod:`bglab.limits`)."""
    from bglab.errors import short_repr
    from bglab.limits import MAX_WIDTH

    try:
        ok = not isinstance(value, bool) and isinstance(value, int | float) and int(value) == value \
            and 1 <= int(value) <= MAX_WIDTH
    except (OverflowError, ValueError):  # inf, nan
        ok = False
    if not ok:
        raise ConfigError(f"{key}: {short_repr(value)} is not an integer in [1, {MAX_WIDTH}]",
                          hint="each block width costs memory quadratically; see bglab.limits")
    return int(value)


def _allowed_options(ctor: Callable[..., nn.Module]) -> list[str]:
    params = inspect.signature(ctor).parameters
    return [p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def build_classifier(name: str, num_classes: int, in_ch: int = 1, size: int = 64, **opts: Any) -> nn.Module:
    """Build a classifier by name (``cnn`` / ``vgg``, ``resnet18``) for ``in_ch`` x ``size`` x ``size`` input.

    ``opts`` are the network's keyword options (``cnn``: widths, hidden, dropout, batchnorm; ``resnet18``:
    width, blocks, dropout). Raises :class:`ConfigError` naming the bad name or option.
    """
    key = str(name).strip().lower()
    if key not in CLASSIFIERS:
        raise ConfigError(f"model.name: unknown classifier {name!r}", hint=f"choose one of: {', '.join(CLASSIFIERS)}")
    if int(num_classes) < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    if int(in_ch) < 1:
        raise ConfigError(f"model: in_ch must be >= 1, got {in_ch}")
    ctor = CLASSIFIERS[key]
    allowed = _allowed_options(ctor)
    for k in opts:
        if k not in allowed:
            raise ConfigError(f"model.{k}: unknown option for {key!r}", hint=f"allowed: {', '.join(allowed)}")
    return ctor(int(num_classes), int(in_ch), int(size), **opts)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
