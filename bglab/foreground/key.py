"""Key a folder of green-screen images into mask files, with automatic quality control and a review sheet.

:func:`key_folder` writes one 8-bit mask ``dst/<rel>.png`` per image under ``src`` (class sub-folders
kept), using the ``chroma`` backend by default, or any other segmenter (``backend="hand-grabcut"`` labels
hands in real scenes from their landmarks: training masks beyond the green screen). It is resumable: an
image whose mask already exists (in ``dst`` or ``dst/_rejected``) is not keyed again. Quality control
(:class:`QCRules`) moves implausible masks to ``dst/_rejected/<rel>.png``; a mask with no foreground at all
(``hand-grabcut`` found no hand, a frame of bare screen) is ``not-found`` and goes there too; after the
batch, masks whose foreground fraction is far from the batch median (:func:`bglab.ops.qc.median_outliers`,
``QCRules.batch``) are rejected and moved as well. ``dst/key_report.csv`` lists
every image (file, status, fg_fraction, components, reason) and ``dst/contact_sheet.png`` shows a sample
for a person to review (rejects framed in red). Unreadable images are recorded as errors and the run goes on.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bglab.errors import BglabError, ConfigError, DatasetError

REJECTED_DIR = "_rejected"
REPORT_NAME = "key_report.csv"
SHEET_NAME = "contact_sheet.png"
REPORT_FIELDS = ("file", "status", "fg_fraction", "components", "reason")
_SIDES = ("right", "left", "top", "bottom", "none")


@dataclass(frozen=True)
class QCRules:
    """Automatic quality control of one keyed mask; a mask failing any rule is rejected (with the reason).

    Defaults come from the 1350 rps webcam images (hands from the right on a green screen), where good masks
    cover 0.15..0.75 of the image, have 1..3 raw components and touch at most ~30 % of the other borders.

    - ``min_fg`` / ``max_fg``: foreground fraction (pixels > 0.5) must lie in this range. Catches an
      all-screen image (nothing found) and an image with no screen (the key finds nothing: all foreground).
    - ``max_components``: connected components of the raw keyed mask (before keeping the largest one),
      counting only those of at least ``component_min_area`` of the image; more means a noisy key (uneven
      screen, wrong key colour).
    - ``max_border_fg``: the object enters from ``entry_side`` only, so of the pixels on the three other
      sides (one-pixel lines) at most this fraction may be foreground; more means the key leaked into the
      screen near the border or the hand is not where it should be. ``entry_side="none"`` checks all four
      sides.
    """

    min_fg: float = 0.05
    max_fg: float = 0.80
    max_components: int = 4
    component_min_area: float = 0.002
    max_border_fg: float = 0.35
    entry_side: str = "right"
    batch: bool = True  # the batch pass: foreground fraction far from the batch median (bglab.ops.qc)

    def __post_init__(self) -> None:
        if not (0.0 <= self.min_fg < self.max_fg <= 1.0):
            raise ConfigError(f"QC needs 0 <= min_fg < max_fg <= 1, got {self.min_fg}..{self.max_fg}",
                              hint="e.g. --min-fg 0.05 --max-fg 0.8")
        if self.entry_side not in _SIDES:
            raise ConfigError(f"unknown entry side {self.entry_side!r}", hint=f"one of {', '.join(_SIDES)}")
        if self.max_components < 1 or not (0.0 <= self.max_border_fg <= 1.0):
            raise ConfigError("QC needs max_components >= 1 and max_border_fg in [0, 1]")

    def border_fraction(self, fg: np.ndarray) -> float:
        """Foreground fraction on the sides other than the entry side (fg: bool (H, W))."""
        sides = {"left": fg[:, 0], "right": fg[:, -1], "top": fg[0], "bottom": fg[-1]}
        sides.pop(self.entry_side, None)
        return float(np.concatenate(list(sides.values())).mean())

    def check(self, fg_fraction: float, components: int, border: float) -> str:
        """Empty string when the mask passes, else the reasons joined by '; '."""
        why = []
        if fg_fraction < self.min_fg:
            why.append(f"foreground {fg_fraction:.3f} < min_fg {self.min_fg}")
        if fg_fraction > self.max_fg:
            why.append(f"foreground {fg_fraction:.3f} > max_fg {self.max_fg}")
        if components > self.max_components:
            why.append(f"{components} components > {self.max_components}")
        if border > self.max_border_fg:
            why.append(f"border foreground {border:.3f} > {self.max_border_fg} (sides other than {self.entry_side})")
        return "; ".join(why)


@dataclass
class KeyItem:
    """One image's outcome. ``file`` is the image path relative to ``src`` (POSIX)."""

    file: str
    status: str  # ok | rejected | not-found | error
    fg_fraction: float = float("nan")
    components: int = -1
    reason: str = ""
    resumed: bool = False  # True when the mask existed already and was not keyed again


