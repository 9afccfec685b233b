"""Geometry: crop to a box, resize with aspect-preserving padding (and map boxes back), greyscale.

Sizes given as a tuple are ``(width, height)`` (like OpenCV and PIL); an int means a square.
Every function returns new arrays and works on ``(H, W)``, ``(H, W, 3)`` and ``(H, W, 4)`` uint8 images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from bglab.ops.box import Box
from bglab.errors import BglabError, BoxError
from bglab.ops.mask import ParameterError, as_soft

__all__ = [
    "INTERPOLATIONS",
    "PadTransform",
    "box_to_pixels",
    "crop_to_box",
    "expand_box_for_region",
    "pad_transform",
    "resize",
    "resize_mask_pad",
    "resize_pad",
    "to_grey",
]

INTERPOLATIONS: dict[str, int] = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}

Size = int | tuple[int, int]


def _check_any_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))):
        raise BglabError(
            f"expected a uint8 image (H, W), (H, W, 3) or (H, W, 4), got {a.dtype} array of shape {a.shape}",
            hint="convert with np.clip(x, 0, 255).astype(np.uint8)",
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise BglabError(f"image is empty (shape {a.shape})")
    return a


def _parse_size(size: Size) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        w = h = int(size)
    else:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"size must be an int or (width, height), got {size!r}") from exc
    if w < 1 or h < 1:
        raise ParameterError(f"size must be positive, got {size!r}")
    return w, h


def _interp(name: str) -> int:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ParameterError(
            f"unknown interpolation {name!r}", hint=f"use one of {', '.join(INTERPOLATIONS)}"
        ) from None


def box_to_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer rectangle ``(x0, y0, x1, y1)`` covering the box, clipped to the image; BoxError if unusable.

    Unusable: NaN, reversed, zero-size or wholly outside; a partly-outside box is clipped.
    """
    fatal = [p for p in box.problems(width, height) if p not in ("negative", "partly-outside")]
    if fatal:
        raise BoxError(
            f"unusable box {box.xyxy} for a {width}x{height} image: {', '.join(fatal)}",
            hint="check the annotation; Box.repair fixes zero-size boxes",
        )
    x0, y0, x1, y1 = box.to_int()
    x0, x1 = max(0, x0), min(width, x1)
    y0, y1 = max(0, y0), min(height, y1)
    if x1 <= x0 or y1 <= y0:  # pragma: no cover - excluded by problems() above
        raise BoxError(f"box {box.xyxy} has no pixels inside the {width}x{height} image")
    return x0, y0, x1, y1


def _shift_inside(lo: float, hi: float, size: int) -> tuple[float, float]:
    """Shift [lo, hi) to lie inside [0, size) when it fits; otherwise leave it for clamping."""
    if hi - lo <= size:
        if lo < 0:
            lo, hi = 0.0, hi - lo
        elif hi > size:
            lo, hi = lo - (hi - size), float(size)
    return lo, hi


def crop_to_box(
    image: np.ndarray, box: Box, *, margin: float = 0.0, square: bool = False
) -> tuple[np.ndarray, Box]:
    """Crop the image to the box grown by ``margin`` (fraction of box size per side), clamped to the image.

    ``square`` grows the shorter side to the longer one about the centre, shifting the square inside the
    image where it fits. Returns the crop (a copy) and the integer box actually used.
    """
    img = _check_any_image(image)
    h, w = img.shape[:2]
    box_to_pixels(box, w, h)  # validates
    if not (math.isfinite(margin) and margin > -0.5):
        raise ParameterError(f"crop margin must be > -0.5 (a fraction of the box size), got {margin!r}")
    b = box.pad(margin, relative=True)
    if square:
        side = max(b.width, b.height)
        cx, cy = b.center
        x0, x1 = _shift_inside(cx - side / 2, cx + side / 2, w)
        y0, y1 = _shift_inside(cy - side / 2, cy + side / 2, h)
        b = Box(x0, y0, x1, y1)
    x0, y0, x1, y1 = box_to_pixels(b.clamp(w, h), w, h)
    return img[y0:y1, x0:x1].copy(), Box(x0, y0, x1, y1)


def expand_box_for_region(box: Box, factor: float, width: int, height: int) -> Box:
    """Uniformly expand a foreground box by ``factor`` about its centre, clamped to the image.

    Used to shrink the background-only region around an object (a margin against loose boxes).
    """
    if not (math.isfinite(factor) and factor >= 1.0):
        raise ParameterError(f"region expansion factor must be >= 1, got {factor!r}")
    return box.expand(factor).clamp(width, height)


@dataclass(frozen=True)
class PadTransform:
    """How ``resize_pad`` mapped an input image into its output: resize to ``new_*`` size, then offset."""

    in_width: int
    in_height: int
    out_width: int
    out_height: int
    new_width: int
    new_height: int
    offset_x: int
    offset_y: int

    @property
    def scale_x(self) -> float:
        """Horizontal output pixels per input pixel (equal to ``scale_y`` up to rounding of the size)."""
        return self.new_width / self.in_width

    @property
    def scale_y(self) -> float:
        """Vertical output pixels per input pixel."""
        return self.new_height / self.in_height

    @property
    def scale(self) -> float:
        """The aspect-preserving scale factor (output pixels per input pixel) before rounding."""
        return min(self.out_width / self.in_width, self.out_height / self.in_height)

    @property
    def content_box(self) -> Box:
        """Where the resized image lies inside the output (the non-padding area)."""
        return Box(
            self.offset_x, self.offset_y, self.offset_x + self.new_width, self.offset_y + self.new_height
        )

    def box_to_output(self, box: Box) -> Box:
        """Map a box in input-image pixels to output-image pixels."""
        return Box(
            box.x0 * self.new_width / self.in_width + self.offset_x,
            box.y0 * self.new_height / self.in_height + self.offset_y,
            box.x1 * self.new_width / self.in_width + self.offset_x,
            box.y1 * self.new_height / self.in_height + self.offset_y,
        )

    def box_to_input(self, box: Box) -> Box:
        """Map a box in output-image pixels back to input-image pixels (inverse of ``box_to_output``)."""
        return Box(
            (box.x0 - self.offset_x) * self.in_width / self.new_width,
            (box.y0 - self.offset_y) * self.in_height / self.new_height,
            (box.x1 - self.offset_x) * self.in_width / self.new_width,
            (box.y1 - self.offset_y) * self.in_height / self.new_height,
        )


