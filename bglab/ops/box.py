"""Bounding boxes: one immutable ``Box`` type (float pixel corners, exclusive right/bottom edge).

Conventions: ``x0, y0`` is the top-left corner, ``x1, y1`` the bottom-right corner *excluded*, so a box
covering pixel columns 2..4 is ``Box(2, 0, 5, ...)`` and its width is ``x1 - x0 = 3``. Normalised
coordinates divide by the image width/height. Nothing here reorders corners silently: a reversed box is a
problem to report (``problems``/``validate``), not something to fix by guessing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bglab.errors import BoxError
from bglab.ops.mask import binarize

__all__ = ["Box", "box_iou_matrix", "iou"]


def _check_size(width: float, height: float) -> None:
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise BoxError(
            f"image size must be positive and finite, got width={width!r}, height={height!r}",
            hint="pass the image's width and height in pixels",
        )


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates: corners ``(x0, y0)`` and exclusive ``(x1, y1)``, as floats."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "x1", "y1"):
            object.__setattr__(self, name, float(getattr(self, name)))

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_xyxy(cls, x0: float, y0: float, x1: float, y1: float) -> Box:
        """Box from corner coordinates (right/bottom exclusive)."""
        return cls(x0, y0, x1, y1)

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> Box:
        """Box from top-left corner plus width and height (COCO style)."""
        return cls(x, y, x + w, y + h)

    @classmethod
    def from_normalized(cls, x0: float, y0: float, x1: float, y1: float, width: float, height: float) -> Box:
        """Box from corners given as fractions of the image ``width`` and ``height``."""
        _check_size(width, height)
        return cls(x0 * width, y0 * height, x1 * width, y1 * height)

    @classmethod
    def from_cxcywh(cls, cx: float, cy: float, w: float, h: float, width: float, height: float) -> Box:
        """Box from a normalised centre and size (YOLO style), scaled to an image of ``width`` x ``height``."""
        _check_size(width, height)
        return cls((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)

    @classmethod
    def from_mask(cls, mask: np.ndarray, threshold: float = 0.5) -> Box | None:
        """Tight box around the foreground pixels (soft value > ``threshold``); None when there are none."""
        fg = binarize(mask, threshold)
        rows = np.flatnonzero(fg.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(fg.any(axis=0))
        return cls(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)

    # ----------------------------------------------------------------- views
    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """Corners ``(x0, y0, x1, y1)``."""
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        """Top-left corner plus size ``(x0, y0, width, height)``."""
        return (self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0)

    def normalized(self, width: float, height: float) -> tuple[float, float, float, float]:
        """Corners as fractions of the image size ``(x0/W, y0/H, x1/W, y1/H)``."""
        _check_size(width, height)
        return (self.x0 / width, self.y0 / height, self.x1 / width, self.y1 / height)

    def cxcywh_normalized(self, width: float, height: float) -> tuple[float, float, float, float]:
        """Normalised centre and size ``(cx, cy, w, h)`` (YOLO style)."""
        _check_size(width, height)
        cx, cy = self.center
        return (cx / width, cy / height, self.width / width, self.height / height)

    @property
    def width(self) -> float:
        """``x1 - x0`` (negative for a reversed box)."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """``y1 - y0`` (negative for a reversed box)."""
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        """Area in square pixels; 0 for a zero-size, reversed or NaN box."""
        if not self.is_valid:
            return 0.0
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        """Centre point ``(cx, cy)``."""
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    @property
    def is_valid(self) -> bool:
        """True when all corners are finite and the box has positive width and height."""
        return all(math.isfinite(v) for v in self.xyxy) and self.x1 > self.x0 and self.y1 > self.y0

    # ----------------------------------------------------------------- checks
    def problems(self, width: float | None = None, height: float | None = None) -> list[str]:
        """Names of everything wrong with the box: nan, negative, reversed, zero-width, zero-height,
        and (given the image size) outside-image or partly-outside."""
        if not all(math.isfinite(v) for v in self.xyxy):
            return ["nan"]
        out: list[str] = []
        if min(self.xyxy) < 0:
            out.append("negative")
        if self.x1 < self.x0 or self.y1 < self.y0:
            out.append("reversed")
        if self.x1 == self.x0:
            out.append("zero-width")
        if self.y1 == self.y0:
            out.append("zero-height")
        if width is not None and height is not None:
            _check_size(width, height)
            lo_x, hi_x = sorted((self.x0, self.x1))
            lo_y, hi_y = sorted((self.y0, self.y1))
            if _outside(lo_x, hi_x, width) or _outside(lo_y, hi_y, height):
                out.append("outside-image")
            elif lo_x < 0 or lo_y < 0 or hi_x > width or hi_y > height:
                out.append("partly-outside")
        return out

    def validate(self, width: float | None = None, height: float | None = None) -> Box:
        """Return the box unchanged, or raise BoxError naming every problem found by ``problems``."""
        found = self.problems(width, height)
        if found:
            size = f" in a {width:g}x{height:g} image" if width is not None and height is not None else ""
            raise BoxError(
                f"invalid box {self.xyxy}{size}: {', '.join(found)}",
                hint="boxes are (x0, y0, x1, y1) pixel corners with x1 > x0, y1 > y0, inside the image; "
                "Box.repair clips and widens where that is safe",
            )
        return self

    def clamp(self, width: float, height: float) -> Box:
        """Clip every corner into the image ``[0, width] x [0, height]`` (may leave a zero-size box)."""
        _check_size(width, height)
        return Box(
            min(max(self.x0, 0.0), width),
            min(max(self.y0, 0.0), height),
            min(max(self.x1, 0.0), width),
            min(max(self.y1, 0.0), height),
        )

    def repair(self, width: float, height: float) -> Box:
        """The reference fix for annotation data: clip to the image, widen a zero-size side to 1 px inside it.

        Raises BoxError for NaN, reversed (corners are never swapped: that is a guess) or wholly outside.
        """
        _check_size(width, height)
        found = self.problems(width, height)
        fatal = [p for p in found if p in ("nan", "reversed", "outside-image")]
        if fatal:
            raise BoxError(
                f"cannot repair box {self.xyxy} in a {width:g}x{height:g} image: {', '.join(fatal)}",
                hint="drop this box or fix its annotation by hand",
            )
        b = self.clamp(width, height)
        x0, y0, x1, y1 = b.xyxy
        if x1 == x0:  # at 0 in an image under 1 px wide: the whole width
            x0, x1 = (x0, x0 + 1) if x0 + 1 <= width else (max(0.0, x1 - 1), x1 or width)
        if y1 == y0:
            y0, y1 = (y0, y0 + 1) if y0 + 1 <= height else (max(0.0, y1 - 1), y1 or height)
        return Box(x0, y0, x1, y1)

    # ----------------------------------------------------------------- transforms
    def expand(self, factor: float) -> Box:
        """Scale width and height by ``factor`` about the centre (1 = same, 2 = twice as wide and tall)."""
        if not (math.isfinite(factor) and factor >= 0):
            raise BoxError(f"expand factor must be finite and >= 0, got {factor!r}", hint="use e.g. 1.2")
        cx, cy = self.center
        hw, hh = self.width * factor / 2, self.height * factor / 2
        return Box(cx - hw, cy - hh, cx + hw, cy + hh)

    def pad(self, margin: float, *, relative: bool = True) -> Box:
        """Grow each side by ``margin``: a fraction of the box width/height (relative) or pixels."""
        if not math.isfinite(margin):
            raise BoxError(f"pad margin must be finite, got {margin!r}")
        mx, my = (margin * self.width, margin * self.height) if relative else (margin, margin)
        return Box(self.x0 - mx, self.y0 - my, self.x1 + mx, self.y1 + my)

    def scale(self, sx: float, sy: float | None = None) -> Box:
        """Multiply coordinates by ``sx`` horizontally and ``sy`` (default ``sx``) vertically, about the origin."""
        sy = sx if sy is None else sy
        return Box(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy)

    def translate(self, dx: float, dy: float) -> Box:
        """Shift by ``(dx, dy)`` pixels."""
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    def to_int(self) -> tuple[int, int, int, int]:
        """Integer pixel corners covering the box: floor of x0, y0 and ceil of x1, y1."""
        if not all(math.isfinite(v) for v in self.xyxy):
            raise BoxError(f"cannot convert a NaN/infinite box to integers: {self.xyxy}")
        return (math.floor(self.x0), math.floor(self.y0), math.ceil(self.x1), math.ceil(self.y1))

    # ----------------------------------------------------------------- overlap
    def intersection(self, other: Box) -> Box | None:
        """The overlapping box, or None when the boxes do not overlap (or either is invalid)."""
        if not (self.is_valid and other.is_valid):
            return None
        x0, y0 = max(self.x0, other.x0), max(self.y0, other.y0)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        if x1 <= x0 or y1 <= y0:
            return None
        return Box(x0, y0, x1, y1)

    def intersection_area(self, other: Box) -> float:
        """Area of the overlap (0 when disjoint)."""
        inter = self.intersection(other)
        return 0.0 if inter is None else inter.area

    def union_area(self, other: Box) -> float:
        """Area covered by either box."""
        return self.area + other.area - self.intersection_area(other)

    def iou(self, other: Box) -> float:
        """Intersection over union in [0, 1]; 0 when either box is invalid."""
        union = self.union_area(other)
        if union <= 0:
            return 0.0
        return min(1.0, max(0.0, self.intersection_area(other) / union))


def _outside(lo: float, hi: float, size: float) -> bool:
    """True when the interval [lo, hi) has nothing inside [0, size) (a zero-length one: not within [0, size])."""
    if hi == lo:
        return lo < 0 or lo > size
    return hi <= 0 or lo >= size


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes, in [0, 1]."""
    return a.iou(b)


