"""Hand pose drawings: 21 hand landmarks -> a white-on-black stick figure of the hand, optionally aligned.

The ``pose`` preprocessing step replaces a photo by this drawing. It removes the background *and* the
hand's appearance (skin, light, camera), keeping only the shape of the pose; with ``align`` it also removes
the viewpoint's in-plane rotation and mirror (the wrist-to-middle-knuckle axis points up, the index finger's
knuckle lies right of the little finger's), which is what differs most between a studio set and real photos.
Pure numpy + OpenCV; the landmarks come from a landmarker backend (MediaPipe Hands).
"""

from __future__ import annotations

import cv2
import numpy as np

from bglab.ops.mask import ParameterError

# MediaPipe's 21 hand points: 0 wrist; thumb 1-4; index 5-8; middle 9-12; ring 13-16; little 17-20.
BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (17, 18), (18, 19), (19, 20), (0, 17),
)
PALM: tuple[int, ...] = (0, 1, 5, 9, 13, 17)


def check_landmarks(xy: np.ndarray) -> np.ndarray:
    """``xy`` as a (21, 2) float64 array of finite points; anything else is a ParameterError."""
    a = np.asarray(xy, np.float64)
    if a.shape != (21, 2) or not np.isfinite(a).all():
        raise ParameterError(f"hand landmarks must be 21 finite (x, y) points, got shape {a.shape}")
    return a


def align_landmarks(xy: np.ndarray) -> np.ndarray:
    """Landmarks rotated about the wrist so that wrist -> middle-finger knuckle points up (-y), then mirrored
    (x -> -x) if the index knuckle lies left of the little finger's: one canonical view of any hand."""
    a = check_landmarks(xy)
    v = a[9] - a[0]
    if not np.any(v):
        return a - a[0]
    ang = np.arctan2(v[0], -v[1])
    c, s = np.cos(ang), np.sin(ang)
    out = (a - a[0]) @ np.array([[c, s], [-s, c]]).T
    if out[5, 0] < out[17, 0]:
        out[:, 0] = -out[:, 0]
    return out


def draw_pose(xy: np.ndarray, size: int = 128, *, align: bool = True, thickness: float = 1 / 32,
              margin: float = 0.1) -> np.ndarray:
    """A (size, size) uint8 drawing of the hand's bones, white (255) on black, framing the landmarks' square
    extent plus ``margin`` of it on each side; lines ``thickness`` x ``size`` pixels wide (antialiased)."""
    if int(size) < 8:
        raise ParameterError(f"pose drawing size must be >= 8 pixels, got {size!r}")
    if not 0 < thickness <= 0.5 or margin < 0:
        raise ParameterError(f"thickness must be in (0, 0.5] and margin >= 0, got {thickness!r}, {margin!r}")
    size = int(size)
    a = align_landmarks(xy) if align else check_landmarks(xy)
    lo, hi = a.min(axis=0), a.max(axis=0)
    side = max(float((hi - lo).max()), 1e-6) * (1 + 2 * margin)
    p = (a - ((lo + hi) / 2 - side / 2)) / side * size
    canvas = np.zeros((size, size), np.uint8)
    width = max(1, round(thickness * size))
    fixed = np.round(p * 16).astype(np.int64)  # 4 fractional bits: sub-pixel line ends
    for i, j in BONES:
        cv2.line(canvas, (int(fixed[i, 0]), int(fixed[i, 1])), (int(fixed[j, 0]), int(fixed[j, 1])), 255, width,
                 cv2.LINE_AA, shift=4)
    return canvas


# The fingers as chains of points from the wrist to the tip (thumb, index, middle, ring, little).
FINGERS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4), (0, 5, 6, 7, 8), (0, 9, 10, 11, 12), (0, 13, 14, 15, 16), (0, 17, 18, 19, 20),
)
TIPS: tuple[int, ...] = (4, 8, 12, 16, 20)
#: length of :func:`pose_features`: 3 joint angles + 2 extension ratios per finger, 10 tip-to-tip distances
POSE_FEATURES = 5 * 3 + 5 * 2 + 10


def pose_features(xy: np.ndarray) -> np.ndarray:
    """What a hand's 21 landmarks say about its pose, as ``POSE_FEATURES`` float32 numbers that do not change
    with the hand's position, size, in-plane rotation or mirror image (so not with the camera's viewpoint
    in the image plane): per finger the cosines of its three joint angles (bent or straight) and its tip's
    distance from the wrist and from the finger's base, then the distances between every two finger tips
    (spread); distances in units of the palm (wrist to middle knuckle)."""
    a = check_landmarks(xy)
    palm = max(float(np.linalg.norm(a[9] - a[0])), 1e-6)
    out: list[float] = []
    for chain in FINGERS:
        for i, j, k in zip(chain, chain[1:], chain[2:], strict=False):
            u, v = a[i] - a[j], a[k] - a[j]
            out.append(float(np.dot(u, v) / max(float(np.linalg.norm(u) * np.linalg.norm(v)), 1e-12)))
        out.append(float(np.linalg.norm(a[chain[-1]] - a[0])) / palm)
        out.append(float(np.linalg.norm(a[chain[-1]] - a[chain[1]])) / palm)
    for n, i in enumerate(TIPS):
        for j in TIPS[n + 1:]:
            out.append(float(np.linalg.norm(a[i] - a[j])) / palm)
    return np.asarray(out, np.float32)
