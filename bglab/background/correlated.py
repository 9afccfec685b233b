"""Correlated-background studies: does a classifier learn the class or the background that comes with it?

Hashmi & Li separate class-independent background factors from class-*dependent* ones: backgrounds correlated
with a class ("paper" is always on a beach). This module builds such a data set from foreground photos with
masks and a pool of background photos, and three test sets that keep, break and reverse the pairing:

* **Families.** :func:`assign_families` gives every class (sorted order) its own background family: one
  sub-folder of ``backgrounds`` per family, or a flat folder of photos split by a seeded shuffle (the sorted
  file names are shuffled with ``random.Random("bglab.correlate.families|<seed>")`` and dealt round-robin, so
  family ``i`` -- the family of the ``i``-th class -- gets files ``i, i+K, i+2K, ...`` of the shuffled list).
* **Split.** Foregrounds are split into train / test with :func:`bglab.data.dataset.split` (grouped, stratified,
  seeded), after dropping images without a mask.
* **Family per output** (:func:`choose_family`): ``train`` uses the class's own family with probability
  ``correlation``, else a uniformly random *other* family; ``test-kept`` always the own family;
  ``test-broken`` a uniformly random family (own included: correlation 1/K); ``test-reversed`` the family of
  the *next* class (never its own); ``test-fg-only`` no background (black, a control).
* **Background per output** (:func:`draw_background`): a photo of the family and a random square crop (side
  50-100 % of the photo's short side, random position, random horizontal flip) seeded by
  ``(seed, class, stem, family)`` -- so an image whose family is the same in two test sets is *identical* in
  both, and the test sets differ only where the family differs.
* **Foreground placement** (:func:`fit_foreground`): the whole foreground photo is scaled to fit the square
  output (long side = ``size``) and centred; the padding is background. It is the same in every set.

:func:`plan_study` decides everything (no image is read); :func:`build_study` reads, composes (with the pure
:func:`compose`) and writes atomically, skipping outputs that exist (resumable); a bad file is recorded in the
report and the run goes on.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from bglab import ops
from bglab.errors import BglabError, ConfigError, DatasetError

__all__ = [
    "SPLITS", "TEST_SETS", "Crop", "Family", "Foreground", "OutputRow", "PlannedOutput", "Report", "StudyPlan",
    "assign_families", "build_study", "choose_family", "compose", "crop_background", "draw_background",
    "fit_foreground", "plan_study", "split_families",
]

#: Output folders, in the order they are written.
SPLITS = ("train", "test-kept", "test-broken", "test-reversed", "test-fg-only")
TEST_SETS = ("test-kept", "test-broken", "test-reversed", "test-fg-only")
MASK_DIR = "masks"
MANIFEST_NAME = "manifest.csv"
SUMMARY_NAME = "summary.json"
STUDY_NAME = "study.json"
MANIFEST_FIELDS = ("split", "label", "stem", "fg_source", "mask_source", "bg_family", "own_family", "bg_file",
                   "crop", "output", "status", "error")
_MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".webp")
MIN_CROP, MAX_CROP = 0.5, 1.0  # background crop side as a fraction of the photo's short side


# ---------------------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """A background family: a name and its photos (sorted)."""

    name: str
    files: tuple[Path, ...]


def split_families(files: Sequence[Path], n: int, seed: int = 0) -> list[Family]:
    """Split a flat list of photos into ``n`` families: seeded shuffle of the sorted names, dealt round-robin."""
    if n < 2:
        raise ConfigError(f"a correlated study needs at least 2 classes (families), got {n}")
    ordered = sorted(Path(f) for f in files)
    if len(ordered) < n:
        raise DatasetError(f"{len(ordered)} background photo(s) cannot make {n} families",
                           hint=f"give at least {n} photos (better: several per family)")
    random.Random(f"bglab.correlate.families|{seed}").shuffle(ordered)
    return [Family(f"family{i}", tuple(sorted(ordered[i::n]))) for i in range(n)]


def assign_families(classes: Sequence[str], backgrounds: str | Path, seed: int = 0) -> dict[str, Family]:
    """Map every class to its own background family read from ``backgrounds`` (sub-folders or flat photos).

    Sub-folders named after the classes are matched by name; otherwise the sorted sub-folders go to the sorted
    classes (their number must equal the number of classes). A folder without image sub-folders is a flat pool
    split by :func:`split_families`.
    """
    from bglab.io.files import list_images

    root = Path(backgrounds)
    if not root.is_dir():
        raise DatasetError("background folder not found", path=root,
                           hint="pass --backgrounds DIR: sub-folders (one per family) or a folder of photos")
    cls = sorted(classes)
    subs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    subs = [p for p in subs if list_images(p)]
    if subs:
        by_name = {p.name: p for p in subs}
        if all(c in by_name for c in cls):
            chosen = [by_name[c] for c in cls]
        elif len(subs) == len(cls):
            chosen = subs
        else:
            raise DatasetError(
                f"{len(subs)} background sub-folder(s) ({', '.join(by_name)}) for {len(cls)} classes "
                f"({', '.join(cls)})", path=root,
                hint="give one sub-folder per class (named after it, or as many as there are classes), "
                     "or a flat folder of photos to split")
        return {c: Family(p.name, tuple(list_images(p))) for c, p in zip(cls, chosen, strict=True)}
    files = list_images(root, recursive=False)
    if not files:
        raise DatasetError("no background photos found", path=root, hint="expected .jpg / .png files")
    return dict(zip(cls, split_families(files, len(cls), seed), strict=True))


# ------------------------------------------------------------------------------------------ pure choices


@dataclass(frozen=True)
class Crop:
    """A square background crop as fractions: side of the short side, position in the free range, flip."""

    side: float
    x: float
    y: float
    flip: bool

    def pixels(self, width: int, height: int) -> tuple[int, int, int]:
        """``(x0, y0, side)`` in pixels of a ``width`` x ``height`` photo."""
        side = max(1, min(width, height, round(self.side * min(width, height))))
        return round(self.x * (width - side)), round(self.y * (height - side)), side

    def describe(self, width: int | None = None, height: int | None = None) -> str:
        """``x0,y0,side[,flip]`` in pixels when the photo size is known, else the fractions."""
        flip = ",flip" if self.flip else ""
        if width is None or height is None:
            return f"{self.x:.3f},{self.y:.3f},{self.side:.3f}f{flip}"
        x0, y0, side = self.pixels(width, height)
        return f"{x0},{y0},{side}{flip}"


def choose_family(split_name: str, own: int, k: int, correlation: float, rng: random.Random) -> int | None:
    """Index of the family an output of ``split_name`` uses (None for ``test-fg-only``); see the module doc."""
    if split_name == "train":
        if rng.random() < correlation:
            return own
        return rng.choice([j for j in range(k) if j != own])
    if split_name == "test-kept":
        return own
    if split_name == "test-broken":
        return rng.randrange(k)
    if split_name == "test-reversed":
        return (own + 1) % k
    if split_name == "test-fg-only":
        return None
    raise ConfigError(f"unknown split {split_name!r}", hint=f"one of {', '.join(SPLITS)}")


def draw_background(family: Family, seed: int, label: str, stem: str) -> tuple[Path, Crop]:
    """The photo and crop an image uses from ``family``: a pure function of (seed, label, stem, family)."""
    rng = random.Random(f"bglab.correlate.bg|{seed}|{label}|{stem}|{family.name}")
    photo = family.files[rng.randrange(len(family.files))]
    crop = Crop(side=rng.uniform(MIN_CROP, MAX_CROP), x=rng.random(), y=rng.random(), flip=rng.random() < 0.5)
    return photo, crop


# ------------------------------------------------------------------------------------- pure composition


def fit_foreground(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale the foreground photo and its mask to fit a ``size`` square (long side = size), centred.

    Returns the RGB canvas (padding black) and the float32 soft mask (padding 0 = background).
    """
    soft = ops.as_soft(mask, image.shape)
    fg, _ = ops.resize_pad(image, size)
    m, _ = ops.resize_mask_pad(soft, size)
    return fg, m


