"""Box prompts for any segmenter: run it on each located box's padded crop, paste the crops' masks back.

A locator says where the object is; the segmenter then sees it large, and nothing outside the boxes can be
called foreground. This turns a detector's, an annotation file's or MediaPipe's boxes into masks with
``u2netp`` (general objects) or the hand U-Nets (``unet``, ``unet-effnet``): ``-O locator=NAME`` plus the
locator's own options and ``box_margin`` (fraction of the box's size added on each side). Where the locator
finds nothing, ``no_box`` says what to return: ``empty`` (status not-found downstream) or ``full`` (the
segmenter on the whole image). Measured in ``docs/segmenters.md`` and ``docs/segmenter-v4.md``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bglab.errors import BackendError, ConfigError
from bglab.foreground.base import Locator, Segmenter, SegmenterBase, rgb_input
from bglab.foreground.registry import Runtime
from bglab.ops.box import Box

NO_BOX = ("empty", "full")


def pad_boxes(boxes: Sequence[Box], shape: tuple[int, ...], margin: float) -> list[Box]:
    """Valid ``boxes`` padded by ``margin`` of their size, clamped to the image ``shape``, on whole pixels
    (at least 2 x 2)."""
    h, w = shape[:2]
    out = []
    for b in boxes:
        if not b.is_valid:
            continue
        pad = b.pad(margin, relative=True).clamp(w, h) if margin > 0 else b.clamp(w, h)
        x0, y0 = max(0, int(np.floor(pad.x0))), max(0, int(np.floor(pad.y0)))
        x1, y1 = min(w, int(np.ceil(pad.x1))), min(h, int(np.ceil(pad.y1)))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            out.append(Box(x0, y0, x1, y1))
    return out


def crop_boxes(image: np.ndarray, locator: Locator, margin: float, *, source: Path | None = None) -> list[Box]:
    """The locator's boxes for ``image``, padded (:func:`pad_boxes`)."""
    return pad_boxes(locator.locate(image, source=source), image.shape, margin)


def segment_in_boxes(image: np.ndarray, boxes: Sequence[Box], inner: Segmenter) -> np.ndarray:
    """``inner`` on each whole-pixel box's crop of ``image``; the pixel maximum of the crops' masks, 0 elsewhere."""
    out = np.zeros(image.shape[:2], np.float32)
    for b in boxes:
        x0, y0, x1, y1 = int(b.x0), int(b.y0), int(b.x1), int(b.y1)
        crop = inner.predict(np.ascontiguousarray(image[y0:y1, x0:x1]))
        np.maximum(out[y0:y1, x0:x1], crop, out=out[y0:y1, x0:x1])
    return out


class BoxPrompted(SegmenterBase):
    """``inner`` run on each padded box crop of ``locator``; the union (pixel maximum) of the crops' masks."""

    def __init__(self, inner: Segmenter, locator: Locator, *, box_margin: float = 0.1, no_box: str = "empty"
                 ) -> None:
        if not 0.0 <= float(box_margin) <= 2.0:
            raise ConfigError(f"box_margin must be in [0, 2] (fraction of the box size), got {box_margin!r}")
        if no_box not in NO_BOX:
            raise ConfigError(f"no_box must be one of {', '.join(NO_BOX)}, got {no_box!r}",
                              hint="empty: no box gives an empty mask; full: the segmenter on the whole image")
        self.inner = inner
        self.locator = locator
        self.box_margin = float(box_margin)
        self.no_box = no_box
        self.name = inner.name

    def crop_boxes(self, image: np.ndarray, *, source: Path | None = None) -> list[Box]:
        """The padded boxes the segmenter runs on (empty when the locator finds nothing)."""
        return crop_boxes(image, self.locator, self.box_margin, source=source)

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        img = rgb_input(image, self.name)
        boxes = self.crop_boxes(img, source=source)
        if not boxes and self.no_box == "full":
            return self.inner.predict(img, source=source)
        return segment_in_boxes(img, boxes, self.inner)


def box_prompted(name: str, make: Callable[[], Segmenter], factory: Callable[..., Any], runtime: Runtime | None,
                 locator: str | None, *, box_margin: float = 0.1, no_box: str = "empty", **locator_options: Any
                 ) -> Segmenter:
    """Backend ``name``'s segmenter, ``make()``, itself without a locator, else wrapped in :class:`BoxPrompted`
    with the named locator (from the registry with ``locator_options``). Without a locator any other option is
    refused before anything is loaded, naming the keyword options of ``factory`` (the registry's factory)."""
    if locator is None:
        if locator_options:
            own = [p.name for p in inspect.signature(factory).parameters.values()
                   if p.kind is p.KEYWORD_ONLY and p.name not in ("locator", "box_margin", "no_box")]
            raise BackendError(f"bad options for backend {name!r}: unknown {', '.join(sorted(locator_options))}",
                               hint=f"{name} takes: {', '.join(own)}, locator (+ the locator's options), "
                                    "box_margin, no_box")
        return make()
    from bglab.foreground import registry

    loc = registry.create(locator, kind="locator", runtime=runtime, **locator_options)
    return BoxPrompted(make(), loc, box_margin=float(box_margin), no_box=str(no_box))
