"""Grad-CAM saliency (Selvaraju et al. 2017) for bglab's classifiers, and how much of it lies on the foreground.

- :func:`grad_cam`: class-discriminative heat maps ``(N, H, W)`` in [0, 1] from the gradients of the target
  logit at a conv layer (default: the model's last ``nn.Conv2d``), upsampled bilinearly to the input size.
- :func:`mass_inside`: the share of each map's mass inside a (foreground) mask: does the model look at the
  object or at the background?
- :func:`overlay_sheet`: a contact sheet of images with a jet overlay of their heat maps, for people.

The model is always left in eval mode with its hooks removed and no ``.grad`` on its parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from bglab.errors import BglabError

__all__ = ["SaliencyError", "cam_from_maps", "grad_cam", "last_conv", "mass_inside", "overlay_heat", "overlay_sheet"]


class SaliencyError(BglabError):
    """A saliency computation got unusable input (no conv layer, wrong shapes, mismatched counts)."""


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` in ``model.modules()`` order (the usual Grad-CAM layer)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise SaliencyError(f"{type(model).__name__} has no nn.Conv2d layer for Grad-CAM",
                            hint="pass layer= explicitly (a module whose output is (N, C, h, w))")
    return convs[-1]


def _targets(target: Any, n: int) -> torch.Tensor | None:
    if target is None:
        return None
    t = torch.as_tensor(np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target)).long().reshape(-1)
    if t.numel() == 1 and n > 1:
        t = t.expand(n)
    if t.numel() != n:
        raise SaliencyError(f"target has {t.numel()} class indices for {n} images",
                            hint="give one class index per image, or a single index for all, or None")
    return t


def grad_cam(model: nn.Module, x: torch.Tensor, target: Any = None, layer: nn.Module | None = None, *,
             batch: int = 64) -> np.ndarray:
    """Grad-CAM heat maps ``float32 (N, H, W)`` in [0, 1] for the normalised input ``x`` ``(N, C, H, W)``.

    ``target``: class index per image (or one for all); None = the predicted class. ``layer`` defaults to the
    last ``nn.Conv2d``. Each map is ReLU(sum_k w_k A_k) with ``w_k`` the spatial mean gradient, upsampled
    bilinearly and divided by its max (an all-zero map stays zero). ``A`` is the layer's output as the model
    uses it, so after an in-place ReLU that follows it (``cnn``: rectified maps; ``resnet18``: pre-activation).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise SaliencyError(f"grad_cam needs a (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}",
                            hint="add a batch axis with x[None]")
    n, _, h, w = x.shape
    tgt = _targets(target, n)
    if layer is None:  # a model may name its Grad-CAM layer (the pretrained classifiers: the last block)
        layer = getattr(model, "cam_layer", None) or last_conv(model)
    model.eval()
    device = next((p.device for p in model.parameters()), x.device)
    store: dict[str, torch.Tensor] = {}

    def _hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        # kept by reference: an in-place ReLU right after the layer (SmallVGG) rectifies it, as in the usual
        # Grad-CAM on rectified feature maps; the gradient is then taken with respect to that tensor
        store["act"] = out

    handle = layer.register_forward_hook(_hook)
    maps: list[np.ndarray] = []
    try:
        for s in range(0, n, max(1, int(batch))):
            xb = x[s:s + batch].to(device=device, dtype=torch.float32).detach().requires_grad_(True)
            store.clear()
            with torch.enable_grad():
                logits = model(xb)
                if logits.ndim != 2:
                    raise SaliencyError(f"model output has shape {tuple(logits.shape)}, expected (N, classes)")
                tb = logits.argmax(1) if tgt is None else tgt[s:s + batch].to(logits.device)
                if int(tb.max()) >= logits.shape[1] or int(tb.min()) < 0:
                    raise SaliencyError(f"target class out of range 0..{logits.shape[1] - 1}")
                score = logits.gather(1, tb[:, None]).sum()
                if "act" not in store:
                    raise SaliencyError(f"layer {type(layer).__name__} was not used by the model's forward pass")
                act = store["act"]
                if act.ndim != 4:
                    raise SaliencyError(f"layer output has shape {tuple(act.shape)}, expected (N, C, h, w)")
                grad = torch.autograd.grad(score, act, retain_graph=False)[0]
            with torch.no_grad():
                weights = grad.mean(dim=(2, 3), keepdim=True)
                cam = torch.relu((weights * act.detach()).sum(1, keepdim=True))
                cam = nn.functional.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
                cam = cam.clamp_min(0)
                mx = cam.flatten(1).max(1).values[:, None, None]
                cam = torch.where(mx > 0, cam / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(cam))
            maps.append(cam.cpu().numpy().astype(np.float32))
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
        store.clear()
    if not maps:
        return np.zeros((0, h, w), np.float32)
    return np.nan_to_num(np.concatenate(maps), nan=0.0).clip(0, 1).astype(np.float32)


