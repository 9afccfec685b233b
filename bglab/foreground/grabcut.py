"""``grabcut``: OpenCV GrabCut seeded by boxes (a locator's, or the image minus a border), no model needed.

Every box is marked "probably foreground", everything else "background"; GrabCut then fits its colour models
on a copy downscaled to ``max_side`` and the result (definite + probable foreground = 1.0) is scaled back up.
Boxes from several objects (two hands) seed one cut. No box found -> an empty mask.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bglab.errors import ConfigError
from bglab.foreground.base import Locator, SegmenterBase, rgb_input
from bglab.foreground.registry import Runtime
from bglab.ops.box import Box


class GrabCutSegmenter(SegmenterBase):
    """GrabCut from boxes; ``locator`` None means one box: the image minus ``border`` on each side."""

    name = "grabcut"

    def __init__(
        self,
        locator: Locator | None = None,
        *,
        border: float = 0.05,
        iterations: int = 3,
        max_side: int = 512,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= border < 0.5:
            raise ConfigError(f"grabcut border must be in [0, 0.5), got {border!r}", hint="e.g. border=0.05")
        if int(iterations) < 1:
            raise ConfigError(f"grabcut iterations must be >= 1, got {iterations!r}")
        if int(max_side) < 16:
            raise ConfigError(f"grabcut max_side must be >= 16, got {max_side!r}")
        self.locator = locator
        self.border = float(border)
        self.iterations = int(iterations)
        self.max_side = int(max_side)
        self.seed = int(seed)

    def boxes(self, image: np.ndarray, *, source: Path | None = None) -> list[Box]:
        """The seed boxes for ``image`` in its own pixel coordinates (may be empty)."""
        h, w = image.shape[:2]
        if self.locator is None:
            bx, by = self.border * w, self.border * h
            return [Box(bx, by, w - bx, h - by)]
        return list(self.locator.locate(image, source=source))

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        img = rgb_input(image, "grabcut")
        h, w = img.shape[:2]
        boxes = [b.clamp(w, h) for b in self.boxes(img, source=source) if b.is_valid]
        small, scale = downscale(img, self.max_side)
        sh, sw = small.shape[:2]
        seed = np.full((sh, sw), cv2.GC_BGD, np.uint8)
        for b in boxes:
            x0, y0 = math.floor(b.x0 * sw / w), math.floor(b.y0 * sh / h)
            x1, y1 = math.ceil(b.x1 * sw / w), math.ceil(b.y1 * sh / h)
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                seed[y0:y1, x0:x1] = cv2.GC_PR_FGD
        return cut(small, seed, (h, w), iterations=self.iterations, rng_seed=self.seed)


def downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` shrunk so its longer side is at most ``max_side`` (GrabCut's cost grows with pixels), and the scale."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def cut(small: np.ndarray, seed: np.ndarray, size: tuple[int, int], *, iterations: int, rng_seed: int) -> np.ndarray:
    """Run GrabCut on ``small`` from the label map ``seed`` (GC_* values, edited in place); the (H, W) = ``size``
    float32 mask of definite + probable foreground. No foreground seed -> empty; a degenerate image (flat
    colours) -> the seeded foreground only."""
    h, w = size
    if not ((seed == cv2.GC_PR_FGD) | (seed == cv2.GC_FGD)).any():
        return np.zeros((h, w), np.float32)
    if not ((seed == cv2.GC_BGD) | (seed == cv2.GC_PR_BGD)).any():  # seeds cover everything: frame = probable bg
        frame = np.zeros(seed.shape, bool)
        frame[[0, -1], :] = frame[:, [0, -1]] = True
        seed[frame & (seed == cv2.GC_PR_FGD)] = cv2.GC_PR_BGD
        if not (seed == cv2.GC_PR_FGD).any() and not (seed == cv2.GC_FGD).any():
            return np.zeros((h, w), np.float32)
    fallback = (seed == cv2.GC_FGD).astype(np.float32)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(rng_seed)  # GrabCut's k-means init draws from OpenCV's RNG: same image, same mask
    try:
        cv2.grabCut(np.ascontiguousarray(small), seed, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
        fg = ((seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)).astype(np.float32)
    except cv2.error:  # degenerate colour statistics (e.g. a flat image): nothing to separate
        fg = fallback
    if fg.shape == (h, w):
        return fg
    out = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0, out=out)


def create(
    runtime: Runtime,
    *,
    locator: str | None = None,
    border: float = 0.05,
    iterations: int = 3,
    max_side: int = 512,
    **locator_options: Any,
) -> GrabCutSegmenter:
    """GrabCut seeded by the named locator's boxes (options other than these go to the locator) or a border."""
    from bglab.foreground import registry

    if locator_options and locator is None:
        unknown = ", ".join(sorted(locator_options))
        raise ConfigError(f"unknown grabcut options: {unknown}", hint="options: locator, border, iterations, max_side")
    loc = None
    if locator is not None:
        loc = registry.create(locator, kind="locator", runtime=runtime, **locator_options)
    return GrabCutSegmenter(loc, border=border, iterations=iterations, max_side=max_side)
