"""A U-Net-style decoder on the pretrained EfficientNet-Lite encoder (bglab.nets), for hand segmentation.

Encoder: :meth:`bglab.nets.EfficientNetLite.stages` (maps at strides 2, 4, 8, 16, 32; 16, 24, 40, 112, 320
channels for lite0), ImageNet weights from the ``pretrained`` extra. The ImageNet head (1280-channel 1x1
conv + classifier) is not used and not kept in the checkpoint.

Training keeps the stem and the first two stages (strides 2 and 4) frozen at their ImageNet weights and
batch-norm statistics (``freeze``): generic low-level features, and most of the CPU cost of a backward pass.

Decoder: from the stride-32 map up, each level upsamples x2 (bilinear, to the skip's exact size), concatenates
the encoder's map of that stride and runs two depthwise-separable 3x3 blocks (BN + ReLU); a last x2 upsample
brings the stride-2 level to the input size and a 1x1 conv gives one logit per pixel.

Input: RGB normalised the TF-Lite way, ``(pixel - 127) / 128`` (= ``(x / 255 - mean) / std`` with mean
127/255 and std 128/255 per channel, what the exported JSON records). The encoder's stride-2 convolutions pad
like TensorFlow's "SAME", computed from the input size; for even sizes that padding is the same for every size
(k=3: 0 before / 1 after; k=5: 1 / 2), so an export traced at one size that is a multiple of 32 is exact at
every other multiple of 32 once that constant is what gets traced (``_EvenSameConvBN``; the backend rounds its
input to multiples of 32; ONNX vs torch tested at several sizes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from bglab.nets.efficientnet_lite import ConvBN

ENCODERS = ("efficientnet-lite0",)
#: the input normalisation of the pretrained encoders, in the (x / 255 - mean) / std form bglab records
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
MULTIPLE = 32  # input sides must be multiples of this (the encoder's total stride)


class _EvenSameConvBN(ConvBN):
    """A stride-2 :class:`bglab.nets.efficientnet_lite.ConvBN` whose TF-"SAME" padding is written as the
    constant it is for even input sizes (k=3: 0 before / 1 after; k=5: 1 / 2) while being traced for ONNX.
    The size-dependent form would be traced as a constant of the tracing size (wrong at every other size);
    in eager mode the original code runs (any size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            p = self.k - self.stride
            x = F.pad(x, [p // 2, p - p // 2, p // 2, p - p // 2])
            return self.act(self.bn(self.conv(x)))
        return super().forward(x)


def _sep(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1, BN, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.body = nn.Sequential(_sep(cout + cskip, cout), _sep(cout, cout))
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.reduce(x)
        return self.drop(self.body(torch.cat([x, skip], dim=1)))


class EffUNet(nn.Module):
    """EfficientNet-Lite encoder + U-Net decoder; ``forward`` returns logits (N, 1, H, W) at the input size."""

    def __init__(self, encoder: str = "efficientnet-lite0", *, pretrained: bool = True,
                 decoder: tuple[int, int, int, int, int] = (96, 64, 40, 24, 16), dropout: float = 0.0,
                 freeze: int = 2) -> None:
        super().__init__()
        from bglab.nets import build_backbone

        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")
        net = build_backbone(encoder, pretrained=pretrained)
        # keep the trunk only (the ImageNet head and classifier are not used for segmentation)
        self.stem = net.stem
        self.blocks = net.blocks
        for mod in [*self.stem.modules(), *self.blocks.modules()]:
            if isinstance(mod, ConvBN) and mod.stride == 2:
                mod.__class__ = _EvenSameConvBN  # same weights and keys; export-safe padding
        self.keep = [net.stage_ends[i] for i in (0, 1, 2, 4, 6)]
        with torch.no_grad():
            chans = [int(t.shape[1]) for t in self._stages(torch.zeros(1, 3, 64, 64))]
        self.config = dict(encoder=encoder, decoder=list(decoder), dropout=dropout, freeze=freeze)
        # the stem and the first ``freeze`` stages (strides 2 and 4: generic edges / colours, and most of the
        # training cost on CPU) keep their ImageNet weights and batch-norm statistics
        n_frozen = net.stage_ends[freeze - 1] + 1 if freeze > 0 else 0
        self.n_frozen = n_frozen
        for m in self._frozen_modules():
            for p in m.parameters():
                p.requires_grad_(False)
        c32 = chans[4]
        d16, d8, d4, d2, d1 = decoder
        self.up16 = DecoderBlock(c32, chans[3], d16, dropout)
        self.up8 = DecoderBlock(d16, chans[2], d8)
        self.up4 = DecoderBlock(d8, chans[1], d4)
        self.up2 = DecoderBlock(d4, chans[0], d2)
        self.final = nn.Sequential(_sep(d2, d1))
        self.head = nn.Conv2d(d1, 1, 1)

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        keep = set(self.keep)
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i in keep:
                outs.append(x)
        return outs

    def _frozen_modules(self) -> list[nn.Module]:
        return [self.stem, *list(self.blocks)[: self.n_frozen]] if self.n_frozen else []

    def train(self, mode: bool = True) -> EffUNet:
        super().train(mode)
        for m in self._frozen_modules():
            m.eval()  # frozen layers keep their batch-norm statistics
        return self

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The trainable encoder weights (the frozen stem / early stages are not included)."""
        return [p for p in [*self.stem.parameters(), *self.blocks.parameters()] if p.requires_grad]

    def decoder_parameters(self) -> list[nn.Parameter]:
        enc = {id(p) for p in [*self.stem.parameters(), *self.blocks.parameters()]}
        return [p for p in self.parameters() if id(p) not in enc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        s2, s4, s8, s16, s32 = self._stages(x)
        y = self.up16(s32, s16)
        y = self.up8(y, s8)
        y = self.up4(y, s4)
        y = self.up2(y, s2)
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return self.head(self.final(y))
