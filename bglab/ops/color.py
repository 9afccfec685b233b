"""Colour spill: suppress a screen's colour on the foreground; lightness equalised for detectors that miss dark or
flat-lit subjects (colours users type are read by bglab.io.colors)."""

from __future__ import annotations

import cv2
import numpy as np

from bglab.errors import BglabError, ConfigError
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


def equalize_lightness(image: np.ndarray, *, clip: float = 2.0, tiles: int = 4) -> np.ndarray:
    """``image`` (H, W, 3 uint8 RGB) with its lightness contrast-equalised tile by tile (CLAHE on L of Lab; hue
    and saturation kept): a second look for a detector on a dark, back-lit or colour-cast photo."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise BglabError(f"equalize_lightness needs an RGB uint8 array (H, W, 3), got {img.dtype} array of shape "
                         f"{img.shape}", hint="drop an alpha channel with image[..., :3]; stack a grey image to 3 "
                                              "channels")
    if not clip > 0 or int(tiles) < 1:
        raise ConfigError(f"equalize_lightness: clip must be > 0 and tiles >= 1, got {clip!r}, {tiles!r}")
    lab = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(int(tiles), int(tiles))).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
