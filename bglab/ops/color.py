"""Colour spill: suppress a screen's colour on the foreground (colours users type are read by bglab.io.colors)."""

from __future__ import annotations

import cv2
import numpy as np

from bglab.errors import ConfigError
from bglab.ops.mask import as_soft


def despill(image: np.ndarray, mask: np.ndarray, *, channel: str = "green", band: int = 3,
            strength: float = 1.0) -> np.ndarray:
    """Spill suppression: limit the screen channel to max(other two) on the foreground and a ``band``-px ring.

    ``mask`` is any mask bglab accepts (soft float, bool, uint8 0/255); its soft value, dilated by ``band``
    pixels, weights the correction (times ``strength``). Returns a new RGB uint8 image; skin (red above green)
    is unchanged, green-tinted edge pixels become neutral.
    """
    idx = {"red": 0, "green": 1, "blue": 2}.get(channel)
    if idx is None:
        raise ConfigError(f"unknown spill channel {channel!r}", hint="use green, blue or red")
    rgb = np.ascontiguousarray(image[..., :3])
    soft = as_soft(mask, rgb.shape[:2])
    if band > 0:
        size = 2 * band + 1
        soft = cv2.dilate(soft, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    w = np.clip(soft * float(strength), 0.0, 1.0)
    img = rgb.astype(np.float32)
    others = [c for c in range(3) if c != idx]
    limit = np.maximum(img[..., others[0]], img[..., others[1]])
    ch = img[..., idx]
    img[..., idx] = ch - w * np.maximum(ch - limit, 0.0)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if image.shape[-1] == 4:
        out = np.dstack([out, image[..., 3]])
    return out
