"""Near-twins across a split: test photos whose training part holds an almost identical picture.

Frames of one video, bursts of one scene or re-exports of one photo under other names are not caught by the
file-name groups (``bglab.data.dataset.default_group``), so they can fall on both sides of a split and flatter
the test accuracy (on the rock-paper-scissors sxsw photos by about 4 points: docs/pretrained.md, "Split by
recording"). :func:`near_twins` compares every test image with every training image on a tiny thumbnail
(16 x 16, mean-centred, unit length: the cosine ignores brightness and contrast) and reports the test images
whose nearest training image has a cosine of at least :data:`TWIN_COSINE`. It flags likely leaks; it is not a
proof (two photos of a plain background can be alike without sharing a source), and it cannot see frames of
one video where the subject moved a lot: grouping by recording (``sources.NAME.group``) is the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["THUMB", "TWIN_COSINE", "near_twins", "split_twins", "thumbnails"]

THUMB = 16
TWIN_COSINE = 0.97
"""Set on three splits: the sxsw photos split by photo (2 % of the test photos reach it), by recording (none)
and the demo's hands pasted on new backgrounds (1 of 120); at 0.95 plain backgrounds start to look alike
(9 % of the latter)."""


def thumbnails(images: np.ndarray) -> np.ndarray:
    """``(N, H, W[, C])`` uint8 images -> ``(N, THUMB * THUMB * C)`` float32 rows, mean-centred and of unit length."""
    import cv2  # here, not at import: the report reads THUMB without OpenCV

    if len(images) == 0:
        return np.zeros((0, 1), np.float32)
    rows = []
    for im in images:
        small = cv2.resize(np.ascontiguousarray(im), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
        v = small.astype(np.float32).ravel()
        v -= v.mean()
        rows.append(v / (float(np.linalg.norm(v)) + 1e-6))
    return np.stack(rows)


def near_twins(train: np.ndarray, test: np.ndarray, *, threshold: float = TWIN_COSINE,
               chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For thumbnail rows ``train`` and ``test``: the test rows whose nearest train row reaches ``threshold``,
    that nearest train row, and the cosine (three aligned arrays, most similar first)."""
    if len(train) == 0 or len(test) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    best = np.empty(len(test), np.float32)
    arg = np.empty(len(test), np.int64)
    for s in range(0, len(test), chunk):
        sim = test[s:s + chunk] @ train.T
        arg[s:s + chunk] = sim.argmax(axis=1)
        best[s:s + chunk] = sim[np.arange(len(sim)), arg[s:s + chunk]]
    hit = np.flatnonzero(best >= threshold)
    order = hit[np.argsort(-best[hit], kind="stable")]
    return order, arg[order], best[order]


def split_twins(thumbs: np.ndarray, keys: Sequence[str], train: np.ndarray, tests: Mapping[str, np.ndarray],
                *, threshold: float = TWIN_COSINE, examples: int = 10) -> dict[str, dict[str, Any]]:
    """Per test set (name -> sample indices): how many of its images have a near-twin among the ``train``
    indices, with the closest pairs as examples (``{"test", "train", "cosine"}`` by sample key). ``thumbs`` are
    every sample's :func:`thumbnails`, made once for all protocols."""
    train = np.asarray(train, np.int64)
    out: dict[str, dict[str, Any]] = {}
    for name, idx in tests.items():
        idx = np.asarray(idx, np.int64)
        hit, nn, cos = near_twins(thumbs[train], thumbs[idx], threshold=threshold)
        out[name] = {"n": int(len(idx)), "twins": int(len(hit)), "threshold": threshold,
                     "examples": [{"test": keys[int(idx[h])], "train": keys[int(train[t])],
                                   "cosine": round(float(c), 4)}
                                  for h, t, c in zip(hit[:examples], nn[:examples], cos[:examples], strict=True)]}
    return out
