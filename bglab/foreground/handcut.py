"""``hand-grabcut``: hand masks in real scenes from MediaPipe hand landmarks + GrabCut, no trained model needed.

A box says where a hand is but not which pixels inside it are hand, so box-seeded GrabCut takes in the
background between the fingers and around the hand. The 21 landmarks say much more: the bones (lines
between joints) and the palm polygon are certainly hand, the convex hull of the landmarks grown a little is
probably hand, a wider band around it probably background, and the rest certainly background. GrabCut then
fits its colour models to that map. This is how bglab labels real-scene hand photos (``bglab key --backend
hand-grabcut``) to train its U-Net beyond the green screen.

:func:`hand_seed` is the pure part (landmarks -> GrabCut label map); :class:`HandGrabCut` takes any
``landmarker`` with a ``landmarks(image)`` method (MediaPipe Hands by default, extra ``hands``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from bglab.errors import BackendError, ConfigError
from bglab.foreground.base import SegmenterBase, rgb_input
from bglab.foreground.grabcut import cut, downscale
from bglab.foreground.mediapipe import MediaPipeHands  # light: mediapipe itself is imported when a graph is built
from bglab.foreground.registry import Runtime, check_options
from bglab.ops.mask import ParameterError
from bglab.ops.pose import BONES, PALM, check_landmarks



class Landmarker(Protocol):
    """Anything that finds hands as (confidence, (21, 2) pixel x, y) pairs, e.g. MediaPipe Hands."""

    def landmarks(self, image: np.ndarray) -> list[tuple[float, np.ndarray]]: ...


def _disk(radius: float) -> np.ndarray:
    r = max(1, round(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def hand_seed(
    shape: tuple[int, int],
    hands: Sequence[np.ndarray],
    *,
    bone: float = 0.1,
    grow: float = 0.15,
    band: float = 0.8,
    wrist: float = 0.4,
) -> np.ndarray:
    """GrabCut label map (uint8 GC_* values) of size ``shape`` for hands given as (21, 2) pixel landmarks.

    Sizes are fractions of each hand's scale (wrist to middle-finger knuckle): bones drawn ``bone`` thick and
    the palm polygon are sure hand; the hull of the landmarks plus a forearm stub ``wrist`` long, grown by
    ``grow``, is probable hand; a band ``band`` wide around it is probable background; the rest sure background.
    """
    h, w = shape
    sure = np.zeros((h, w), np.uint8)
    hull_all = np.zeros((h, w), np.uint8)
    band_all = np.zeros((h, w), np.uint8)
    for xy in hands:
        try:
            xy = check_landmarks(xy)
        except ParameterError as exc:  # a landmarker's bad output is a backend error here, not a config one
            raise BackendError(str(exc)) from None
        scale = max(float(np.linalg.norm(xy[9] - xy[0])), 4.0)
        direction = xy[0] - xy[9]
        direction /= np.linalg.norm(direction) + 1e-9
        pts = np.vstack([xy, xy[0] + direction * scale * wrist])
        hull = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
        hull_all |= cv2.dilate(hull, _disk(grow * scale))
        band_all |= cv2.dilate(hull, _disk(band * scale))
        thick = max(1, round(bone * scale))
        ij = np.round(xy).astype(np.int32)
        for a, b in BONES:
            cv2.line(sure, (int(ij[a, 0]), int(ij[a, 1])), (int(ij[b, 0]), int(ij[b, 1])), 1, thick)
        cv2.fillConvexPoly(sure, cv2.convexHull(ij[list(PALM)]), 1)
    seed = np.full((h, w), cv2.GC_BGD, np.uint8)
    seed[band_all > 0] = cv2.GC_PR_BGD
    seed[hull_all > 0] = cv2.GC_PR_FGD
    seed[sure > 0] = cv2.GC_FGD
    return seed


class HandGrabCut(SegmenterBase):
    """Hand masks: landmarks from ``landmarker`` seed GrabCut (:func:`hand_seed`); no hand found -> empty mask."""

    name = "hand-grabcut"

    def __init__(
        self,
        landmarker: Landmarker,
        *,
        bone: float = 0.1,
        grow: float = 0.15,
        band: float = 0.8,
        wrist: float = 0.4,
        iterations: int = 4,
        max_side: int = 512,
        seed: int = 0,
    ) -> None:
        for key, value in (("bone", bone), ("grow", grow), ("band", band), ("wrist", wrist)):
            if not 0.0 <= float(value) <= 5.0:
                raise ConfigError(f"hand-grabcut {key} must be in [0, 5] (a fraction of the hand size), got {value!r}")
        if float(band) < float(grow):
            raise ConfigError(f"hand-grabcut band ({band}) must be >= grow ({grow}): the band surrounds the hull")
        if int(iterations) < 1 or int(max_side) < 16:
            raise ConfigError(f"hand-grabcut needs iterations >= 1 and max_side >= 16, got {iterations}, {max_side}")
        self.landmarker = landmarker
        self.sizes = {"bone": float(bone), "grow": float(grow), "band": float(band), "wrist": float(wrist)}
        self.iterations = int(iterations)
        self.max_side = int(max_side)
        self.seed = int(seed)

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        img = rgb_input(image, "hand-grabcut")
        return self.cut_hands(img, [xy for _, xy in self.landmarker.landmarks(img)])

    def cut_hands(self, img: np.ndarray, hands: Sequence[np.ndarray]) -> np.ndarray:
        """The mask for RGB ``img`` from hands already found ((21, 2) pixel landmarks each); none -> empty."""
        h, w = img.shape[:2]
        if not hands:
            return np.zeros((h, w), np.float32)
        small, scale = downscale(img, self.max_side)
        seed = hand_seed(small.shape[:2], [xy * scale for xy in hands], **self.sizes)
        return cut(small, seed, (h, w), iterations=self.iterations, rng_seed=self.seed)


def create(
    runtime: Runtime, *, min_confidence: float = 0.1, max_hands: int = 4, pad: float = 0.25, **cut_options: Any
) -> HandGrabCut:
    """MediaPipe Hands landmarks (``min_confidence``, ``max_hands``, ``pad``) seeding GrabCut; ``cut_options``
    are :class:`HandGrabCut`'s (``bone``, ``grow``, ``band``, ``wrist``, ``iterations``, ``max_side``, ``seed``)."""
    check_options("hand-grabcut", HandGrabCut, None, also=("min_confidence", "max_hands", "pad"),
                  **cut_options)  # before loading MediaPipe
    hands = MediaPipeHands(min_confidence=min_confidence, max_hands=max_hands, pad=pad)
    return HandGrabCut(hands, **cut_options)
