"""Foreground masks: convert any accepted mask to a soft float32 mask, binarize and clean it up.

Accepted inputs: ``bool``; ``uint8`` 0..255 (a uint8 mask whose maximum is 1 is read as a 0/1 label mask);
other integer types holding 0/1 or 0..255 (``uint16`` also 0..65535); floats in [0, 1]. Shape ``(H, W)`` or
``(H, W, 1)``. A pixel is foreground when its soft value is strictly greater than ``threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from bglab.errors import ConfigError, MaskError

__all__ = [
    "ParameterError",
    "as_soft",
    "binarize",
    "component_count",
    "coverage",
    "feather",
    "fill_holes",
    "guided_filter",
    "keep_components",
    "keep_largest_component",
    "refine",
]


class ParameterError(ConfigError, ValueError):
    """An operation got an out-of-range parameter (negative radius, probability above 1, unknown mode)."""


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (0.0 <= t < 1.0):
        raise ParameterError(
            f"mask threshold must be in [0, 1), got {threshold!r}", hint="the usual value is 0.5"
        )
    return t


def as_soft(mask: np.ndarray, shape: Sequence[int] | None = None) -> np.ndarray:
    """Convert any accepted mask to a new float32 ``(H, W)`` array in [0, 1]; check it against ``shape``.

    ``shape`` is the image's shape (``(H, W)`` or ``(H, W, C)``; only H and W are compared).
    """
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.ndim != 2:
        detail = f"{m.shape[2]} channels" if m.ndim == 3 else f"{m.ndim} dimensions"
        raise MaskError(
            f"a mask must be (H, W) or (H, W, 1), got shape {m.shape} ({detail})",
            hint="is this an RGB image rather than a mask? convert it to a single channel first",
        )
    if shape is not None:
        if len(shape) < 2:
            raise MaskError(
                f"expected an image shape (H, W[, C]) to check the mask against, got {tuple(shape)}"
            )
        want = (int(shape[0]), int(shape[1]))
        if m.shape != want:
            raise MaskError(
                f"mask is {m.shape[0]}x{m.shape[1]} (HxW) but the image is {want[0]}x{want[1]}",
                hint="regenerate the mask for this image, or resize it to the image size (nearest neighbour)",
            )
    if m.dtype == np.bool_:
        return m.astype(np.float32)
    if np.issubdtype(m.dtype, np.integer):
        if m.size == 0:
            return m.astype(np.float32)
        lo, hi = int(m.min()), int(m.max())
        if lo < 0:
            raise MaskError(f"integer mask has negative values (min {lo})", hint="masks hold 0..255 or 0/1")
        if hi <= 1:
            return m.astype(np.float32)
        if hi <= 255:
            return m.astype(np.float32) / np.float32(255.0)
        if m.dtype == np.uint16:
            return (m.astype(np.float64) / 65535.0).astype(np.float32)
        raise MaskError(
            f"integer mask values must lie in 0..255, got a maximum of {hi}",
            hint="is this a label image? compare it with the label you want (mask == k)",
        )
    if np.issubdtype(m.dtype, np.floating):
        out = m.astype(np.float32)  # always a copy
        if out.size == 0:
            return out
        if not np.isfinite(out).all():
            raise MaskError("float mask contains NaN or infinite values", hint="check the segmenter output")
        lo, hi = float(out.min()), float(out.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise MaskError(
                f"float mask values must lie in [0, 1], got range [{lo:g}, {hi:g}]",
                hint="divide a 0..255 mask by 255 first",
            )
        np.clip(out, 0.0, 1.0, out=out)
        return out
    raise MaskError(f"unsupported mask dtype {m.dtype}", hint="use bool, uint8 0..255 or float32 in [0, 1]")


def binarize(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Boolean foreground mask: soft value strictly above ``threshold``."""
    t = _check_threshold(threshold)
    m = np.asarray(mask)
    if m.dtype == np.bool_ and m.ndim in (2, 3):
        return as_soft(m) > t if m.ndim == 3 else m.copy()
    return as_soft(m) > t


def _components(fg: np.ndarray, connectivity: int = 8) -> tuple[int, np.ndarray, np.ndarray]:
    """Label connected foreground components; returns (count incl. background, labels, areas per label)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=connectivity)
    return n, labels, stats[:, cv2.CC_STAT_AREA]


def keep_largest_component(mask: np.ndarray, *, min_area: int = 0, threshold: float = 0.5) -> np.ndarray:
    """Boolean mask of the largest 8-connected foreground component (empty if it is below ``min_area``)."""
    fg = binarize(mask, threshold)
    n, labels, areas = _components(fg)
    if n <= 1:
        return np.zeros_like(fg)
    best = 1 + int(np.argmax(areas[1:]))
    if areas[best] < min_area:
        return np.zeros_like(fg)
    return labels == best


def keep_components(mask: np.ndarray, min_fraction: float, *, threshold: float = 0.5) -> np.ndarray:
    """Boolean mask of the 8-connected components at least ``min_fraction`` of the largest one's area."""
    if not (0.0 <= min_fraction <= 1.0):
        raise ParameterError(f"min_fraction must be in [0, 1], got {min_fraction!r}")
    fg = binarize(mask, threshold)
    n, labels, areas = _components(fg)
    if n <= 1:
        return np.zeros_like(fg)
    keep = np.zeros(n, dtype=bool)
    keep[1:] = areas[1:] >= min_fraction * areas[1:].max()
    return keep[labels]


