"""Seeded augmentation of training batches as tensors: geometry, photometry, flips, dropout, noise, and background
swapping between training images; every draw comes from a generator seeded by (seed, epoch), so resuming repeats it."""

from __future__ import annotations

from typing import Any

from bglab.io.seeds import derive_seed

__all__ = ["apply_bg_swap", "augment", "augment_selected", "bg_swap_plan"]


def _affine(x: Any, sel: Any, aug: Any, g: Any) -> Any:
    """Random rotation / zoom / shift of the selected images of a float batch (edges replicated)."""
    import math

    import torch
    import torch.nn.functional as F  # noqa: N812

    n = x.shape[0]
    u = torch.rand((n, 4), generator=g) * 2 - 1  # in [-1, 1): angle, zoom, dx, dy
    angle = u[:, 0] * math.radians(aug.rotate)
    zoom = 1.0 + u[:, 1] * aug.scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * 2 * aug.shift], 1),
                         torch.stack([sin, cos, u[:, 3] * 2 * aug.shift], 1)], 1)
    theta[~sel] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _photometric(x: Any, sel: Any, aug: Any, g: Any) -> Any:
    """Random brightness (a factor) and contrast (around each image's mean) of the selected images."""
    import torch

    n = x.shape[0]
    u = torch.rand((n, 2), generator=g) * 2 - 1
    b = torch.where(sel, 1.0 + u[:, 0] * aug.brightness, torch.ones(n))[:, None, None, None]
    c = torch.where(sel, 1.0 + u[:, 1] * aug.contrast, torch.ones(n))[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean).mul_(b).clamp_(0.0, 1.0)


def _grey(x: Any) -> Any:
    """The luma (ITU-R BT.601) of an RGB float batch, (N, 1, H, W)."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


def _colour(x: Any, sel: Any, aug: Any, g: Any) -> Any:
    """Random white balance (a gain per channel), saturation and grey of the selected images of an RGB batch;
    a grey batch (1 channel) is returned as it is, after the same draws."""
    import torch

    n = x.shape[0]
    u = torch.rand((n, 5), generator=g) * 2 - 1  # R, G, B gains, saturation, grey
    if x.shape[1] != 3:
        return x
    s4 = sel[:, None, None, None]
    if aug.white_balance > 0:
        x = torch.where(s4, x * (1.0 + u[:, :3] * aug.white_balance)[:, :, None, None], x)
    if aug.saturation > 0:
        grey = _grey(x)
        x = torch.where(s4, grey + (x - grey) * (1.0 + u[:, 3] * aug.saturation)[:, None, None, None], x)
    if aug.grey > 0:
        to_grey = sel & ((u[:, 4] + 1) / 2 < aug.grey)
        x = torch.where(to_grey[:, None, None, None], _grey(x).expand_as(x), x)
    return x.clamp_(0.0, 1.0)


def _blur(x: Any, sel: Any, aug: Any, g: Any) -> Any:
    """Gaussian blur of the selected images, each with its own sigma drawn in [0, ``aug.blur``] px."""
    import math

    import torch
    import torch.nn.functional as F  # noqa: N812

    sigmas = torch.rand(x.shape[0], generator=g) * aug.blur
    out = x.clone()
    for i in torch.nonzero(sel).flatten().tolist():
        sigma = float(sigmas[i])
        r = min(math.ceil(3 * sigma), (min(x.shape[-2:]) - 1) // 2)
        if sigma < 0.3 or r < 1:  # below a third of a pixel the kernel is the identity
            continue
        t = torch.arange(-r, r + 1, dtype=x.dtype)
        k = torch.exp(-(t * t) / (2 * sigma * sigma))
        k = k / k.sum()
        c = x.shape[1]
        img = F.pad(x[i:i + 1], (r, r, r, r), mode="reflect")
        img = F.conv2d(img, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        out[i:i + 1] = F.conv2d(img, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out


def augment(x: Any, aug: Any, g: Any) -> Any:
    """Seeded augmentation of a float batch in [0, 1]: rotation / zoom / shift, brightness / contrast, colour
    (white balance, saturation, grey), blur, flip, 90-degree rotation (square inputs), pixel dropout, Gaussian
    noise (0..255 units)."""
    return augment_selected(x, aug, g)[0]


def augment_selected(x: Any, aug: Any, g: Any) -> tuple[Any, Any]:
    """:func:`_augment`, also returning which images it may have changed (bool (N,))."""
    import torch

    n = x.shape[0]
    sel = torch.rand(n, generator=g) < aug.p
    if aug.geometric:
        x = _affine(x, sel, aug, g)
    if aug.brightness > 0 or aug.contrast > 0:
        x = _photometric(x, sel, aug, g)
    if aug.colour:  # only drawn when on, so configs without it augment as before, bit for bit
        x = _colour(x, sel, aug, g)
    if aug.blur > 0:
        x = _blur(x, sel, aug, g)
    if aug.flip:
        f = sel & (torch.rand(n, generator=g) < 0.5)
        x = torch.where(f[:, None, None, None], x.flip(-1), x)
    if aug.rot90:  # every arm ends with a square resize
        k = torch.randint(0, 4, (n,), generator=g)
        for turns in (1, 2, 3):
            r = sel & (k == turns)
            if r.any():
                x = torch.where(r[:, None, None, None], torch.rot90(x, turns, dims=(-2, -1)), x)
    if aug.dropout > 0:
        drop = torch.rand((n, 1, *x.shape[2:]), generator=g) < aug.dropout
        x = x.masked_fill(drop & sel[:, None, None, None], 0.0)
    if aug.noise > 0:
        noise = torch.randn(x.shape, generator=g) * (aug.noise / 255.0)
        x = (x + noise * sel[:, None, None, None]).clamp_(0.0, 1.0)
    return x, sel


def bg_swap_plan(seed: int, epoch: int, n: int, p: float) -> tuple[Any, Any]:
    """Which of ``n`` training images get a swapped background in ``epoch`` (prob. ``p``) and whose (another one).

    Depends only on ``(seed, epoch)``, so a resumed run swaps exactly as an uninterrupted one.
    """
    import torch

    g = torch.Generator().manual_seed(derive_seed(seed, "bg_swap", epoch))
    sel = torch.rand(n, generator=g) < p
    if n < 2:
        return torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.long)
    partner = torch.randint(0, n - 1, (n,), generator=g)
    partner = partner + (partner >= torch.arange(n)).long()  # never the image itself
    return sel, partner


def apply_bg_swap(x: Any, keep: Any, bg: Any, sel: Any) -> Any:
    """``x`` (uint8 N,C,H,W) with the background pixels (``keep`` False) of the selected images taken from ``bg``."""
    import torch

    return torch.where(keep | ~sel[:, None, None, None], x, bg)