def pad_transform(in_width: int, in_height: int, size: Size) -> PadTransform:
    """The transform ``resize_pad`` uses: fit inside ``size`` keeping aspect ratio, centred."""
    out_w, out_h = _parse_size(size)
    if in_width < 1 or in_height < 1:
        raise ParameterError(f"input size must be positive, got {in_width}x{in_height}")
    s = min(out_w / in_width, out_h / in_height)
    new_w = min(out_w, max(1, round(in_width * s)))
    new_h = min(out_h, max(1, round(in_height * s)))
    return PadTransform(
        in_width=int(in_width),
        in_height=int(in_height),
        out_width=out_w,
        out_height=out_h,
        new_width=new_w,
        new_height=new_h,
        offset_x=(out_w - new_w) // 2,
        offset_y=(out_h - new_h) // 2,
    )


def _pad_value(color: int | tuple[int, ...], channels: int) -> tuple[int, ...]:
    c = (int(color),) * 3 if isinstance(color, int | np.integer) else tuple(int(v) for v in color)
    if channels == 1:
        if len(c) == 1:
            return c
        r, g, b = (c + (0, 0))[:3]
        return (round(0.299 * r + 0.587 * g + 0.114 * b),)
    if len(c) == 1:
        c = c * 3
    if channels == 4 and len(c) == 3:
        c = c + (0,)  # transparent padding
    if len(c) != channels:
        raise ParameterError(f"pad colour {color!r} does not fit an image with {channels} channels")
    return c


def resize(image: np.ndarray, size: Size, interpolation: str = "area") -> np.ndarray:
    """Resize to exactly ``size`` = (width, height) or a square int, ignoring aspect ratio."""
    img = _check_any_image(image)
    w, h = _parse_size(size)
    out = cv2.resize(img, (w, h), interpolation=_interp(interpolation))
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out)


def resize_pad(
    image: np.ndarray,
    size: Size,
    *,
    pad_color: int | tuple[int, ...] = (0, 0, 0),
    interpolation: str = "area",
) -> tuple[np.ndarray, PadTransform]:
    """Resize keeping the aspect ratio, centred and padded to exactly ``size``; returns image and transform.

    RGBA images are padded with transparent pixels (alpha 0) unless ``pad_color`` gives four values.
    """
    img = _check_any_image(image)
    t = pad_transform(img.shape[1], img.shape[0], size)
    new_w, new_h = t.new_width, t.new_height
    inner = resize(img, (new_w, new_h), interpolation)
    channels = 1 if img.ndim == 2 else img.shape[2]
    value = _pad_value(pad_color, channels)
    shape = (t.out_height, t.out_width) if img.ndim == 2 else (t.out_height, t.out_width, channels)
    out = np.empty(shape, dtype=np.uint8)
    out[...] = value if img.ndim == 3 else value[0]
    out[t.offset_y : t.offset_y + new_h, t.offset_x : t.offset_x + new_w] = inner
    return out, t


def resize_mask_pad(mask: np.ndarray, size: Size) -> tuple[np.ndarray, PadTransform]:
    """``resize_pad`` for masks: bool/uint8 masks use nearest neighbour and keep their dtype; float masks
    are resized bilinearly to float32 in [0, 1]. Padding is background (0)."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        as_soft(m)  # raises the standard MaskError for bad shapes
        raise BglabError(f"mask is empty (shape {m.shape})")
    t = pad_transform(m.shape[1], m.shape[0], size)
    new_w, new_h = t.new_width, t.new_height
    if m.dtype in (np.bool_, np.uint8):
        src = m.astype(np.uint8)
        inner = cv2.resize(src, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        out = np.zeros((t.out_height, t.out_width), dtype=m.dtype)
        out[t.offset_y : t.offset_y + new_h, t.offset_x : t.offset_x + new_w] = inner.astype(m.dtype)
        return out, t
    soft = as_soft(m)
    inner = cv2.resize(soft, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((t.out_height, t.out_width), dtype=np.float32)
    out[t.offset_y : t.offset_y + new_h, t.offset_x : t.offset_x + new_w] = np.clip(inner, 0.0, 1.0)
    return out, t


def to_grey(image: np.ndarray, *, keep_channels: bool = False) -> np.ndarray:
    """ITU-R 601 luma (as ``cv2.COLOR_RGB2GRAY``): ``(H, W)`` uint8, or ``(H, W, 3)`` with ``keep_channels``.

    Used to remove colour cues while keeping the classifier's 3-channel input shape.
    """
    img = _check_any_image(image)
    if img.ndim == 2:
        grey = img.copy()
    elif img.shape[2] == 1:
        grey = img[:, :, 0].copy()
    elif img.shape[2] == 3:
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    else:
        grey = cv2.cvtColor(img, cv2.COLOR_RGBA2GRAY)
    if keep_channels:
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    return grey
