"""Colours: read a colour the user typed, and suppress a screen's colour spill on the foreground."""

from __future__ import annotations

import cv2
import numpy as np

from bglab.errors import ConfigError
from bglab.ops.mask import as_soft

_NAMES = {"white": (255, 255, 255), "black": (0, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
          "grey": (128, 128, 128), "gray": (128, 128, 128), "red": (255, 0, 0)}


def parse_color(text: str) -> tuple[int, int, int]:
    """Parse ``#rrggbb``, ``r,g,b`` or a few names (white, black, green, blue, grey) into an RGB tuple."""
    t = text.strip().lower()
    if t in _NAMES:
        return _NAMES[t]
    try:
        if t.startswith("#") and len(t) == 7:
            return (int(t[1:3], 16), int(t[3:5], 16), int(t[5:7], 16))
        parts = [int(p) for p in t.split(",")]
        if len(parts) == 3 and all(0 <= p <= 255 for p in parts):
            return (parts[0], parts[1], parts[2])
    except ValueError:
        pass
    raise ConfigError(f"cannot read colour {text!r}", hint="use #rrggbb, r,g,b (0-255) or a name like white")


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
