"""Pictures for people: contact sheets, mask overlays and checkerboards (pure numpy + OpenCV, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def checkerboard(height: int, width: int, *, square: int = 8) -> np.ndarray:
    """A light grey checkerboard (RGB uint8), the usual backdrop that shows transparency."""
    yy, xx = np.mgrid[0:height, 0:width]
    light = ((yy // square + xx // square) % 2 == 0)
    out = np.where(light[..., None], 235, 200).astype(np.uint8)
    return np.repeat(out, 3, axis=2)


def flatten_rgba(rgba: np.ndarray, backdrop: np.ndarray | None = None) -> np.ndarray:
    """Composite an RGBA image over a backdrop (default: checkerboard) to RGB for display."""
    if rgba.ndim == 3 and rgba.shape[2] == 3:
        return rgba
    h, w = rgba.shape[:2]
    bd = checkerboard(h, w) if backdrop is None else backdrop
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgba[..., :3] * a + bd * (1 - a)).astype(np.uint8)


def overlay_mask(image: np.ndarray, mask: np.ndarray, *, color: tuple[int, int, int] = (255, 0, 255),
                 alpha: float = 0.45) -> np.ndarray:
    """Tint the foreground of ``mask`` (soft or binary, same H, W) over an RGB image."""
    m = mask.astype(np.float32)
    if m.max() > 1.0:
        m = m / 255.0
    m = (m * alpha)[..., None]
    tint = np.array(color, np.float32)[None, None, :]
    return np.round(image[..., :3] * (1 - m) + tint * m).astype(np.uint8)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Any display image (grey, RGB, RGBA, float mask in [0, 1]) as RGB uint8."""
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:
        return flatten_rgba(image)
    return image


def fit_cell(image: np.ndarray, cell: int, *, pad: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    """Resize an image to fit a ``cell`` x ``cell`` square, keeping aspect, padded with ``pad``."""
    img = to_rgb(image)
    h, w = img.shape[:2]
    s = cell / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interp)
    out = np.empty((cell, cell, 3), np.uint8)
    out[:] = pad
    y, x = (cell - nh) // 2, (cell - nw) // 2
    out[y:y + nh, x:x + nw] = small
    return out


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray]],
    *,
    cell: int = 160,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    frame_colors: Sequence[tuple[int, int, int] | None] | None = None,
    gap: int = 4,
) -> np.ndarray:
    """Tile rows of images into one RGB sheet, with optional row / column captions and a frame per row."""
    n_cols = max((len(r) for r in rows), default=0)
    top = 22 if col_labels else 0
    label_h = 18 if row_labels else 0
    H = top + len(rows) * (cell + label_h + gap) + gap
    W = n_cols * (cell + gap) + gap
    sheet = np.full((max(H, 1), max(W, 1), 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    if col_labels:
        for j, text in enumerate(col_labels):
            cv2.putText(sheet, str(text)[:28], (gap + j * (cell + gap) + 2, 16), font, 0.45, (0, 0, 0), 1,
                        cv2.LINE_AA)
    for i, row in enumerate(rows):
        y = top + gap + i * (cell + label_h + gap)
        if row_labels:
            cv2.putText(sheet, str(row_labels[i])[: max(8, W // 8)], (gap + 2, y + 13), font, 0.42,
                        (0, 0, 0), 1, cv2.LINE_AA)
        for j, img in enumerate(row):
            x = gap + j * (cell + gap)
            sheet[y + label_h:y + label_h + cell, x:x + cell] = fit_cell(img, cell)
        color = frame_colors[i] if frame_colors else None
        if color is not None:
            cv2.rectangle(sheet, (1, y - 2), (W - 2, y + label_h + cell + 1), color, 3)
    return sheet
