"""Background removal as a library: one image in memory (:func:`apply_mode`) or many files (:func:`remove_files`).

``apply_mode`` is pure (numpy in, numpy out); ``remove_files`` adds reading, the segmenter, atomic writing,
resumption (finished outputs are skipped) and a per-file report, so one bad file never stops a batch.
"""

from __future__ import annotations

import csv
import io as _io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from bglab import ops
from bglab.boxes import Box
from bglab.errors import BglabError, ConfigError

Mode = Literal["cutout", "mask", "color", "blur", "swap", "crop"]
MODES: tuple[str, ...] = ("cutout", "mask", "color", "blur", "swap", "crop")
Fit = Literal["cover", "stretch", "tile"]
DEFAULT_SUFFIX = ".png"  # lossless, and keeps alpha for cut-outs; --format changes it


@dataclass(frozen=True)
class RemoveOptions:
    """How to change the background once the mask is known (the CLI flags of ``bglab remove``)."""

    mode: Mode = "cutout"
    color: tuple[int, int, int] = (255, 255, 255)
    blur: float = 15.0  # Gaussian sigma in pixels for mode "blur"
    fit: Fit = "cover"  # how a swap background is fitted
    margin: float = 0.1  # crop margin, fraction of the box size on each side
    threshold: float = 0.5  # soft mask -> binary for refinement and boxes
    refine: bool = True  # drop regions < min_region of the largest, fill holes, keep the soft edge
    min_region: float = 0.1
    feather: float = 0.0  # soften the mask edge (Gaussian sigma, pixels)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}", hint=f"choose one of {', '.join(MODES)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.blur < 0 or self.margin < 0 or self.feather < 0:
            raise ConfigError("blur, margin and feather must be >= 0")


def prepare_mask(mask: np.ndarray, opts: RemoveOptions) -> np.ndarray:
    """Refine a raw soft mask as the options say (stray regions, holes, feathering); soft edges are kept."""
    soft = ops.as_soft(mask)
    if opts.refine:
        soft = ops.refine(soft, threshold=opts.threshold, min_fraction=opts.min_region, fill=True,
                          soft_edge=True, feather_radius=opts.feather)
    elif opts.feather > 0:
        soft = ops.feather(soft, opts.feather)
    return soft


