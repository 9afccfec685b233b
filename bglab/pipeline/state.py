"""One sample's state between pipeline steps, and the result the pipeline gives back for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bglab import ops
from bglab.ops.box import Box

STATUSES: tuple[str, ...] = ("done", "suspect", "not-found", "skipped", "failed")


@dataclass
class SampleState:
    """One sample going through the steps (image, and the mask / box in the current image's pixels)."""

    image: np.ndarray
    original: np.ndarray
    source: Path | None
    key: str
    box: Box | None = None
    box_source: str = ""
    found: bool | None = None
    mask: np.ndarray | None = None
    coverage: float | None = None
    geometry: list[tuple[str, Any]] = field(default_factory=list)  # ("crop", Box) | ("resize", PadTransform)
    status: str = "done"
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    qc: str = ""  # reasons of the mask QC (bglab.ops.qc), '' when it passed

    @property
    def active(self) -> bool:
        return self.status in ("done", "suspect", "not-found")

    def to_original(self, box: Box) -> Box:
        for kind, g in reversed(self.geometry):
            box = box.translate(g.x0, g.y0) if kind == "crop" else g.box_to_input(box)
        return box

    def map_mask(self, mask: np.ndarray) -> np.ndarray:
        """A mask of the original image mapped through the crops / resizes done so far."""
        for kind, g in self.geometry:
            if kind == "crop":
                mask = mask[int(g.y0):int(g.y1), int(g.x0):int(g.x1)]
            else:
                mask = ops.resize_mask_pad(mask, (g.out_width, g.out_height))[0]
        return np.ascontiguousarray(mask)


@dataclass
class StepResult:
    """What the pipeline made of one image.

    ``status``: ``done`` (located, or no locate step), ``not-found`` (no box found; output still made as
    ``on_missing`` says), ``skipped`` (no box and ``on_missing: skip``: ``image`` is None) or ``failed``
    (``error`` says why; only from :meth:`Pipeline.run_batch`). ``box`` is in the input image's pixels;
    ``found`` is None without a locate step; ``coverage`` is the mask's foreground fraction on the image
    it was computed on; ``timings`` are seconds per step label (see :attr:`Pipeline.step_labels`).
    """

    image: np.ndarray | None
    status: str
    box: Box | None = None
    box_source: str = ""
    found: bool | None = None
    coverage: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""
    mask: np.ndarray | None = None
    qc: str = ""  # mask QC reasons (status suspect, or not-found: no foreground)


