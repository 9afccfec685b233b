"""Mask quality control: is a mask plausible as "the object in this photo"? One pure function per level.

:func:`check_mask` looks at one mask (and, for a chroma key, at the image's border) and returns a
:class:`MaskCheck` with the measured figures and the rules it broke; :func:`check_batch` is the data-set
pass (a mask whose coverage is far from the batch's median). Both are pure (numpy + OpenCV, no I/O).

The rules (:class:`QCRules`, every threshold configurable) and why:

``empty``       coverage (pixels above the threshold) below ``min_coverage``: the segmenter saw (almost)
                nothing. A mask with no foreground pixel at all is ``not-found`` rather than suspect.
``full``        coverage above ``max_coverage``: nothing was removed (a chroma key on a photo without a
                screen keys nothing out and returns all foreground).
``fragmented``  more than ``max_components`` components of at least ``component_min_area`` of the image:
                noise, not an object.
``border``      more than ``max_border`` of the image's border pixels (all four sides) are foreground: the
                "object" is the frame. Hands and pets enter from one or two sides; a mask that covers most
                of the border is background taken for foreground.
``outlier``     (batch pass) coverage far from the batch's median: the log coverage lies more than
                ``outlier_z`` robust standard deviations (1.4826 x the median absolute deviation of the log
                coverages, at least ``outlier_min_spread``) from the median log coverage, once the batch has
                ``median_min_count`` found masks. Log scale, because coverage is a ratio: 3 % next to a
                median of 30 % is as odd as 30 % next to 3 %.
``no-screen``   (chroma only, needs the image) the border pixels the mask calls background are not one
                evenly lit, saturated screen colour: their median saturation is below ``screen_saturation``,
                or fewer than ``screen_match`` of them lie within ``screen_hue`` hue units (OpenCV 0..179),
                ``screen_sat_tol`` saturation and ``screen_val_tol`` value units (0..255) of their median.

Defaults were measured on real photos (``bench/mask_qc.py``; ``docs/trust.md`` has the figures): they flag
no ground-truth pets3 mask and none of the default U-Net's masks of the green-screen webcam hands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import cv2
import numpy as np

from bglab.ops.mask import ParameterError, binarize

__all__ = ["FLAGS", "MaskCheck", "QCRules", "check_batch", "check_mask", "mask_flags", "median_outliers"]

FLAGS: tuple[str, ...] = ("empty", "full", "fragmented", "border", "outlier", "no-screen")


@dataclass(frozen=True)
class QCRules:
    """Thresholds of the mask quality rules (see the module docstring); all fractions are of the image."""

    min_coverage: float = 0.04
    max_coverage: float = 0.95
    max_components: int = 6
    component_min_area: float = 0.002
    max_border: float = 0.8
    outlier_z: float = 5.0
    outlier_min_spread: float = 0.15
    median_min_count: int = 8
    screen_match: float = 0.65
    screen_hue: float = 15.0
    screen_saturation: float = 50.0
    screen_sat_tol: float = 45.0
    screen_val_tol: float = 30.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        def bad(msg: str) -> ParameterError:
            return ParameterError(f"mask QC: {msg}", hint="see docs/trust.md for the rules and their defaults")

        for name in ("min_coverage", "max_coverage", "component_min_area", "max_border", "screen_match"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise bad(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.min_coverage >= self.max_coverage:
            raise bad(f"min_coverage ({self.min_coverage}) must be below max_coverage ({self.max_coverage})")
        if int(self.max_components) < 1 or int(self.median_min_count) < 1:
            raise bad("max_components and median_min_count must be >= 1")
        if not (float(self.outlier_z) > 0.0 and float(self.outlier_min_spread) >= 0.0):
            raise bad(f"outlier_z must be > 0 and outlier_min_spread >= 0, got {self.outlier_z!r}, "
                      f"{self.outlier_min_spread!r}")
        if not (0.0 <= float(self.threshold) < 1.0):
            raise bad(f"threshold must be in [0, 1), got {self.threshold!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None, base: QCRules | None = None) -> QCRules:
        """Rules from a mapping of field names (``-`` or ``_``) to values, over ``base`` (default: defaults)."""
        base = base or cls()
        names = {f.name: f.type for f in fields(cls)}
        out: dict[str, Any] = {}
        for k, v in dict(options or {}).items():
            key = str(k).replace("-", "_")
            if key not in names:
                raise ParameterError(f"unknown mask QC rule {k!r}", hint=f"choose from: {', '.join(names)}")
            try:
                out[key] = int(v) if key in ("max_components", "median_min_count") else float(v)
            except (TypeError, ValueError):
                raise ParameterError(f"mask QC rule {k} needs a number, got {v!r}") from None
        return replace(base, **out)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class MaskCheck:
    """What QC measured on one mask and which rules it broke (``flags``, with readable ``reasons``)."""

    coverage: float
    components: int
    border: float
    flags: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        """False when the mask has no foreground pixel at all (the segmenter found nothing)."""
        return self.coverage > 0.0

    @property
    def status(self) -> str:
        """``not-found`` (no foreground), ``suspect`` (a rule broken) or ``done``."""
        if not self.found:
            return "not-found"
        return "suspect" if self.flags else "done"

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def with_flag(self, flag: str, reason: str) -> MaskCheck:
        if flag in self.flags:
            return self
        return replace(self, flags=(*self.flags, flag), reasons=(*self.reasons, reason))


def _border_pixels(a: np.ndarray) -> np.ndarray:
    """The one-pixel frame of a 2-D (or H, W, C) array, each pixel once."""
    if a.shape[0] < 3 or a.shape[1] < 3:
        return a.reshape(-1, *a.shape[2:])
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def screen_share(image: np.ndarray, background: np.ndarray, rules: QCRules) -> float | None:
    """Share of the image's border pixels marked ``background`` that look like one saturated screen colour.

    None when fewer than 16 border pixels are background (nothing to judge by)."""
    rgb = np.ascontiguousarray(np.asarray(image)[..., :3])
    if rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise ParameterError(f"mask QC needs an RGB uint8 image for the screen rule, got {rgb.dtype} {rgb.shape}")
    hsv = _border_pixels(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)).astype(np.float32)
    bg = _border_pixels(background)
    px = hsv[bg]
    if len(px) < 16:
        return None
    hue = px[:, 0]
    hist = np.bincount(np.clip(hue.astype(np.int64), 0, 179), minlength=180)
    shift = 90 - int(np.argmax(hist))
    med_h = (float(np.median((hue + shift) % 180)) - shift) % 180
    med_s, med_v = float(np.median(px[:, 1])), float(np.median(px[:, 2]))
    if med_s < rules.screen_saturation:
        return 0.0
    dh = np.abs(hue - med_h)
    dh = np.minimum(dh, 180.0 - dh)
    ok = ((dh <= rules.screen_hue) & (np.abs(px[:, 1] - med_s) <= rules.screen_sat_tol)
          & (np.abs(px[:, 2] - med_v) <= rules.screen_val_tol))
    return float(ok.mean())


def check_mask(mask: np.ndarray, rules: QCRules | None = None, *, image: np.ndarray | None = None,
               screen: bool = False) -> MaskCheck:
    """Quality of one mask (any mask bglab accepts): coverage, components, border share and the rules broken.

    ``screen=True`` (a chroma key; needs ``image``) adds the ``no-screen`` rule. A mask with no foreground
    pixel gets no flags: its :attr:`MaskCheck.status` is ``not-found``.
    """
    rules = rules or QCRules()
    fg = binarize(mask, rules.threshold)
    if fg.size == 0:
        return MaskCheck(0.0, 0, 0.0)
    cov = float(fg.mean())
    if cov == 0.0:
        return MaskCheck(0.0, 0, 0.0)
    min_area = max(1, round(rules.component_min_area * fg.size))
    n, _, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    comps = int((stats[1:, cv2.CC_STAT_AREA] >= min_area).sum()) if n > 1 else 0
    border = float(_border_pixels(fg).mean())
    chk = MaskCheck(cov, comps, border)
    if cov < rules.min_coverage:
        chk = chk.with_flag("empty", f"empty: foreground {100 * cov:.2f} % < {100 * rules.min_coverage:g} %")
    if cov > rules.max_coverage:
        chk = chk.with_flag("full", f"full: foreground {100 * cov:.1f} % > {100 * rules.max_coverage:g} %")
    if comps > rules.max_components:
        chk = chk.with_flag("fragmented", f"fragmented: {comps} components > {rules.max_components}")
    if border > rules.max_border:
        chk = chk.with_flag("border", f"border: foreground on {100 * border:.0f} % of the image border "
                                      f"> {100 * rules.max_border:g} %")
    if screen:
        if image is None:
            raise ParameterError("mask QC: the screen rule needs the image")
        share = screen_share(image, ~fg, rules)
        if share is None or share < rules.screen_match:
            got = "no background on the border" if share is None else f"{100 * share:.0f} % screen-coloured"
            chk = chk.with_flag("no-screen", f"no-screen: the border is not a uniform screen colour ({got}, "
                                             f"needs {100 * rules.screen_match:g} %)")
    return chk


def mask_flags(mask: np.ndarray, threshold: float = 0.5) -> tuple[str, ...]:
    """The default rules' verdict on one mask as flags: ``("not-found",)`` when it has no foreground, else
    the rules it breaks (``empty``, ``full``, ``fragmented``, ``border``); what ``eval-seg`` counts."""
    chk = check_mask(mask, QCRules(threshold=min(float(threshold), 0.999)))
    return ("not-found",) if chk.status == "not-found" else tuple(chk.flags)


def median_outliers(coverages: Sequence[float | None], rules: QCRules | None = None) -> list[str]:
    """Per mask, the batch rule's reason ('' when fine): log coverage far from the median of the found masks.

    ``None`` and 0 entries (no mask, or nothing found) are ignored and get ''. With fewer than
    ``median_min_count`` found masks nothing is flagged (no reliable median).
    """
    rules = rules or QCRules()
    out = [""] * len(coverages)
    vals = np.array([float(c) for c in coverages if c is not None and c > 0], dtype=np.float64)
    if len(vals) < rules.median_min_count:
        return out
    logs = np.log(vals)
    med = float(np.median(logs))
    spread = max(1.4826 * float(np.median(np.abs(logs - med))), rules.outlier_min_spread)
    lo, hi = math.exp(med - rules.outlier_z * spread), math.exp(med + rules.outlier_z * spread)
    for i, c in enumerate(coverages):
        if c is None or c <= 0:
            continue
        if c < lo or c > hi:
            out[i] = (f"outlier: foreground {100 * c:.1f} % is far from the batch median {100 * math.exp(med):.1f} "
                      f"% (usual range {100 * lo:.1f}..{100 * min(hi, 1.0):.1f} %)")
    return out


def check_batch(checks: Sequence[MaskCheck | None], rules: QCRules | None = None) -> list[MaskCheck | None]:
    """The batch pass over per-mask checks: adds the ``outlier`` flag where :func:`median_outliers` says so."""
    reasons = median_outliers([None if c is None else c.coverage for c in checks], rules)
    return [c if (c is None or not r) else c.with_flag("outlier", r) for c, r in zip(checks, reasons, strict=True)]