def crop_background(photo: np.ndarray, crop: Crop, size: int) -> np.ndarray:
    """The ``crop`` of a background photo (flipped if asked), resized to ``size`` x ``size`` RGB."""
    h, w = photo.shape[:2]
    x0, y0, side = crop.pixels(w, h)
    patch = photo[y0:y0 + side, x0:x0 + side, :3]
    if crop.flip:
        patch = patch[:, ::-1]
    interp = "area" if side >= size else "linear"
    return ops.resize(np.ascontiguousarray(patch), size, interp)


def compose(fg_canvas: np.ndarray, mask_canvas: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """Paste the fitted foreground over a same-size background (None: black, the fg-only control)."""
    if background is None:
        return ops.only_foreground(fg_canvas, mask_canvas)
    return ops.composite(fg_canvas, mask_canvas, background)


# --------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Foreground:
    """One foreground photo: class, stem, file, mask file (None: computed by a backend), train or test."""

    label: str
    stem: str
    path: Path
    mask: Path | None
    part: str  # "train" or "test"


@dataclass(frozen=True)
class PlannedOutput:
    """One image to write: which set, which foreground, which family / photo / crop, where."""

    split: str
    fg: Foreground
    family: Family | None
    own: bool
    bg_file: Path | None
    crop: Crop | None
    output: str  # relative to the study folder, forward slashes


@dataclass
class StudyPlan:
    """Everything :func:`build_study` will do, decided up front (deterministic in the seed)."""

    classes: list[str]
    families: dict[str, Family]
    foregrounds: list[Foreground]
    outputs: list[PlannedOutput]
    skipped: list[tuple[str, str, Path, str]]  # (label, stem, file, reason) of foregrounds left out
    params: dict[str, Any]

    def by_foreground(self) -> list[tuple[Foreground, list[PlannedOutput]]]:
        """Outputs grouped by their foreground (each is read once), in plan order."""
        groups: dict[tuple[str, str], list[PlannedOutput]] = {}
        for o in self.outputs:
            groups.setdefault((o.fg.label, o.fg.stem), []).append(o)
        return [(outs[0].fg, outs) for outs in groups.values()]


def _find_mask(masks: Path, label: str, stem: str) -> Path | None:
    for folder in (masks / label, masks / label / "masks"):
        for suf in _MASK_SUFFIXES:
            p = folder / f"{stem}{suf}"
            if p.is_file():
                return p
    return None


def _limit(items: list[Foreground], per_class: int, seed: int) -> list[Foreground]:
    out: list[Foreground] = []
    for label in sorted({f.label for f in items}):
        mine = sorted((f for f in items if f.label == label), key=lambda f: f.stem)
        random.Random(f"bglab.correlate.limit|{seed}|{label}").shuffle(mine)
        out.extend(sorted(mine[:per_class], key=lambda f: f.stem))
    return out


def plan_study(
    src: str | Path,
    backgrounds: str | Path,
    *,
    masks: str | Path | None = None,
    backend: str | None = None,
    correlation: float = 0.95,
    test_fraction: float = 0.25,
    seed: int = 0,
    per_class: int | None = None,
    fg_only: bool = True,
) -> StudyPlan:
    """Decide every output of a study (reads folder listings, never images); see the module docstring.

    Masks come from ``masks`` (``<masks>/<class>/<stem>.png``; images without one are skipped and counted),
    from a segmenter ``backend`` at build time, or from the source's own mask files (pets3 layout).
    """
    from bglab.data.dataset import Sample, read_imagefolder
    from bglab.data.dataset import split as split_samples

    if not 0.0 <= correlation <= 1.0:
        raise ConfigError(f"correlation must be in [0, 1], got {correlation}", hint="e.g. --correlation 0.95")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test fraction must be in (0, 1), got {test_fraction}", hint="e.g. --test-fraction 0.25")
    if masks is not None and backend is not None:
        raise ConfigError("give --masks or --backend, not both")
    if per_class is not None and per_class < 1:
        raise ConfigError(f"per-class must be >= 1, got {per_class}")
    src = Path(src)
    samples = read_imagefolder(src)
    classes = sorted({s.label for s in samples})
    if len(classes) < 2:
        raise DatasetError(f"a correlated study needs at least 2 classes, found {classes}", path=src,
                           hint="SRC must hold one sub-folder per class")
    if masks is not None and not Path(masks).is_dir():
        raise DatasetError("mask folder not found", path=masks, hint="run `bglab key SRC MASKS` first, or use "
                           "--backend chroma")
    if masks is None and backend is None and not any(s.mask_path for s in samples):
        raise ConfigError("no masks: SRC has no mask files", path=src,
                          hint="pass --masks DIR (from `bglab key`) or --backend NAME (e.g. chroma)")
    families = assign_families(classes, backgrounds, seed)
    fams = [families[c] for c in classes]
    items: list[Foreground] = []
    skipped: list[tuple[str, str, Path, str]] = []
    seen: set[tuple[str, str]] = set()
    for s in samples:
        stem = s.path.stem
        if (s.label, stem) in seen:
            skipped.append((s.label, stem, s.path, "duplicate stem in its class (outputs would clash)"))
            continue
        seen.add((s.label, stem))
        if backend is not None:
            mask = None
        elif masks is not None:
            mask = _find_mask(Path(masks), s.label, stem)
        else:
            mask = s.mask_path
        if backend is None and mask is None:
            skipped.append((s.label, stem, s.path, "no mask"))
            continue
        items.append(Foreground(s.label, stem, s.path, mask, ""))
    if per_class is not None:
        items = _limit(items, per_class, seed)
    if not items:
        raise DatasetError("no foreground with a mask", path=src, hint="check --masks (DIR/<class>/<stem>.png)")
    by_path = {f.path: f for f in items}
    sp = split_samples([Sample(f.path, f.label, "fg") for f in items], fractions=(1.0 - test_fraction, 0.0,
                       test_fraction), seed=seed)
    part = {**{s.path: "train" for s in sp.train}, **{s.path: "test" for s in sp.test}}
    fgs = [Foreground(f.label, f.stem, f.path, f.mask, part[f.path]) for f in by_path.values()]
    fgs.sort(key=lambda f: (f.part != "train", f.label, f.stem))
    k = len(classes)
    outputs: list[PlannedOutput] = []
    for fg in fgs:
        own = classes.index(fg.label)
        names = ("train",) if fg.part == "train" else tuple(t for t in TEST_SETS if fg_only or t != "test-fg-only")
        for name in names:
            rng = random.Random(f"bglab.correlate.family|{seed}|{name}|{fg.label}|{fg.stem}")
            fi = choose_family(name, own, k, correlation, rng)
            fam = None if fi is None else fams[fi]
            bg_file, crop = draw_background(fam, seed, fg.label, fg.stem) if fam is not None else (None, None)
            outputs.append(PlannedOutput(name, fg, fam, fi == own, bg_file, crop, f"{name}/{fg.label}/{fg.stem}.png"))
    params = {
        "src": str(src.resolve()), "backgrounds": str(Path(backgrounds).resolve()),
        "masks": None if masks is None else str(Path(masks).resolve()), "backend": backend,
        "correlation": correlation, "test_fraction": test_fraction, "seed": seed, "per_class": per_class,
        "fg_only": fg_only, "classes": classes,
        "families": {c: {"name": f.name, "files": [p.name for p in f.files]} for c, f in families.items()},
    }
    return StudyPlan(classes, families, fgs, outputs, skipped, params)


# --------------------------------------------------------------------------------------------- building


@dataclass
class OutputRow:
    """What happened to one planned output (one manifest row)."""

    planned: PlannedOutput | None
    status: str  # done | skipped (existed) | failed | no-mask
    error: str = ""
    crop_px: str = ""
    label: str = ""
    stem: str = ""
    fg_source: str = ""


@dataclass
class Report:
    """Per-output results of a build, the plan, and totals (written as manifest.csv and summary.json)."""

    plan: StudyPlan
    dst: Path
    rows: list[OutputRow] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str, split: str | None = None) -> int:
        """How many outputs (of ``split``, or all) ended with ``status``."""
        return sum(r.status == status and (split is None or (r.planned is not None and r.planned.split == split))
                   for r in self.rows)

    @property
    def failed(self) -> list[OutputRow]:
        """The outputs that could not be written (each with its error)."""
        return [r for r in self.rows if r.status == "failed"]

    def own_fraction(self, split: str) -> float | None:
        """Fraction of the planned outputs of ``split`` that use their class's own family."""
        outs = [o for o in self.plan.outputs if o.split == split and o.family is not None]
        return sum(o.own for o in outs) / len(outs) if outs else None

    def summary(self) -> dict[str, Any]:
        """Counts per set and status, per set and class, and the measured correlations."""
        splits = [s for s in SPLITS if any(o.split == s for o in self.plan.outputs)]
        per_split = {s: {st: self.count(st, s) for st in ("done", "skipped", "failed")} for s in splits}
        per_class = {s: dict(sorted(Counter(o.fg.label for o in self.plan.outputs if o.split == s).items()))
                     for s in splits}
        return {
            "params": self.plan.params,
            "foregrounds": {"used": len(self.plan.foregrounds),
                            "train": sum(f.part == "train" for f in self.plan.foregrounds),
                            "test": sum(f.part == "test" for f in self.plan.foregrounds),
                            "skipped": len(self.plan.skipped),
                            "skipped_reasons": dict(Counter(r for *_, r in self.plan.skipped))},
            "outputs": per_split,
            "per_class": per_class,
            "own_family_fraction": {s: self.own_fraction(s) for s in splits if s != "test-fg-only"},
            "correlation_requested": self.plan.params["correlation"],
            "correlation_measured_train": self.own_fraction("train"),
            "failed": len(self.failed),
            "seconds": round(self.seconds, 2),
        }

    def write(self) -> tuple[Path, Path]:
        """Write ``manifest.csv`` and ``summary.json`` into the study folder, atomically."""
        from bglab.batch.engine import write_csv
        from bglab.io.files import atomic_write_text

        def row(r: OutputRow) -> list[Any]:
            o = r.planned
            if o is None:
                return ["", r.label, r.stem, r.fg_source, "", "", "", "", "", "", r.status, r.error]
            return [o.split, o.fg.label, o.fg.stem, o.fg.path, "" if o.fg.mask is None else o.fg.mask,
                    "" if o.family is None else o.family.name, int(o.own) if o.family is not None else "",
                    "" if o.bg_file is None else o.bg_file.name, r.crop_px, o.output, r.status, r.error]

        manifest = write_csv(self.dst / MANIFEST_NAME, MANIFEST_FIELDS, map(row, self.rows))
        summary = atomic_write_text(self.dst / SUMMARY_NAME, json.dumps(self.summary(), indent=2) + "\n")
        return manifest, summary


