"""The backend protocol: a Segmenter maps an RGB image to a soft mask, a Locator maps it to boxes.

A backend is one module that defines a class satisfying one of these protocols and registers a factory
under a name with :func:`bglab.foreground.registry.register`. Backends take RGB uint8 images (H, W, 3) and
return float32 masks in [0, 1] of the same H, W; they never do file I/O on the image itself (the caller
reads it), except ``mask-files`` which looks up a ground-truth file by the image's ``source`` path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from bglab.errors import BackendError
from bglab.ops.box import Box


@runtime_checkable
class Segmenter(Protocol):
    """Turns an RGB image into a soft foreground mask (float32 in [0, 1], same height and width)."""

    name: str

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray: ...

    def predict_batch(
        self, images: Sequence[np.ndarray], *, sources: Sequence[Path | None] | None = None
    ) -> list[np.ndarray]: ...


@runtime_checkable
class Locator(Protocol):
    """Turns an RGB image into boxes of the objects of interest, most confident first (may be empty)."""

    name: str

    def locate(self, image: np.ndarray, *, source: Path | None = None) -> list[Box]: ...


class SegmenterBase:
    """Convenience base: implements ``predict_batch`` as a loop over ``predict``; override where batching helps."""

    name: str = "base"

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def predict_batch(
        self, images: Sequence[np.ndarray], *, sources: Sequence[Path | None] | None = None
    ) -> list[np.ndarray]:
        srcs = list(sources) if sources is not None else [None] * len(images)
        return [self.predict(im, source=s) for im, s in zip(images, srcs, strict=True)]


def rgb_input(image: np.ndarray, who: str) -> np.ndarray:
    """The backend's input as a contiguous RGB uint8 (H, W, 3) array (alpha dropped); anything else is refused
    with a BackendError naming the backend ``who``."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8:
        raise BackendError(f"{who} needs an RGB uint8 (H, W, 3) image, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a[:, :, :3])