def apply_mode(
    image: np.ndarray,
    mask: np.ndarray,
    opts: RemoveOptions,
    *,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Change the background of ``image`` given its (refined) soft ``mask``; returns RGB, RGBA or an 8-bit mask."""
    if opts.mode == "cutout":
        return ops.cutout(image, mask)
    if opts.mode == "mask":
        return np.round(ops.as_soft(mask, image.shape[:2]) * 255).astype(np.uint8)
    if opts.mode == "color":
        return ops.fill_background(image, mask, opts.color)
    if opts.mode == "blur":
        return ops.blur_background(image, mask, opts.blur)
    if opts.mode == "swap":
        if background is None:
            raise ConfigError("mode 'swap' needs a background image", hint="pass --background FILE")
        return ops.replace_background(image, mask, background, fit=opts.fit)
    # crop: to the mask's box with a margin; an empty mask keeps the whole image
    box = Box.from_mask(mask, threshold=opts.threshold)
    if box is None:
        return image.copy()
    crop, _ = ops.crop_to_box(image, box, margin=opts.margin)
    return crop


@dataclass
class FileResult:
    """What happened to one input file."""

    input: Path
    output: Path | None
    status: Literal["done", "skipped", "failed"]
    coverage: float | None = None
    seconds: float = 0.0
    error: str = ""


@dataclass
class BatchReport:
    """Per-file results of a batch and its totals."""

    results: list[FileResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def empty(self) -> list[FileResult]:
        """Done files whose mask is empty (coverage 0: the segmenter found no foreground, e.g. no hand)."""
        return [r for r in self.results if r.status == "done" and r.coverage is not None and r.coverage == 0.0]

    def write_csv(self, path: Path) -> Path:
        """Write the report as CSV, atomically."""
        from bglab.io import atomic_write_text

        buf = _io.StringIO()
        w = csv.writer(buf)
        w.writerow(["input", "output", "status", "coverage", "seconds", "error"])
        for r in self.results:
            cov = "" if r.coverage is None else f"{r.coverage:.4f}"
            w.writerow([r.input, r.output or "", r.status, cov, f"{r.seconds:.4f}", r.error])
        return atomic_write_text(path, buf.getvalue())


def collect_inputs(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Expand files and folders into (file, path relative to its root) pairs, sorted; folders are recursive.

    Every file named explicitly is kept (even with an odd suffix: reading it will say what is wrong);
    inside folders only image suffixes are taken.
    """
    from bglab.io import list_images

    out: list[tuple[Path, Path]] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend((f, f.relative_to(p)) for f in list_images(p))
        else:
            out.append((p, Path(p.name)))
    return out


def output_path(out_dir: Path, rel: Path, fmt: str | None = None) -> Path:
    """Where the result for input ``rel`` goes: same relative path, new suffix."""
    suffix = f".{fmt.lstrip('.')}" if fmt else DEFAULT_SUFFIX
    return out_dir / rel.with_suffix(suffix)


def remove_files(
    items: Sequence[tuple[Path, Path]],
    out_dir: Path,
    segmenter,
    opts: RemoveOptions,
    *,
    background: np.ndarray | None = None,
    fmt: str | None = None,
    overwrite: bool = False,
    on_progress: Callable[[FileResult], None] | None = None,
    max_pixels: int | None = None,
) -> BatchReport:
    """Run background removal over ``items`` (from :func:`collect_inputs`) into ``out_dir``.

    One bad file never stops the batch: it is recorded and the rest go on.

    Outputs that already exist are skipped (so an interrupted run resumes) unless ``overwrite``.
    """
    from bglab.io import read_image, write_image

    if opts.mode == "swap" and background is None:
        raise ConfigError("mode 'swap' needs a background image", hint="pass --background FILE")
    if fmt in ("jpg", "jpeg") and opts.mode == "cutout":
        raise ConfigError("cutouts carry alpha, which JPEG cannot store", hint="use --format png or webp")
    report = BatchReport()
    seen: dict[Path, Path] = {}
    for src, rel in items:
        dst = output_path(Path(out_dir), rel, fmt)
        t0 = time.perf_counter()
        if dst in seen:
            res = FileResult(src, None, "failed",
                             error=f"output name clashes with {seen[dst]} (same stem); rename one of them")
        elif dst.exists() and not overwrite:
            res = FileResult(src, dst, "skipped")
        else:
            try:
                image = read_image(src, max_pixels=max_pixels)
                mask = prepare_mask(segmenter.predict(image, source=src), opts)
                result = apply_mode(image, mask, opts, background=background)
                write_image(dst, result)
                res = FileResult(src, dst, "done", coverage=float(ops.coverage(mask, opts.threshold)))
            except BglabError as exc:
                res = FileResult(src, None, "failed", error=str(exc))
            except Exception as exc:  # noqa: BLE001 - a batch records unexpected failures and goes on
                res = FileResult(src, None, "failed", error=f"{src}: unexpected {type(exc).__name__}: {exc}")
        seen.setdefault(dst, src)
        res.seconds = time.perf_counter() - t0
        report.results.append(res)
        if on_progress is not None:
            on_progress(res)
    return report


def remove_background(
    image: np.ndarray,
    *,
    mode: Mode = "cutout",
    backend: str | None = None,
    segmenter=None,
    background: np.ndarray | None = None,
    **options,
) -> np.ndarray:
    """One call for one in-memory image: segment it (``backend`` name or a ready ``segmenter``) and apply ``mode``.

    ``options`` are :class:`RemoveOptions` fields (``color=``, ``blur=``, ``fit=``, ``margin=``, ...). Reuse a
    ``segmenter`` from :func:`bglab.segment.create` when processing many images, so the model loads once.
    """
    if segmenter is None:
        from bglab.segment import DEFAULT_SEGMENTER, create

        segmenter = create(backend or DEFAULT_SEGMENTER, kind="segmenter")
    opts = RemoveOptions(mode=mode, **options)
    mask = prepare_mask(segmenter.predict(image), opts)
    return apply_mode(image, mask, opts, background=background)