def box_iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """IoU of every pair: float64 array of shape ``(len(a), len(b))``; invalid boxes score 0."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    A = np.array([bx.xyxy for bx in a], dtype=np.float64)
    B = np.array([bx.xyxy for bx in b], dtype=np.float64)
    va = np.array([bx.is_valid for bx in a])
    vb = np.array([bx.is_valid for bx in b])
    area_a = np.where(va, (A[:, 2] - A[:, 0]) * (A[:, 3] - A[:, 1]), 0.0)
    area_b = np.where(vb, (B[:, 2] - B[:, 0]) * (B[:, 3] - B[:, 1]), 0.0)
    with np.errstate(invalid="ignore"):
        iw = np.minimum(A[:, None, 2], B[None, :, 2]) - np.maximum(A[:, None, 0], B[None, :, 0])
        ih = np.minimum(A[:, None, 3], B[None, :, 3]) - np.maximum(A[:, None, 1], B[None, :, 1])
        inter = np.clip(np.nan_to_num(iw, nan=0.0), 0, None) * np.clip(np.nan_to_num(ih, nan=0.0), 0, None)
        inter = np.where(va[:, None] & vb[None, :], inter, 0.0)
        union = area_a[:, None] + area_b[None, :] - inter
        out = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.clip(out, 0.0, 1.0)
