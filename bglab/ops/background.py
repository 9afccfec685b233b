"""Background edits: cut out, fill, blur, replace or remove the background (or the foreground).

Every function takes an RGB ``uint8 (H, W, 3)`` image and a mask (anything ``as_soft`` accepts, same H, W)
and blends with the soft mask as alpha: ``out = image * a + other * (1 - a)``, rounded to uint8. A binary
mask therefore changes exactly the background pixels and keeps the foreground pixels bit for bit.

Names of the paper-style variants: ``only_foreground`` = Only-FG, ``remove_foreground`` = No-FG,
``fill_box(mode="black")`` = Only-BG-B, ``fill_box(mode="tiles")`` = Only-BG-T.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from bglab.ops.box import Box
from bglab.errors import BglabError
from bglab.ops.geometry import box_to_pixels
from bglab.ops.mask import ParameterError, as_soft, binarize

__all__ = [
    "FIT_MODES",
    "blur_background",
    "composite",
    "cutout",
    "fill_background",
    "fill_box",
    "largest_background_rect",
    "only_foreground",
    "remove_foreground",
    "replace_background",
]

FIT_MODES = ("cover", "stretch", "tile")
Color = Sequence[int] | int


def _check_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise BglabError(
            f"{name} must be an RGB uint8 array (H, W, 3), got {a.dtype} array of shape {a.shape}",
            hint="drop an alpha channel with image[..., :3]; stack a grey image to 3 channels",
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise BglabError(f"{name} is empty (shape {a.shape})")
    return a


def _color(color: Color) -> np.ndarray:
    c = (int(color),) * 3 if isinstance(color, int | np.integer) else tuple(int(v) for v in color)
    if len(c) != 3 or not all(0 <= v <= 255 for v in c):
        raise ParameterError(f"colour must be an int or three ints in 0..255, got {color!r}")
    return np.array(c, dtype=np.float32)


def _alpha(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    return as_soft(mask, image.shape)[:, :, None]


def _blend(top: np.ndarray, bottom: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``top * alpha + bottom * (1 - alpha)`` rounded to uint8; exact where alpha is 0 or 1."""
    out = top.astype(np.float32) * alpha + np.asarray(bottom, dtype=np.float32) * (1.0 - alpha)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def cutout(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGBA ``(H, W, 4)`` uint8: the image with the soft mask as alpha (255 = foreground)."""
    img = _check_rgb(image)
    a = as_soft(mask, img.shape)
    out = np.empty(img.shape[:2] + (4,), dtype=np.uint8)
    out[:, :, :3] = img
    out[:, :, 3] = np.clip(np.floor(a * 255.0 + 0.5), 0, 255).astype(np.uint8)
    return out


def fill_background(image: np.ndarray, mask: np.ndarray, color: Color = (255, 255, 255)) -> np.ndarray:
    """Replace the background with a flat colour (white by default)."""
    img = _check_rgb(image)
    return _blend(img, _color(color), _alpha(mask, img))


def only_foreground(image: np.ndarray, mask: np.ndarray, color: Color = (0, 0, 0)) -> np.ndarray:
    """Only-FG: keep the foreground, paint the background ``color`` (black)."""
    return fill_background(image, mask, color)


def remove_foreground(image: np.ndarray, mask: np.ndarray, color: Color = (0, 0, 0)) -> np.ndarray:
    """No-FG: paint the foreground silhouette ``color`` (black), keep the background."""
    img = _check_rgb(image)
    return _blend(np.broadcast_to(_color(color), img.shape), img, _alpha(mask, img))


def blur_background(image: np.ndarray, mask: np.ndarray, strength: float = 15) -> np.ndarray:
    """Gaussian-blur the background (sigma = ``strength`` px; 0 = unchanged), keep the foreground sharp.

    The blur is normalised by the background weight, so foreground colours do not bleed into the
    background as a halo (which would leak the object's shape into it).
    """
    img = _check_rgb(image)
    s = float(strength)
    if not (math.isfinite(s) and s >= 0):
        raise ParameterError(f"blur strength must be >= 0 (a Gaussian sigma in pixels), got {strength!r}")
    alpha = _alpha(mask, img)
    if s == 0:
        return img.copy()
    bgw = 1.0 - alpha[:, :, 0]
    f = img.astype(np.float32)
    num = cv2.GaussianBlur(f * bgw[:, :, None], (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(bgw, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT)[:, :, None]
    plain = cv2.GaussianBlur(f, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT)
    ok = den > 1e-3
    blurred = np.where(ok, num / np.where(ok, den, 1.0), plain)
    return _blend(img, blurred, alpha)


def _fit_background(background: np.ndarray, width: int, height: int, fit: str) -> np.ndarray:
    bg = np.asarray(background)
    if bg.dtype == np.uint8 and bg.ndim == 2:
        bg = np.repeat(bg[:, :, None], 3, axis=2)
    elif bg.dtype == np.uint8 and bg.ndim == 3 and bg.shape[2] == 4:
        bg = bg[:, :, :3]
    bg = _check_rgb(bg, "background")
    bh, bw = bg.shape[:2]
    if fit == "stretch":
        interp = cv2.INTER_AREA if bw >= width and bh >= height else cv2.INTER_LINEAR
        return cv2.resize(bg, (width, height), interpolation=interp)
    if fit == "cover":
        s = max(width / bw, height / bh)
        nw = max(width, math.ceil(bw * s - 1e-6))
        nh = max(height, math.ceil(bh * s - 1e-6))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        big = cv2.resize(bg, (nw, nh), interpolation=interp) if (nw, nh) != (bw, bh) else bg
        x0, y0 = (nw - width) // 2, (nh - height) // 2
        return big[y0 : y0 + height, x0 : x0 + width]
    if fit == "tile":
        reps = (math.ceil(height / bh), math.ceil(width / bw), 1)
        return np.tile(bg, reps)[:height, :width]
    raise ParameterError(f"unknown background fit {fit!r}", hint=f"use one of {', '.join(FIT_MODES)}")


def replace_background(
    image: np.ndarray, mask: np.ndarray, background: np.ndarray, *, fit: str = "cover"
) -> np.ndarray:
    """Put the foreground on another background of any size.

    ``fit``: cover = scale to cover the image then centre-crop; stretch = resize to the image size
    (aspect ratio not kept); tile = repeat from the top-left corner.
    """
    img = _check_rgb(image)
    alpha = _alpha(mask, img)
    bg = _fit_background(background, img.shape[1], img.shape[0], fit)
    return _blend(img, bg, alpha)


def composite(foreground_image: np.ndarray, mask: np.ndarray, background_image: np.ndarray) -> np.ndarray:
    """Paste the foreground image over a same-size background image, with the soft mask as alpha."""
    fg = _check_rgb(foreground_image, "foreground image")
    bg = _check_rgb(background_image, "background image")
    if fg.shape != bg.shape:
        raise BglabError(
            f"foreground is {fg.shape[0]}x{fg.shape[1]} but background is {bg.shape[0]}x{bg.shape[1]}",
            hint="use replace_background to fit a background of another size",
        )
    return _blend(fg, bg, _alpha(mask, fg))


def _largest_rect_in_grid(allowed: np.ndarray) -> tuple[int, int, int, int, int]:
    """Largest all-True axis-aligned rectangle: ``(area, r0, c0, r1, c1)`` (histogram-stack method)."""
    rows, cols = allowed.shape
    heights = np.zeros(cols, dtype=np.int64)
    best = (0, 0, 0, 0, 0)
    for r in range(rows):
        heights = np.where(allowed[r], heights + 1, 0)
        stack: list[tuple[int, int]] = []
        for c, hc in enumerate([*heights.tolist(), 0]):
            start = c
            while stack and stack[-1][1] >= hc:
                sc, sh = stack.pop()
                area = sh * (c - sc)
                if area > best[0]:
                    best = (area, r - sh + 1, sc, r + 1, c)
                start = sc
            stack.append((start, hc))
    return best


def largest_background_rect(
    width: int, height: int, box: tuple[int, int, int, int], fg: np.ndarray | None = None
) -> tuple[int, int, int, int] | None:
    """Largest rectangle ``(x0, y0, x1, y1)`` with no pixel in ``box`` (integers) and none in ``fg``.

    Without ``fg`` it is exactly the largest of the four strips left / right / above / below the box
    (ties in that order). With ``fg`` it is searched on a grid of square cells of
    ``ceil(max(H, W) / 160)`` px (a cell counts only if all its pixels are free), so it may be a few
    pixels smaller than the true optimum but never touches the box or the foreground. None if nothing is free.
    """
    x0, y0, x1, y1 = box
    if fg is None:
        strips = [
            (x0 * height, (0, 0, x0, height)),
            ((width - x1) * height, (x1, 0, width, height)),
            (y0 * width, (0, 0, width, y0)),
            ((height - y1) * width, (0, y1, width, height)),
        ]
        area, rect = max(strips, key=lambda t: t[0])  # max keeps the first of equal areas
        return rect if area > 0 else None
    free = ~fg.astype(bool)
    free[y0:y1, x0:x1] = False
    cell = max(1, math.ceil(max(height, width) / 160))
    gh, gw = math.ceil(height / cell), math.ceil(width / cell)
    padded = np.zeros((gh * cell, gw * cell), dtype=bool)
    padded[:height, :width] = free
    grid = padded.reshape(gh, cell, gw, cell).all(axis=(1, 3))
    area, r0, c0, r1, c1 = _largest_rect_in_grid(grid)
    if area == 0:
        return None
    return (c0 * cell, r0 * cell, min(c1 * cell, width), min(r1 * cell, height))


def fill_box(
    image: np.ndarray, box: Box, *, mode: str = "black", mask: np.ndarray | None = None
) -> np.ndarray:
    """Hide the object's box: Only-BG-B (``mode="black"``) or Only-BG-T (``mode="tiles"``).

    Tiles rule: take ``largest_background_rect`` (outside the box and, if ``mask`` is given, outside its
    foreground) and repeat it over the box from the box's top-left corner. If no such rectangle exists,
    fill with the mean colour of the remaining free pixels, or black if there are none. The box is clipped
    to the image; a NaN, reversed, zero-size or wholly outside box raises BoxError.
    """
    img = _check_rgb(image)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box_to_pixels(box, w, h)
    out = img.copy()
    if mode == "black":
        out[y0:y1, x0:x1] = 0
        return out
    if mode != "tiles":
        raise ParameterError(f"unknown fill_box mode {mode!r}", hint="use 'black' or 'tiles'")
    fg = binarize(as_soft(mask, img.shape)) if mask is not None else None
    rect = largest_background_rect(w, h, (x0, y0, x1, y1), fg)
    bh, bw = y1 - y0, x1 - x0
    if rect is not None:
        rx0, ry0, rx1, ry1 = rect
        patch = img[ry0:ry1, rx0:rx1]
        reps = (math.ceil(bh / patch.shape[0]), math.ceil(bw / patch.shape[1]), 1)
        out[y0:y1, x0:x1] = np.tile(patch, reps)[:bh, :bw]
        return out
    free = np.ones((h, w), dtype=bool) if fg is None else ~fg
    free[y0:y1, x0:x1] = False
    mean = img[free].mean(axis=0) if free.any() else np.zeros(3)
    out[y0:y1, x0:x1] = np.clip(np.floor(mean + 0.5), 0, 255).astype(np.uint8)
    return out