class _Backgrounds:
    """Background photos read once each (thread-safe); a bad photo raises its ImageReadError every time."""

    def __init__(self) -> None:
        self._cache: dict[Path, np.ndarray | BglabError] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> np.ndarray:
        from bglab.io.files import read_image

        with self._lock:
            hit = self._cache.get(path)
            if hit is None:
                try:
                    hit = read_image(path)
                except BglabError as exc:
                    hit = exc
                self._cache[path] = hit
        if isinstance(hit, BglabError):
            raise hit
        return hit

    def describe(self, o: PlannedOutput) -> str:
        if o.crop is None or o.bg_file is None:
            return ""
        try:
            h, w = self.get(o.bg_file).shape[:2]
        except BglabError:
            return o.crop.describe()
        return o.crop.describe(w, h)


def _read_foreground(fg: Foreground, segmenter: Any, despill: bool) -> tuple[np.ndarray, np.ndarray]:
    from bglab.io.files import read_image, read_mask

    image = read_image(fg.path)
    if fg.mask is not None:
        mask = read_mask(fg.mask, shape=image.shape)
    elif segmenter is not None:
        mask = segmenter.predict(image, source=fg.path)
    else:  # pragma: no cover - plan_study refuses this
        raise ConfigError("no mask and no backend", path=fg.path)
    if despill and fg.mask is None and hasattr(segmenter, "despill"):
        image = segmenter.despill(image, mask)  # the chroma backend knows its screen colour
    elif despill:
        from bglab.ops.color import despill as _despill

        image = _despill(image, mask, channel="green")
    return image, mask