def fill_holes(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Boolean mask with enclosed background holes filled (background not 4-connected to the border)."""
    fg = binarize(mask, threshold)
    if fg.size == 0:
        return fg
    n, labels, _ = _components(~fg, connectivity=4)
    if n <= 1:
        return fg
    border = np.unique(np.concatenate([labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]]))
    outside = np.zeros(n, dtype=bool)
    outside[border] = True
    outside[0] = True  # label 0 = foreground itself; it stays foreground via ``fg``
    return fg | ~outside[labels]


def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """Soften mask edges: Gaussian blur (sigma = ``radius`` px) of the soft mask; radius 0 = unchanged copy."""
    r = float(radius)
    if not (np.isfinite(r) and r >= 0):
        raise ParameterError(f"feather radius must be >= 0, got {radius!r}")
    soft = as_soft(mask)
    if r == 0 or soft.size == 0:
        return soft
    out = cv2.GaussianBlur(soft, (0, 0), sigmaX=r, sigmaY=r, borderType=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def guided_filter(image: np.ndarray, mask: np.ndarray, radius: int, eps: float = 0.1) -> np.ndarray:
    """Snap a soft mask's edges to the image's (He et al., guided image filtering, 2010): locally the output is
    a linear function of the grey image fitted to the mask in each (2 radius + 1)^2 window, so a blurry edge
    follows the object's outline; ``eps`` (on [0, 1] grey) sets how strong an image edge must be to be
    followed. Returns float32 in [0, 1]; radius 0 = unchanged copy."""
    r, e = int(radius), float(eps)
    if r < 0 or not (np.isfinite(e) and e > 0):
        raise ParameterError(f"guided filter: radius must be >= 0 and eps > 0, got {radius!r}, {eps!r}")
    soft = as_soft(mask)
    img = np.asarray(image)
    if img.shape[:2] != soft.shape:
        raise ParameterError(f"guided filter: image {img.shape[:2]} and mask {soft.shape} differ in size")
    if r == 0 or soft.size == 0:
        return soft.copy()
    grey = img if img.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
    scale = 65535.0 if grey.dtype == np.uint16 else 255.0 if grey.dtype == np.uint8 else 1.0
    g = grey.astype(np.float32) / scale

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)

    mg, mp = mean(g), mean(soft)
    a = (mean(g * soft) - mg * mp) / (mean(g * g) - mg * mg + e)
    b = mp - a * mg
    return np.clip(mean(a) * g + mean(b), 0.0, 1.0).astype(np.float32, copy=False)


def refine(
    mask: np.ndarray,
    *,
    threshold: float = 0.5,
    largest: bool = True,
    fill: bool = True,
    feather_radius: float = 0.0,
    min_fraction: float | None = None,
    soft_edge: bool = False,
) -> np.ndarray:
    """Clean a predicted mask: binarize, drop stray components, fill holes, then feather (float32).

    ``largest`` keeps only the largest component; ``min_fraction`` instead keeps every component at least
    that fraction of the largest (several hands survive, specks do not). ``soft_edge`` keeps the input's
    soft values in a 2-pixel band around the kept region, so anti-aliased edges are not lost.
    """
    if min_fraction is not None:
        fg = keep_components(mask, min_fraction, threshold=threshold)
    elif largest:
        fg = keep_largest_component(mask, threshold=threshold)
    else:
        fg = binarize(mask, threshold)
    if fill:
        fg = fill_holes(fg)
    out = fg.astype(np.float32)
    if soft_edge and fg.any():
        band = cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2).astype(bool)
        out = np.maximum(out, np.where(band, as_soft(mask, fg.shape), 0.0)).astype(np.float32)
    return feather(out, feather_radius)


def coverage(mask: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of pixels that are foreground (0 for an empty array)."""
    fg = binarize(mask, threshold)
    return float(fg.mean()) if fg.size else 0.0


def component_count(mask: np.ndarray, threshold: float = 0.5, min_area: int = 1) -> int:
    """Number of 8-connected foreground components with at least ``min_area`` pixels."""
    fg = binarize(mask, threshold)
    n, _, areas = _components(fg)
    return int((areas[1:] >= min_area).sum()) if n > 1 else 0
