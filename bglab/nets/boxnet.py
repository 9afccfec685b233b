"""The box + label network (:class:`BoxLabelNet`) and what running it needs: load a checkpoint, predict.

Kept apart from its training (:mod:`bglab.train.detector`) so that the ``box-model`` locator runs a
``.safetensors`` model without importing the trainer. Inputs are float32 NCHW RGB scaled to [0, 1] and
normalised with :data:`MEAN` / :data:`STD` (:func:`to_tensor`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bglab.errors import BglabError, ConfigError
from bglab.io.tensorfiles import read_tensors

__all__ = ["ARCH_KEYS", "MEAN", "STD", "BoxLabelNet", "TinyResNet", "load_detector", "order_corners", "predict",
           "to_tensor"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ARCH_KEYS = ("n_classes", "width", "size", "dropout")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (1x1 projection when shapes change)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.proj is None else self.proj(x)), inplace=True)


class TinyResNet(nn.Module):
    """Compact ResNet-style backbone: stem (stride 2) + 4 stages x 2 blocks; total stride 16."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = int(width)
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        chans = [w, 2 * w, 4 * w, 8 * w]
        layers: list[nn.Module] = []
        cin = w
        for i, c in enumerate(chans):
            layers += [BasicBlock(cin, c, 1 if i == 0 else 2), BasicBlock(c, c)]
            cin = c
        self.stages = nn.Sequential(*layers)
        self.out_channels = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class BoxLabelNet(nn.Module):
    """Backbone + box head (sigmoid normalised xyxy) + label head (logits). Input: (N, 3, size, size)."""

    def __init__(self, n_classes: int, *, width: int = 16, size: int = 96, dropout: float = 0.2) -> None:
        super().__init__()
        if size % 16 or size < 32:
            raise ConfigError(f"detector input size must be a multiple of 16 and >= 32, got {size}",
                              hint="e.g. --size 96")
        if n_classes < 1:
            raise ConfigError(f"need at least one class, got {n_classes}")
        self.n_classes, self.width, self.size, self.dropout = int(n_classes), int(width), int(size), float(dropout)
        self.backbone = TinyResNet(width)
        c = self.backbone.out_channels
        cells = (size // 16) ** 2
        self.box_reduce = nn.Sequential(nn.Conv2d(c, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.box_head = nn.Sequential(nn.Flatten(), nn.Linear(32 * cells, 256), nn.ReLU(inplace=True),
                                      nn.Dropout(dropout), nn.Linear(256, 4))
        self.label_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(c, n_classes))

    def arch(self) -> dict[str, Any]:
        return {"n_classes": self.n_classes, "width": self.width, "size": self.size, "dropout": self.dropout}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.backbone(x)
        box = torch.sigmoid(self.box_head(self.box_reduce(f)))
        return box, self.label_head(f)


def order_corners(b: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes with x0 <= x1 and y0 <= y1 (min / max of each pair)."""
    return torch.stack([torch.minimum(b[:, 0], b[:, 2]), torch.minimum(b[:, 1], b[:, 3]),
                        torch.maximum(b[:, 0], b[:, 2]), torch.maximum(b[:, 1], b[:, 3])], dim=1)


def to_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """RGB uint8 (H, W, 3) image(s) -> normalised float32 NCHW tensor."""
    arr = np.asarray(images if isinstance(images, np.ndarray) else np.stack(list(images)))
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ConfigError(f"expected RGB images (N, H, W, 3), got shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def load_detector(path: str | Path) -> tuple[BoxLabelNet, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`save_detector`; returns (model in eval mode, info)."""
    p = Path(path)
    if not p.is_file():
        raise BglabError("detector checkpoint not found", path=p, hint="train one with `bglab train-det`")
    try:
        meta, state = read_tensors(p)
        arch = json.loads(meta["arch"])
        classes = json.loads(meta["classes"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise BglabError(f"not a bglab box + label checkpoint (metadata {exc} missing or broken)", path=p,
                         hint="use best.safetensors from a `bglab train-det` run") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
        raise BglabError(f"cannot read checkpoint: {exc}", path=p, hint="the file is corrupt; train again") from None
    model = BoxLabelNet(**{k: arch[k] for k in ARCH_KEYS})
    model.load_state_dict(state)
    model.eval()
    info = {"arch": arch, "classes": classes, "extra": json.loads(meta.get("extra", "{}"))}
    return model, info


@torch.no_grad()
def predict(model: BoxLabelNet, images: np.ndarray | Sequence[np.ndarray], *, batch: int = 64
            ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4, normalised ordered xyxy) and class probabilities (N, C) for RGB uint8 crops of the model size."""
    model.eval()
    imgs = list(images) if not isinstance(images, np.ndarray) or images.ndim == 4 else [images]
    boxes, probs = [], []
    for i in range(0, len(imgs), batch):
        b, logits = model(to_tensor(imgs[i:i + batch]))
        boxes.append(order_corners(b).numpy())
        probs.append(torch.softmax(logits, 1).numpy())
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0, model.n_classes), np.float32)
    return np.concatenate(boxes), np.concatenate(probs)