def _build_one(fg: Foreground, outs: list[PlannedOutput], dst: Path, size: int, bgs: _Backgrounds,
               segmenter: Any, despill: bool, overwrite: bool, write_masks: bool) -> list[OutputRow]:
    from bglab.io.files import write_image, write_mask

    todo = [o for o in outs if overwrite or not (dst / o.output).is_file()]
    mask_out = dst / MASK_DIR / fg.label / f"{fg.stem}.png"
    need_mask = write_masks and (overwrite or not mask_out.is_file())
    todo_ids = {id(o) for o in todo}
    rows = {id(o): OutputRow(o, "skipped", crop_px=bgs.describe(o)) for o in outs if id(o) not in todo_ids}
    if todo or need_mask:
        try:
            image, mask = _read_foreground(fg, segmenter, despill)
            canvas, soft = fit_foreground(image, mask, size)
            if need_mask:
                write_mask(mask_out, np.round(soft * 255).astype(np.uint8))
        except BglabError as exc:
            err = str(exc)
            return [rows.get(id(o)) or OutputRow(o, "failed", error=err, crop_px=bgs.describe(o)) for o in outs]
        except Exception as exc:  # noqa: BLE001 - a batch records unexpected failures and goes on
            err = f"{fg.path}: unexpected {type(exc).__name__}: {exc}"
            return [rows.get(id(o)) or OutputRow(o, "failed", error=err, crop_px=bgs.describe(o)) for o in outs]
        for o in todo:
            try:
                bg = None if o.bg_file is None or o.crop is None else crop_background(bgs.get(o.bg_file), o.crop, size)
                write_image(dst / o.output, compose(canvas, soft, bg))
                rows[id(o)] = OutputRow(o, "done", crop_px=bgs.describe(o))
            except BglabError as exc:
                rows[id(o)] = OutputRow(o, "failed", error=str(exc), crop_px=bgs.describe(o))
            except Exception as exc:  # noqa: BLE001
                rows[id(o)] = OutputRow(o, "failed", error=f"{o.bg_file}: unexpected {type(exc).__name__}: {exc}")
    return [rows[id(o)] for o in outs]