def cam_from_maps(maps: torch.Tensor, weight: torch.Tensor, target: Any, size: tuple[int, int]) -> np.ndarray:
    """Grad-CAM of a linear head on globally averaged maps, from the maps alone: the gradient of logit ``c``
    with respect to map ``k`` is ``weight[c, k] / (h w)`` everywhere, so the map is ReLU(sum_k weight[c, k]
    A_k / (h w)), upsampled and divided by its max, as :func:`grad_cam` computes it at that layer.

    ``maps`` (N, K, h, w): the layer's output; ``weight`` (classes, K); ``target`` one class per image.
    """
    n, _, mh, mw = maps.shape
    t = _targets(target, n)
    with torch.no_grad():
        wts = (weight.detach().float()[t] / (mh * mw))[:, :, None, None]
        cam = torch.relu((wts * maps.float()).sum(1, keepdim=True))
        cam = nn.functional.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
        mx = cam.flatten(1).max(1).values[:, None, None]
        cam = torch.where(mx > 0, cam / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(cam))
    return np.nan_to_num(cam.numpy(), nan=0.0).clip(0, 1).astype(np.float32)


def mass_inside(heat: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share ``(N,)`` of each heat map's mass inside its bool mask (NaN where a map sums to 0).

    Masks of another size are resized (nearest) to the heat maps' size; ``masks`` may be one mask for all.
    """
    hm = np.asarray(heat, dtype=np.float64)
    if hm.ndim == 2:
        hm = hm[None]
    mk = np.asarray(masks)
    if mk.ndim == 2:
        mk = np.broadcast_to(mk[None], (hm.shape[0],) + mk.shape)
    if hm.ndim != 3 or mk.ndim != 3:
        raise SaliencyError(f"heat maps {hm.shape} and masks {mk.shape} must be (N, H, W)")
    if mk.shape[0] != hm.shape[0]:
        raise SaliencyError(f"{hm.shape[0]} heat maps but {mk.shape[0]} masks",
                            hint="give one mask per heat map (same order)")
    mk = mk > (127 if mk.dtype == np.uint8 else 0.5) if mk.dtype != bool else mk
    if mk.shape[1:] != hm.shape[1:]:
        hh, ww = hm.shape[1:]
        mk = np.stack([cv2.resize(m.astype(np.uint8), (ww, hh), interpolation=cv2.INTER_NEAREST) > 0 for m in mk])
    total = hm.sum(axis=(1, 2))
    inside = (hm * mk).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def overlay_heat(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8: ``image`` (grey / RGB / float) blended with the jet colour map of ``heat`` (resized to it)."""
    from bglab.ops.viz import to_rgb

    img = to_rgb(np.asarray(image))
    hm = np.asarray(heat, np.float32)
    if hm.shape != img.shape[:2]:
        hm = cv2.resize(hm, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    jet = cv2.applyColorMap(np.round(np.clip(hm, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    jet = cv2.cvtColor(jet, cv2.COLOR_BGR2RGB)
    out = img.astype(np.float32) * (1 - alpha) + jet.astype(np.float32) * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def overlay_sheet(images: Sequence[np.ndarray] | np.ndarray, heats: Sequence[np.ndarray] | np.ndarray,
                  titles: Sequence[str] | None = None, ncols: int = 8, *, cell: int = 128) -> np.ndarray:
    """Contact sheet (RGB uint8) of image | Grad-CAM overlay pairs, ``ncols`` pairs per row, captioned by titles."""
    from bglab.ops.viz import contact_sheet

    imgs = list(images)
    hts = list(heats)
    if len(imgs) != len(hts):
        raise SaliencyError(f"{len(imgs)} images but {len(hts)} heat maps")
    if titles is not None and len(titles) != len(imgs):
        raise SaliencyError(f"{len(imgs)} images but {len(titles)} titles")
    if not imgs:
        return np.full((8, 8, 3), 255, np.uint8)
    per = max(1, int(ncols))
    rows, labels = [], []
    for s in range(0, len(imgs), per):
        row: list[np.ndarray] = []
        for img, hm in zip(imgs[s:s + per], hts[s:s + per], strict=True):
            row += [np.asarray(img), overlay_heat(img, hm)]
        rows.append(row)
        if titles is not None:
            labels.append(" | ".join(str(t) for t in titles[s:s + per]))
    return contact_sheet(rows, cell=cell, row_labels=labels or None)
