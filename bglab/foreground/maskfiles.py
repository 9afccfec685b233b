"""``mask-files`` (segmenter), ``mask-box`` and ``full`` (locators): ground truth and trivial baselines.

``mask-files`` looks the image's mask up in a folder by the image's file stem (the ``source`` passed to
``predict``): directly in the folder, in the Oxford-pets layout ``<class>/masks/<stem>.png`` next to
``<class>/images/<stem>.jpg``, or anywhere below it (a folder named ``masks`` wins over ``trimaps`` etc.).
A mask of the wrong size is an error naming both files; it is never resized silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bglab.errors import BackendError, ConfigError, MaskError
from bglab.foreground.base import Segmenter, SegmenterBase
from bglab.foreground.registry import Runtime
from bglab.ops.box import Box

DEFAULT_MASK_SUFFIXES: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff", ".webp", ".jpg", ".jpeg")
_MASK_DIR_NAMES = ("masks", "mask", "gt_mask", "gt_masks", "labels", "alpha")


class MaskFileSegmenter(SegmenterBase):
    """Returns the stored mask of each image, found by its ``source`` file stem under ``root``."""

    name = "mask-files"

    def __init__(self, root: str | Path, suffixes: Sequence[str] = DEFAULT_MASK_SUFFIXES) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise BackendError(
                "mask folder not found", path=self.root, hint="pass masks=<folder holding one mask per image stem>"
            )
        self.suffixes = tuple(s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes)
        if not self.suffixes:
            raise ConfigError("mask-files needs at least one suffix", hint="e.g. suffixes=('.png',)")
        self._index: dict[str, list[Path]] | None = None

    def _rank(self, p: Path) -> tuple[int, int, int, str]:
        parent = p.parent.name.lower()
        return (
            0 if parent in _MASK_DIR_NAMES else 1,
            self.suffixes.index(p.suffix.lower()),
            len(p.relative_to(self.root).parts),
            str(p),
        )

    def _build_index(self) -> dict[str, list[Path]]:
        index: dict[str, list[Path]] = {}
        for p in self.root.rglob("*"):
            if p.suffix.lower() in self.suffixes and p.is_file():
                index.setdefault(p.stem, []).append(p)
        for paths in index.values():
            paths.sort(key=self._rank)
        return index

    def find(self, source: str | Path) -> Path:
        """The mask file for the image at ``source``; BackendError when there is none."""
        src = Path(source)
        stem = src.stem
        try:
            own = src.resolve()
        except OSError:
            own = src
        direct = [self.root]
        if src.parent.name.lower() == "images" and src.parent.parent.name:
            direct.append(self.root / src.parent.parent.name / "masks")  # pets3: <class>/masks/<stem>.png
        direct.append(self.root / "masks")
        for folder in direct:
            for suf in self.suffixes:
                cand = folder / f"{stem}{suf}"
                if cand.is_file() and cand.resolve() != own:
                    return cand
        if self._index is None:
            self._index = self._build_index()
        for cand in self._index.get(stem, []):
            if cand.resolve() != own:
                return cand
        raise BackendError(
            f"no mask for {src.name} (stem {stem!r}) under this folder",
            path=self.root,
            hint=f"masks must share the image's file stem and end in one of {', '.join(self.suffixes)}",
        )

    def predict(self, image: np.ndarray, *, source: Path | None = None) -> np.ndarray:
        from bglab.io.files import read_mask
        from bglab.ops.mask import as_soft

        if source is None:
            raise BackendError(
                "mask-files needs the image's file path to find its mask",
                hint="call predict(image, source=path); it only works on images read from files",
            )
        path = self.find(source)
        mask = read_mask(path)
        h, w = np.asarray(image).shape[:2]
        if mask.shape[:2] != (h, w):
            raise MaskError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {source} is {w}x{h} (WxH)",
                path=path,
                hint="the mask must have exactly the image's size; regenerate or resize it (nearest neighbour)",
            )
        return as_soft(mask)


class MaskBoxLocator:
    """The box around a segmenter's mask (threshold ``> threshold``), padded by ``margin`` of its size."""

    name = "mask-box"

    def __init__(self, segmenter: Segmenter, *, threshold: float = 0.5, margin: float = 0.0) -> None:
        if margin < 0:
            raise ConfigError(f"mask-box margin must be >= 0, got {margin!r}")
        self.segmenter = segmenter
        self.threshold = float(threshold)
        self.margin = float(margin)

    def locate(self, image: np.ndarray, *, source: Path | None = None) -> list[Box]:
        mask = self.segmenter.predict(image, source=source)
        box = Box.from_mask(mask, self.threshold)
        if box is None:
            return []
        if self.margin > 0:
            h, w = np.asarray(image).shape[:2]
            box = box.pad(self.margin, relative=True).clamp(w, h)
        return [box]


class FullImageLocator:
    """One box: the whole image (the no-localisation baseline)."""

    name = "full"

    def locate(self, image: np.ndarray, *, source: Path | None = None) -> list[Box]:
        h, w = np.asarray(image).shape[:2]
        return [Box(0, 0, w, h)]


def create_segmenter(
    runtime: Runtime, *, masks: str | Path | None = None, suffixes: Sequence[str] = DEFAULT_MASK_SUFFIXES
) -> MaskFileSegmenter:
    """Masks read from the folder ``masks`` by image stem."""
    if masks is None:
        raise BackendError("mask-files needs a mask folder", hint="pass masks=<folder> (CLI: --option masks=DIR)")
    if isinstance(suffixes, str):
        suffixes = tuple(s.strip() for s in suffixes.split(",") if s.strip())
    return MaskFileSegmenter(masks, suffixes)


def create_locator(
    runtime: Runtime,
    *,
    segmenter: str = "mask-files",
    threshold: float = 0.5,
    margin: float = 0.0,
    **segmenter_options: Any,
) -> MaskBoxLocator:
    """Box of the mask of a named segmenter (default ``mask-files``; its options pass through)."""
    from bglab.foreground import registry

    seg = registry.create(segmenter, kind="segmenter", runtime=runtime, **segmenter_options)
    return MaskBoxLocator(seg, threshold=threshold, margin=margin)


def create_full_locator(runtime: Runtime) -> FullImageLocator:
    """The whole image as one box."""
    return FullImageLocator()
