"""A small U-Net for binary (hand) segmentation, in plain PyTorch.

The two reference U-Nets this follows differ in exactly three switches, all exposed here: dropout,
batch-norm, and how the decoder meets the encoder (``skip="concat"``: concatenate channels, the original
U-Net; ``skip="add"``: project and add, a residual-style skip). Channels double at each level from
``base`` and stop growing at ``base * max_mult`` to keep the model small; ``separable=True`` replaces each
3x3 convolution (except the first) by a depthwise 3x3 + pointwise 1x1 pair.

The decoder upsamples bilinearly to the skip's exact size, so any input height / width works (no need to
be a multiple of ``2**depth``), which is what lets the exported ONNX model take dynamic spatial sizes.
The network returns logits; apply ``torch.sigmoid`` for probabilities (the exported ONNX model does).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Skip = Literal["concat", "add"]


def _conv(cin: int, cout: int, separable: bool, bias: bool) -> nn.Module:
    if separable and cin > 3:
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=bias),
        )
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class ConvBlock(nn.Module):
    """Two (conv 3x3 -> [BN] -> ReLU) layers, optional dropout at the end."""

    def __init__(self, cin: int, cout: int, *, batchnorm: bool, dropout: float, separable: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(_conv(cin if i == 0 else cout, cout, separable, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UNet(nn.Module):
    """U-Net with ``depth`` down-samplings; ``forward`` returns logits (N, out_ch, H, W)."""

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 1,
        depth: int = 4,
        base: int = 16,
        dropout: float = 0.0,
        batchnorm: bool = True,
        skip: Skip = "concat",
        *,
        max_mult: int = 8,
        separable: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1 or base < 1:
            raise ValueError(f"depth and base must be >= 1 (got depth={depth}, base={base})")
        if skip not in ("concat", "add"):
            raise ValueError(f"skip must be 'concat' or 'add', not {skip!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.config = dict(in_ch=in_ch, out_ch=out_ch, depth=depth, base=base, dropout=dropout,
                           batchnorm=batchnorm, skip=skip, max_mult=max_mult, separable=separable)
        self.skip = skip
        chans = [base * min(2**i, max_mult) for i in range(depth + 1)]
        kw = dict(batchnorm=batchnorm, separable=separable)
        self.enc = nn.ModuleList()
        cin = in_ch
        for i in range(depth):
            # dropout only in the deeper half of the encoder and the bottleneck (as the reference does)
            self.enc.append(ConvBlock(cin, chans[i], dropout=dropout if i >= depth // 2 else 0.0, **kw))
            cin = chans[i]
        self.bottleneck = ConvBlock(chans[depth - 1], chans[depth], dropout=dropout, **kw)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(depth)):
            # 1x1 projection after bilinear upsampling (cheaper than a transposed conv, no checkerboard)
            self.up.append(nn.Conv2d(chans[i + 1], chans[i], 1))
            dec_in = chans[i] * 2 if skip == "concat" else chans[i]
            self.dec.append(ConvBlock(dec_in, chans[i], dropout=0.0, **kw))
        self.head = nn.Conv2d(chans[0], out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2, ceil_mode=True)
        x = self.bottleneck(x)
        for up, dec, s in zip(self.up, self.dec, reversed(skips), strict=True):
            x = F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False)
            x = up(x)
            x = torch.cat([x, s], dim=1) if self.skip == "concat" else x + s
            x = dec(x)
        return self.head(x)


class ProbModel(nn.Module):
    """Wraps a logit model so its output is sigmoid probabilities (what the exported ONNX model returns)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, dice_weight: float = 1.0,
                  eps: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice loss (Dice over each image, then averaged over the batch)."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    dice = 1.0 - (2.0 * inter + eps) / (p.sum(1) + t.sum(1) + eps)
    return bce + dice_weight * dice.mean()