def _check_previous(dst: Path, params: Mapping[str, Any], overwrite: bool) -> None:
    """Refuse to resume into a folder built with other settings (its finished outputs would be stale)."""
    p = dst / STUDY_NAME
    if overwrite or not p.is_file():
        return
    try:
        old = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    keys = ("correlation", "test_fraction", "seed", "per_class", "size", "families", "masks", "backend", "despill")
    diff = [k for k in keys if old.get(k) != params.get(k)]
    if diff:
        raise ConfigError(f"the study folder was built with other settings ({', '.join(diff)} differ)", path=dst,
                          hint="use a new destination folder, or --overwrite to rebuild every image")


def build_study(
    plan: StudyPlan,
    dst: str | Path,
    *,
    size: int = 128,
    segmenter: Any = None,
    despill: bool = True,
    threads: int = 1,
    overwrite: bool = False,
    write_masks: bool = True,
    on_progress: Callable[[int, int, list[OutputRow]], None] | None = None,
) -> Report:
    """Write every planned output into ``dst`` (resumable, atomic) plus manifest.csv and summary.json.

    ``segmenter`` computes masks for foregrounds planned without a mask file. With ``write_masks`` the fitted
    foreground mask of each image is written as ``dst/masks/<class>/<stem>.png`` (the same in every set).
    ``on_progress(done, total, rows)`` is called after each foreground. ``threads`` > 1 builds foregrounds on
    that many threads (one shared ``segmenter``).
    """
    from bglab.batch.engine import run_batch
    from bglab.io.files import atomic_write_text, prepare_output_dir
    from bglab.io.limits import MAX_OUTPUT_SIDE, MAX_WORKERS

    if not 8 <= size <= MAX_OUTPUT_SIDE:
        raise ConfigError(f"size must be in [8, {MAX_OUTPUT_SIDE}], got {size}")
    if not 1 <= threads <= MAX_WORKERS:
        raise ConfigError(f"threads must be in [1, {MAX_WORKERS}], got {threads}")
    if segmenter is None and any(f.mask is None for f in plan.foregrounds):
        raise ConfigError("the plan has foregrounds without mask files but no segmenter was given",
                          hint="pass segmenter= (e.g. bglab.foreground.create('chroma'))")
    dst = Path(dst)
    params = {**plan.params, "size": size, "despill": despill}
    _check_previous(dst, params, overwrite)
    prepare_output_dir(dst)
    atomic_write_text(dst / STUDY_NAME, json.dumps(params, indent=2) + "\n")
    report = Report(plan, dst)
    t0 = time.perf_counter()
    bgs = _Backgrounds()
    units = plan.by_foreground()
    total = len(units)
    results: list[list[OutputRow]] = []

    def on_chunk(_: Sequence[Any], done: list[list[OutputRow]]) -> None:
        for rows in done:
            results.append(rows)
            if on_progress is not None:
                on_progress(len(results), total, rows)

    def build(chunk: Sequence[tuple[Foreground, list[PlannedOutput]]]) -> list[list[OutputRow]]:
        return [_build_one(fg, outs, dst, size, bgs, segmenter, despill, overwrite, write_masks) for fg, outs in chunk]

    if run_batch(units, lambda: SimpleNamespace(process=build), on_chunk, in_threads=threads):
        raise KeyboardInterrupt  # as before: a stopped study writes no report
    report.rows = [r for rows in results for r in rows]
    for label, stem, path, reason in plan.skipped:
        report.rows.append(OutputRow(None, "no-mask" if reason == "no mask" else "skipped-input", error=reason,
                                     label=label, stem=stem, fg_source=str(path)))
    report.seconds = time.perf_counter() - t0
    report.write()
    return report
