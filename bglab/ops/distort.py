"""Random distortions for robustness curves: pixel dropout and additive Gaussian noise (seedable)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bglab.errors import BglabError
from bglab.ops.mask import ParameterError

__all__ = ["gaussian_noise", "pixel_dropout"]

RngLike = np.random.Generator | int | None


def _check_uint8(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))):
        raise BglabError(
            f"expected a uint8 image (H, W) or (H, W, C), got {a.dtype} array of shape {a.shape}",
            hint="convert with np.clip(x, 0, 255).astype(np.uint8)",
        )
    return a


def pixel_dropout(
    image: np.ndarray, p: float, *, rng: RngLike = None, value: int | Sequence[int] = 0
) -> np.ndarray:
    """Set each pixel (all channels together) to ``value`` with probability ``p``; returns a new image."""
    img = _check_uint8(image)
    pf = float(p)
    if not (0.0 <= pf <= 1.0):
        raise ParameterError(f"dropout probability p must be in [0, 1], got {p!r}")
    vals = np.atleast_1d(np.asarray(value))
    if np.any(vals < 0) or np.any(vals > 255) or (img.ndim == 3 and vals.size not in (1, img.shape[2])):
        raise ParameterError(f"dropout value {value!r} must be one int or one per channel, each 0..255")
    gen = np.random.default_rng(rng)
    drop = gen.random(img.shape[:2]) < pf
    out = img.copy()
    out[drop] = vals.astype(np.uint8) if img.ndim == 3 else np.uint8(vals[0])
    return out


def gaussian_noise(image: np.ndarray, sigma: float, *, rng: RngLike = None) -> np.ndarray:
    """Add N(0, ``sigma``) noise per value (0..255 units), round and clip to uint8; sigma 0 = unchanged copy."""
    img = _check_uint8(image)
    s = float(sigma)
    if not (math.isfinite(s) and s >= 0):
        raise ParameterError(f"noise sigma must be >= 0 (in 0..255 units), got {sigma!r}")
    if s == 0:
        return img.copy()
    gen = np.random.default_rng(rng)
    noisy = img.astype(np.float32) + gen.normal(0.0, s, size=img.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