@dataclass
class KeyReport:
    """What :func:`key_folder` did; ``items`` in sorted file order."""

    src: Path
    dst: Path
    items: list[KeyItem] = field(default_factory=list)
    report_path: Path | None = None
    sheet_path: Path | None = None
    interrupted: bool = False  # Ctrl+C / SIGTERM: the report lists what finished (rerun to resume)

    def _count(self, status: str) -> int:
        return sum(1 for i in self.items if i.status == status)

    @property
    def ok(self) -> int:
        return self._count("ok")

    @property
    def rejected(self) -> int:
        return self._count("rejected")

    @property
    def errors(self) -> int:
        return self._count("error")

    @property
    def not_found(self) -> int:
        return self._count("not-found")

    @property
    def resumed(self) -> int:
        return sum(1 for i in self.items if i.resumed)

    @property
    def total(self) -> int:
        return len(self.items)


def mask_path(dst: Path, rel: str, status: str = "ok") -> Path:
    """Where the mask of image ``rel`` goes (``dst/<rel>.png``, or under ``dst/_rejected``)."""
    base = dst / REJECTED_DIR if status == "rejected" else dst
    return (base / rel).with_suffix(".png")


def _mask_stats(soft: np.ndarray, raw: np.ndarray, qc: QCRules) -> tuple[float, int, float]:
    from bglab.ops.mask import component_count, coverage

    fg = soft > 0.5
    min_area = max(1, round(qc.component_min_area * fg.size))
    return coverage(soft), component_count(raw, min_area=min_area), qc.border_fraction(fg)


def _read_previous(dst: Path) -> dict[str, KeyItem]:
    path = dst / REPORT_NAME
    if not path.is_file():
        return {}
    out: dict[str, KeyItem] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                out[row["file"]] = KeyItem(row["file"], row["status"], float(row["fg_fraction"] or "nan"),
                                           int(row["components"] or -1), row["reason"], resumed=True)
    except (OSError, KeyError, ValueError):
        return {}
    return out


def _key_one(seg: Any, src: Path, dst: Path, rel: str, qc: QCRules,
             previous: Mapping[str, KeyItem]) -> KeyItem:
    from bglab.foreground.chroma import ChromaKeySegmenter
    from bglab.io.files import read_image, write_mask

    ok_path, rej_path = mask_path(dst, rel), mask_path(dst, rel, "rejected")
    for status, p in (("ok", ok_path), ("rejected", rej_path)):
        if p.is_file():
            prev = previous.get(rel)
            if prev is not None and (prev.status == status or (status, prev.status) == ("rejected", "not-found")):
                return prev
            return KeyItem(rel, status, reason="mask existed before this run", resumed=True)
    try:
        image = read_image(src / rel)
        if isinstance(seg, ChromaKeySegmenter):  # the raw key and whether a screen was found feed the QC
            result = seg.analyse(image)
            soft, raw, found = result.mask, result.raw, result.screen_found
        else:
            soft = seg.predict(image, source=src / rel)
            raw, found = soft > 0.5, True
        fg, comps, border = _mask_stats(soft, raw, qc)
        reason = qc.check(fg, comps, border)
        if not found:
            reason = "no key colour on the border (nothing keyed out)" + (f"; {reason}" if reason else "")
        status = "rejected" if reason else "ok"
        if not (soft > 0.5).any():
            status, reason = "not-found", "no foreground found" + (f"; {reason}" if reason else "")
        mask_u8 = np.clip(np.rint(soft * 255.0), 0, 255).astype(np.uint8)
        write_mask(rej_path if reason else ok_path, mask_u8)
        return KeyItem(rel, status, fg, comps, reason)
    except BglabError as exc:
        return KeyItem(rel, "error", reason=str(exc))
    except (OSError, ValueError, cv2.error) as exc:
        return KeyItem(rel, "error", reason=f"{type(exc).__name__}: {exc}")


class _KeyWorker:
    """Keys chunks of files with one shared segmenter (thread-safe: chroma, grabcut)."""

    def __init__(self, seg: Any, src: Path, dst: Path, qc: QCRules, previous: Mapping[str, KeyItem]) -> None:
        self.seg, self.src, self.dst, self.qc, self.previous = seg, src, dst, qc, previous

    def process(self, files: Sequence[str]) -> list[KeyItem]:
        return [_key_one(self.seg, self.src, self.dst, rel, self.qc, self.previous) for rel in files]


