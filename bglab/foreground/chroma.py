"""Chroma key for green / blue screens: the ``chroma`` segmenter backend.

How a mask is made (all in OpenCV HSV: hue 0..179, saturation and value 0..255):

1. **Key colour.** ``key="auto"`` takes the median hue / saturation / value of the image's border pixels
   (all four sides; the hand covers a minority of them). ``"green"`` / ``"blue"`` fix the hue (60 / 120) and
   take saturation / value from the border pixels of about that hue (defaults when there are none);
   ``"#rrggbb"`` is used as given.
2. **Distance.** Every pixel's distance to the key is a weighted Euclidean distance in normalised HSV:
   hue difference on the circle (wrap-around handled; 90 hue units = 1.0) with weight 1, saturation
   difference with weight 0.6 and value difference with weight 0.15 -- value counts little so that shadows
   on the screen (darker, same hue) stay background.
3. **Soft edge.** Alpha (foreground) is 0 at distance <= ``tolerance`` and rises linearly to 1 at
   ``tolerance + softness``.
4. **Clean-up** on the binary mask (alpha >= 0.5): morphological open (drops specks) and close (bridges
   one-pixel gaps), keep the largest component (``largest``), fill holes (``fill_holes``). The soft edge is
   kept within a few pixels of the cleaned region; deep inside it alpha is 1 and outside it 0.

**No screen.** When ``key="auto"`` finds no plausible screen on the border (median saturation below 60, or
fewer than half of the border pixels within the tolerance of the median colour: a photo, a greyscale
image), nothing is keyed out and the mask is all foreground (1.0); likewise when a fixed key colour matches
nothing. Quality control (:mod:`bglab.foreground.key`) rejects such masks by their foreground fraction.

**Spill.** :func:`bglab.ops.color.despill` limits the screen's channel (green: G <= max(R, B); blue:
B <= max(R, G)) on the foreground and a band around it; call it on the image before compositing onto a new background
(:meth:`ChromaKeySegmenter.despill` does this when the segmenter was created with ``despill=True``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bglab.errors import ConfigError
from bglab.foreground.base import SegmenterBase
from bglab.io.configfile import check_bool
from bglab.ops.color import despill

# Weights of the normalised HSV distance (hue, saturation, value).
W_HUE, W_SAT, W_VAL = 1.0, 0.6, 0.15
DEFAULT_TOLERANCE = 0.2
DEFAULT_SOFTNESS = 0.1
MIN_KEY_SATURATION = 60.0  # below this the border is not a coloured screen
MIN_BORDER_MATCH = 0.5  # fraction of border pixels that must be within tolerance of the auto key
NAMED_KEYS = {"green": 60.0, "blue": 120.0}  # OpenCV hue
_DEFAULT_SV = (200.0, 150.0)
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class KeyColour:
    """A key colour in OpenCV HSV (hue 0..179, saturation and value 0..255)."""

    h: float
    s: float
    v: float

    @property
    def channel(self) -> str:
        """The RGB channel the screen lights up: 'green' for hues 30..89, 'blue' for 90..149, else 'red'."""
        if 30 <= self.h < 90:
            return "green"
        if 90 <= self.h < 150:
            return "blue"
        return "red"


@dataclass
class ChromaResult:
    """Everything one keying pass produced (used by quality control in :mod:`bglab.foreground.key`)."""

    mask: np.ndarray  # float32 (H, W) in [0, 1], cleaned
    raw: np.ndarray  # bool (H, W): alpha >= 0.5 after open/close, before largest-component and hole filling
    key: KeyColour | None  # None when no screen was found
    screen_found: bool


def _hsv(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise ConfigError(
            f"chroma key needs an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}",
            hint="read images with bglab.io.files.read_image",
        )
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2HSV).astype(np.float32)


def _border(hsv: np.ndarray, width: int = 2) -> np.ndarray:
    w = max(1, min(width, hsv.shape[0] // 2, hsv.shape[1] // 2))
    parts = [hsv[:w].reshape(-1, 3), hsv[-w:].reshape(-1, 3), hsv[w:-w, :w].reshape(-1, 3),
             hsv[w:-w, -w:].reshape(-1, 3)]
    return np.concatenate(parts)


def _circular_median_hue(h: np.ndarray) -> float:
    """Median hue that survives wrap-around (red screens straddle 0/180): rotate so the mode sits mid-range."""
    hist = np.bincount(np.clip(h.astype(np.int64), 0, 179), minlength=180)
    shift = 90 - int(np.argmax(hist))
    return float((np.median((h + shift) % 180) - shift) % 180)


def hsv_distance(hsv: np.ndarray, key: KeyColour) -> np.ndarray:
    """Weighted normalised HSV distance of every pixel to the key (float32, hue wrap-around handled)."""
    dh = np.abs(hsv[..., 0] - key.h)
    dh = np.minimum(dh, 180.0 - dh) / 90.0
    ds = (hsv[..., 1] - key.s) / 255.0
    dv = (hsv[..., 2] - key.v) / 255.0
    return np.sqrt((W_HUE * dh) ** 2 + (W_SAT * ds) ** 2 + (W_VAL * dv) ** 2).astype(np.float32)


def parse_key(key: str) -> str | KeyColour:
    """Validate a ``key`` option: 'auto', 'green', 'blue' or '#rrggbb' (returned as a :class:`KeyColour`)."""
    k = key.strip().lower()
    if k in ("auto", *NAMED_KEYS):
        return k
    m = _HEX.match(k)
    if not m:
        raise ConfigError(f"unknown key colour {key!r}", hint="use auto, green, blue or #rrggbb")
    rgb = np.array([[[int(m.group(1)[i:i + 2], 16) for i in (0, 2, 4)]]], dtype=np.uint8)
    h, s, v = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[0, 0].astype(float)
    return KeyColour(h, s, v)


def estimate_key(image: np.ndarray, key: str | KeyColour = "auto", *,
                 tolerance: float = DEFAULT_TOLERANCE) -> KeyColour | None:
    """The key colour for one image; None when ``key='auto'`` finds no plausible screen on the border."""
    spec = parse_key(key) if isinstance(key, str) else key
    if isinstance(spec, KeyColour):
        return spec
    border = _border(_hsv(image))
    if spec in NAMED_KEYS:
        hue = NAMED_KEYS[spec]
        dh = np.abs(border[:, 0] - hue)
        near = border[(np.minimum(dh, 180 - dh) <= 20) & (border[:, 1] >= MIN_KEY_SATURATION)]
        if len(near) < max(8, len(border) // 10):
            return KeyColour(hue, *_DEFAULT_SV)
        return KeyColour(hue, float(np.median(near[:, 1])), float(np.median(near[:, 2])))
    k = KeyColour(_circular_median_hue(border[:, 0]), float(np.median(border[:, 1])),
                  float(np.median(border[:, 2])))
    if k.s < MIN_KEY_SATURATION:
        return None
    if float(np.mean(hsv_distance(border[None], k) <= tolerance)) < MIN_BORDER_MATCH:
        return None
    return k


def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _largest_component(binary: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if n <= 2:
        return binary
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def _fill_holes(binary: np.ndarray) -> np.ndarray:
    """Fill background regions that do not reach the image border."""
    inv = (~binary).astype(np.uint8)
    n, labels = cv2.connectedComponents(inv, connectivity=4)
    if n <= 1:
        return binary
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.isin(labels, edge[edge > 0])
    return binary | ~outside & (inv > 0)


class ChromaKeySegmenter(SegmenterBase):
    """Chroma-key segmenter (see the module docstring for the algorithm and its options)."""

    name = "chroma"

    def __init__(self, *, key: str = "auto", tolerance: float = DEFAULT_TOLERANCE,
                 softness: float = DEFAULT_SOFTNESS, despill: bool = True, largest: bool = True,
                 fill_holes: bool = True) -> None:
        if not (0.0 < tolerance < 2.0):
            raise ConfigError(f"chroma tolerance must be in (0, 2), got {tolerance}",
                              hint=f"the default is {DEFAULT_TOLERANCE}")
        if not (0.0 <= softness < 2.0):
            raise ConfigError(f"chroma softness must be in [0, 2), got {softness}",
                              hint=f"the default is {DEFAULT_SOFTNESS}")
        self.key_spec = parse_key(key)
        self.tolerance = float(tolerance)
        self.softness = float(softness)
        self.use_despill = check_bool("despill", despill, text=True)
        self.largest = check_bool("largest", largest, text=True)
        self.fill_holes = check_bool("fill_holes", fill_holes, text=True)

    def analyse(self, image: np.ndarray) -> ChromaResult:
        """Key one image; returns the cleaned soft mask plus the raw binary mask and the key colour used."""
        hsv = _hsv(image)
        h, w = hsv.shape[:2]
        key = estimate_key(image, self.key_spec, tolerance=self.tolerance)
        if key is None:
            ones = np.ones((h, w), np.float32)
            return ChromaResult(ones, np.ones((h, w), bool), None, False)
        d = hsv_distance(hsv, key)
        if self.softness > 0:
            alpha = np.clip((d - self.tolerance) / self.softness, 0.0, 1.0)
        else:
            alpha = (d > self.tolerance).astype(np.float32)
        binary = (alpha >= 0.5).astype(np.uint8)
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, _ellipse(3))
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, _ellipse(5)).astype(bool)
        raw = binary.copy()
        if self.largest:
            binary = _largest_component(binary)
        if self.fill_holes:
            binary = _fill_holes(binary)
        u8 = binary.astype(np.uint8)
        near = cv2.dilate(u8, _ellipse(5)).astype(bool)
        core = cv2.erode(u8, _ellipse(5)).astype(bool)
        mask = np.where(near, alpha, 0.0).astype(np.float32)
        mask[core] = 1.0
        return ChromaResult(mask, raw, key, True)

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        """Soft foreground mask (float32 (H, W) in [0, 1]); all ones when no screen is found."""
        return self.analyse(image).mask

    def despill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The image with spill suppressed under ``mask`` (unchanged when created with ``despill=False``)."""
        if not self.use_despill:
            return image
        channel = self.key_spec.channel if isinstance(self.key_spec, KeyColour) else (
            "blue" if self.key_spec == "blue" else "green")
        if self.key_spec == "auto":
            key = estimate_key(image, "auto", tolerance=self.tolerance)
            channel = key.channel if key is not None else "green"
        return despill(image, mask, channel=channel)


def create(runtime: object = None, *, key: str = "auto", tolerance: float = DEFAULT_TOLERANCE,
           softness: float = DEFAULT_SOFTNESS, despill: bool = True, largest: bool = True,
           fill_holes: bool = True) -> ChromaKeySegmenter:
    """Factory for the registry (``--backend chroma``); ``runtime`` is unused (pure OpenCV, single thread)."""
    return ChromaKeySegmenter(key=key, tolerance=tolerance, softness=softness, despill=despill,
                              largest=largest, fill_holes=fill_holes)