def key_folder(
    src: str | Path,
    dst: str | Path,
    *,
    segmenter_options: Mapping[str, Any] | None = None,
    backend: str = "chroma",
    qc: QCRules = QCRules(),
    threads: int = 1,
    progress: Callable[[int, int, KeyItem], None] | None = None,
    sheet: bool = True,
) -> KeyReport:
    """Key every image under ``src`` into masks under ``dst`` (see the module docstring); returns the report.

    ``segmenter_options`` go to the ``backend`` (chroma: ``key``, ``tolerance``, ``softness``, ...).
    ``progress(done, total, item)`` is called after each image. ``threads`` > 1 keys images in threads.
    """
    from bglab.batch.engine import run_batch, write_csv
    from bglab.foreground import create
    from bglab.io.files import check_separate, list_images, prepare_output_dir

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DatasetError("source folder not found", path=src, hint="pass the folder that holds the images")
    check_separate([src], dst)
    from bglab.io.limits import MAX_WORKERS

    if not 1 <= int(threads) <= MAX_WORKERS:
        raise ConfigError(f"threads must be in [1, {MAX_WORKERS}], got {threads}")
    seg = create(backend, kind="segmenter", **dict(segmenter_options or {}))
    dst_abs = dst.resolve()
    files = []
    for p in list_images(src):
        if dst_abs in p.resolve().parents:
            continue  # never key our own outputs when dst is inside src
        files.append(p.relative_to(src).as_posix())
    files = sorted(set(files))
    if not files:
        raise DatasetError("no images found", path=src, hint="expected .png / .jpg files, in class sub-folders")
    prepare_output_dir(dst)
    previous = _read_previous(dst)
    report = KeyReport(src, dst)
    results: dict[str, KeyItem] = {}

    def on_chunk(_: Sequence[str], items: list[KeyItem]) -> None:
        for item in items:
            results[item.file] = item
            if progress:
                progress(len(results), len(files), item)

    worker = _KeyWorker(seg, src, dst, qc, previous)
    report.interrupted = run_batch(files, lambda: worker, on_chunk, in_threads=int(threads))
    report.items = [results[f] for f in files if f in results]
    if qc.batch:
        _batch_pass(report.items, dst)
    report.report_path = dst / REPORT_NAME
    write_csv(report.report_path, REPORT_FIELDS, ([it.file, it.status, "" if np.isnan(it.fg_fraction) else
                                                   f"{it.fg_fraction:.4f}", "" if it.components < 0 else
                                                   str(it.components), it.reason] for it in report.items))
    if sheet and not report.interrupted:
        report.sheet_path = dst / SHEET_NAME
        write_contact_sheet(report, report.sheet_path)
    return report


def _batch_pass(items: list[KeyItem], dst: Path) -> None:
    """Reject the ok masks whose foreground fraction is far from the batch median (moved to ``_rejected``)."""
    import os

    from bglab.ops.qc import median_outliers

    ok = [it for it in items if it.status == "ok" and not np.isnan(it.fg_fraction)]
    for it, why in zip(ok, median_outliers([it.fg_fraction for it in ok]), strict=True):
        if not why:
            continue
        src_p, dst_p = mask_path(dst, it.file), mask_path(dst, it.file, "rejected")
        if src_p.is_file():
            dst_p.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src_p, dst_p)
        it.status, it.reason = "rejected", why


def _thumb(image: np.ndarray, mask: np.ndarray, width: int, rejected: bool, label: str) -> np.ndarray:
    h, w = image.shape[:2]
    size = (width, max(1, round(h * width / w)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    m = cv2.resize(mask.astype(np.float32) / 255.0, size, interpolation=cv2.INTER_LINEAR)[..., None]
    tint = np.array([255.0, 0.0, 255.0])
    out = (img * m + (img * 0.35 + tint * 0.65) * (1.0 - m)).astype(np.uint8)
    contours, _ = cv2.findContours((m[..., 0] > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (255, 255, 0), 1)
    colour = (230, 0, 0) if rejected else (90, 90, 90)
    b = 4 if rejected else 1
    cv2.rectangle(out, (0, 0), (out.shape[1] - 1, out.shape[0] - 1), colour, b)
    if label:
        cv2.putText(out, label[:28], (5, out.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 2)
        cv2.putText(out, label[:28], (5, out.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1)
    return out


def write_contact_sheet(report: KeyReport, path: Path, *, sample: int = 120, max_rejects: int = 120,
                        width: int = 150, columns: int = 10) -> Path | None:
    """A grid of thumbnails (image with mask overlay; rejects framed in red, labelled with the reason).

    Shows every rejected mask (up to ``max_rejects``) then an evenly spaced sample of ``sample`` ok ones.
    Returns None (and writes nothing) when there is nothing to show.
    """
    from bglab.io.files import read_image, write_image

    rejects = [i for i in report.items if i.status == "rejected"][:max_rejects]
    oks = [i for i in report.items if i.status == "ok"]
    if len(oks) > sample:
        oks = [oks[int(k)] for k in np.linspace(0, len(oks) - 1, sample).round().astype(int)]
    tiles = []
    for item in rejects + oks:
        rejected = item.status == "rejected"
        mpath = mask_path(report.dst, item.file, item.status)
        try:
            image = read_image(report.src / item.file)
            mask = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE)
            if mask is None or mask.shape != image.shape[:2]:
                continue
        except BglabError:
            continue
        label = item.reason.split(";")[0] if rejected else ""
        tiles.append(_thumb(image, mask, width, rejected, label))
    if not tiles:
        return None
    th = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, th - t.shape[0]), (0, 0), (0, 0))) if t.shape[0] < th else t for t in tiles]
    cols = min(columns, len(tiles))
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)])
    write_image(path, np.ascontiguousarray(grid))
    return path
