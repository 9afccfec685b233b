"""Background variants of a labelled image set (Xiao et al. 2021, "Noise or Signal"; Hashmi & Li factors).

Two layers: :func:`make_variant` is pure (numpy in, numpy out, no I/O) and builds one variant of one image from
its mask and box; :func:`generate_variants` runs it over an ImageFolder (pets3 layout or plain images with a
segmenter backend), in parallel, resumably, writing::

    DST/<kind-dir>/<class>/<stem>.png           the variant image: DST/<kind-dir> is an ImageFolder as it is
                                                (torchvision's ImageFolder, bglab experiment's from:)
    DST/_masks/<kind-dir>/<class>/<stem>.png    8-bit {0,255}: where the foreground is in that image
    DST/manifest.csv                            one row per (kind, image), status ok / suspect / not-found /
                                                skipped / failed, with the mask's coverage and QC reasons

Masks made by a ``backend`` go through QC (:mod:`bglab.ops.qc`, the same rules as ``bglab remove``): a mask
with no foreground makes every kind of that image ``not-found`` (nothing written); a mask that breaks a rule
makes them ``suspect`` (written with ``on_suspect="keep"``; not written with ``skip``; ``failed`` with
``fail``); the batch pass (coverage far from the median) marks written ones suspect at the end. Mask files
(ground truth) are the user's and are not judged.

Masks are thresholded at 0.5 once, and the binary mask is used for every kind (so the written mask is exactly
where the image shows the foreground). Mixed-* pairs and bg-color colours come from an RNG seeded by
``(seed, kind, class, stem)`` of each image, so they do not depend on the order of work, ``workers`` or
which outputs already exist. See docs/variants.md for the definitions of every kind.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bglab import ops
from bglab.data.dataset import MASKS_DIR, Sample
from bglab.errors import BglabError, ConfigError, MaskError
from bglab.ops.box import Box

__all__ = [
    "BOX_KINDS",
    "KINDS",
    "KIND_NAMES",
    "MANIFEST_COLUMNS",
    "MIXED_KINDS",
    "Kind",
    "VariantRow",
    "VariantSkipped",
    "VariantsReport",
    "generate_variants",
    "make_variant",
    "only_bg_tiles",
    "parse_kinds",
    "plan_pairs",
    "random_color",
]

KIND_NAMES: tuple[str, ...] = (
    "original", "only-fg", "no-fg", "only-bg-b", "only-bg-t",
    "mixed-same", "mixed-rand", "mixed-next", "bg-color", "bg-blur",
)
"""The fixed kinds (what ``all`` expands to); ``bg-region=<factor>`` comes on top, one per factor."""
MIXED_KINDS: tuple[str, ...] = ("mixed-same", "mixed-rand", "mixed-next")
BOX_KINDS: tuple[str, ...] = ("only-bg-b", "only-bg-t", "bg-region")
"""Kinds that need the foreground box (skipped when there is none)."""
MANIFEST_COLUMNS: tuple[str, ...] = (
    "kind", "label", "stem", "source", "output", "mask", "bg_source", "color", "status", "error", "coverage", "qc",
)
DEFAULT_BLUR = 15.0
_SUFFIX = ".png"


# ------------------------------------------------------------------------------------------------ kinds


@dataclass(frozen=True)
class Kind:
    """One variant kind: a name from :data:`KIND_NAMES` or ``bg-region`` with its expansion ``factor``."""

    name: str
    factor: float | None = None

    def __str__(self) -> str:
        return self.name if self.factor is None else f"{self.name}={self.factor:g}"

    @property
    def dir_name(self) -> str:
        """Folder name under DST: the kind name, ``bg-region-<factor>`` for ``bg-region=<factor>``."""
        return self.name if self.factor is None else f"{self.name}-{self.factor:g}"

    @property
    def is_mixed(self) -> bool:
        """True for Mixed-Same / Mixed-Rand / Mixed-Next (they need a partner image's background)."""
        return self.name in MIXED_KINDS

    @property
    def needs_box(self) -> bool:
        """True for kinds defined by the foreground box (Only-BG-B/T, bg-region)."""
        return self.name in BOX_KINDS


KINDS: tuple[Kind, ...] = tuple(Kind(n) for n in KIND_NAMES)
"""The kinds ``all`` stands for, in output order."""


VARIANTS_CONFIG_KEYS = ("kinds", "backend", "options", "locator", "seed", "size", "color", "blur", "on_suspect",
                        "qc", "workers")
"""The keys of a variants config file (``bglab variants SRC DST --config FILE``): the command's flags."""


def load_variants_config(path: str | Path) -> dict[str, Any]:
    """Read and check a variants config (YAML / TOML / JSON): known keys only, kinds and colour parsed once
    here so a typo is an error naming the file before any work."""
    from bglab.io.colors import parse_color
    from bglab.io.configfile import read_config_file

    raw = read_config_file(path, what="variants config", shape_hint="e.g. kinds: [only-fg, no-fg]")
    unknown = sorted(set(raw) - set(VARIANTS_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(map(str, unknown))}", path=path,
                          hint=f"a variants config takes: {', '.join(VARIANTS_CONFIG_KEYS)}")
    try:
        if raw.get("kinds") is not None:
            parse_kinds(raw["kinds"] if isinstance(raw["kinds"], str) else [str(k) for k in raw["kinds"]])
        if raw.get("color") is not None:
            parse_color(str(raw["color"]))
        if raw.get("options") is not None and not isinstance(raw["options"], Mapping):
            raise ConfigError("options must be a mapping of backend options, e.g. {threshold: 0.4}")
        if raw.get("qc") is not None and not isinstance(raw["qc"], Mapping):
            raise ConfigError("qc must be a mapping of QC rules, e.g. {min_coverage: 0.01}")
    except ConfigError as exc:
        raise ConfigError(exc.message, path=path, hint=exc.hint) from None
    return dict(raw)


def parse_kinds(text: str | Sequence[str]) -> list[Kind]:
    """Parse ``"all,bg-region=1.5"`` (or a list of such items) into kinds, duplicates dropped, order kept."""
    items = text.split(",") if isinstance(text, str) else [t for s in text for t in str(s).split(",")]
    out: list[Kind] = []
    valid = ", ".join(KIND_NAMES) + ", bg-region=<factor>"
    for raw in items:
        item = raw.strip().lower()
        item = "bg-color" if item == "bg-colour" else item  # the British spelling is accepted everywhere
        if not item:
            continue
        if item == "all":
            new = list(KINDS)
        elif item.startswith("bg-region"):
            _, sep, val = item.partition("=")
            try:
                factor = float(val) if sep else float("nan")
            except ValueError:
                factor = float("nan")
            if not (math.isfinite(factor) and factor >= 1.0):
                raise ConfigError(f"bad region kind {raw.strip()!r}: needs a factor >= 1",
                                  hint="write e.g. bg-region=1.5 (the box expanded 1.5x; 1 = the box itself)")
            new = [Kind("bg-region", factor)]
        elif item in KIND_NAMES:
            new = [Kind(item)]
        else:
            raise ConfigError(f"unknown variant kind {raw.strip()!r}", hint=f"use all or a comma list of: {valid}")
        out.extend(k for k in new if k not in out)
    if not out:
        raise ConfigError("no variant kinds given", hint=f"use all or a comma list of: {valid}")
    return out


# ------------------------------------------------------------------------------------------- pure part


class VariantSkipped(BglabError):  # noqa: N818 - it is an outcome, recorded as "skipped", not a failure
    """The variant is undefined for this image (no foreground, no box, no partner): recorded as skipped."""


def _rng(seed: int, *parts: object) -> random.Random:
    # str seeds are hashed with SHA-512 by random.Random: stable across processes and PYTHONHASHSEED
    return random.Random("bglab.background.variants|" + "|".join(str(p) for p in (seed, *parts)))


def random_color(seed: int, label: str, stem: str) -> tuple[int, int, int]:
    """The bg-color colour of one image when no ``--color`` is given: uniform RGB, seeded by image."""
    r = _rng(seed, "bg-color", label, stem)
    return (r.randrange(256), r.randrange(256), r.randrange(256))


def _hex(color: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in color))


def _rect_mask(shape: tuple[int, int], box: Box) -> np.ndarray:
    h, w = shape
    x0, y0, x1, y1 = ops.box_to_pixels(box, w, h)
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def only_bg_tiles(image: np.ndarray, mask: np.ndarray, box: Box | None = None) -> np.ndarray:
    """Only-BG-T: the foreground box filled with tiles of the image's own background (``fill_box`` tiles).

    ``box`` defaults to the mask's box; with no foreground at all the image is returned unchanged (nothing
    to hide). Used for the backgrounds of Mixed-* too.
    """
    fg = ops.binarize(mask)
    box = box if box is not None else Box.from_mask(fg)
    if box is None:
        return np.array(image, dtype=np.uint8, copy=True)
    return ops.fill_box(image, box, mode="tiles", mask=fg)


def make_variant(
    kind: Kind | str,
    image: np.ndarray,
    mask: np.ndarray,
    box: Box | None = None,
    partner_bg: np.ndarray | None = None,
    *,
    color: Sequence[int] | None = None,
    blur: float = DEFAULT_BLUR,
    rng: random.Random | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Build one variant of one image (pure); returns the RGB image and its uint8 {0,255} mask.

    ``mask`` is thresholded at 0.5; ``box`` defaults to the mask's box. Mixed-* need ``partner_bg`` (the
    partner's Only-BG-T, any size: fitted with "cover"). bg-color uses ``color``, else one drawn from ``rng``.
    Raises :class:`VariantSkipped` when the kind is undefined here (no foreground / no box).
    """
    k = parse_kinds(kind)[0] if isinstance(kind, str) else kind
    img = np.asarray(image)
    fg = ops.binarize(ops.as_soft(mask, img.shape))
    if box is None:
        box = Box.from_mask(fg)
    if k.needs_box and box is None:
        raise VariantSkipped(f"{k}: the mask has no foreground, so there is no box")
    if k.is_mixed and not fg.any():
        raise VariantSkipped(f"{k}: the mask has no foreground to paste")
    name = k.name
    out_mask = fg
    if name == "original":
        out = np.array(img, copy=True)
    elif name == "only-fg":
        out = ops.only_foreground(img, fg)
    elif name == "no-fg":
        out = ops.remove_foreground(img, fg)
    elif name in ("only-bg-b", "only-bg-t"):
        assert box is not None
        out = ops.fill_box(img, box, mode="black") if name == "only-bg-b" else ops.fill_box(img, box, mode="tiles",
                                                                                            mask=fg)
        out_mask = _rect_mask(img.shape[:2], box)
    elif k.is_mixed:
        if partner_bg is None:
            raise ConfigError(f"{k} needs partner_bg (the partner image's Only-BG-T)")
        out = ops.replace_background(img, fg, partner_bg, fit="cover")
    elif name == "bg-color":
        if color is None:
            r = rng or random.Random()
            color = (r.randrange(256), r.randrange(256), r.randrange(256))
        out = ops.fill_background(img, fg, tuple(int(c) for c in color))
    elif name == "bg-blur":
        out = ops.blur_background(img, fg, blur)
    elif name == "bg-region":
        assert box is not None and k.factor is not None
        h, w = img.shape[:2]
        region = _rect_mask((h, w), ops.expand_box_for_region(box, k.factor, w, h))
        out = np.where(region[:, :, None], img, np.uint8(0)).astype(np.uint8)
        out_mask = fg & region
    else:  # pragma: no cover - Kind values come from parse_kinds
        raise ConfigError(f"unknown variant kind {k}")
    return np.ascontiguousarray(out), out_mask.astype(np.uint8) * 255


# ---------------------------------------------------------------------------------------------- pairing


def _key(s: Sample) -> tuple[str, str]:
    return (s.label, str(s.path))


def plan_pairs(samples: Sequence[Sample], seed: int = 0) -> dict[str, dict[Path, Path | None]]:
    """Partner image of every sample for each Mixed-* kind: ``{kind: {sample.path: partner.path or None}}``.

    mixed-same: a random other image of the same class; mixed-rand: of any class; mixed-next: of the next
    class (sorted names, wrapping; with one class, the same class). Never the image itself (None when there
    is no other candidate). Each choice is seeded by ``(seed, kind, class, stem)`` alone.
    """
    items = sorted(samples, key=_key)
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in items:
        by_class[s.label].append(s)
    classes = sorted(by_class)
    nxt = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
    out: dict[str, dict[Path, Path | None]] = {k: {} for k in MIXED_KINDS}
    for s in items:
        pools = {"mixed-same": by_class[s.label], "mixed-rand": items, "mixed-next": by_class[nxt[s.label]]}
        for kind, pool in pools.items():
            cands = [c for c in pool if c.path != s.path]
            if not cands:
                out[kind][s.path] = None
                continue
            r = _rng(seed, kind, s.label, s.path.stem)
            out[kind][s.path] = cands[r.randrange(len(cands))].path
    return out


# -------------------------------------------------------------------------------------------- batch part


@dataclass
class VariantRow:
    """One manifest row: what happened to one (kind, image); paths of outputs are relative to DST."""

    kind: str
    label: str
    stem: str
    source: str
    output: str = ""
    mask: str = ""
    bg_source: str = ""
    color: str = ""
    status: str = "ok"
    error: str = ""
    coverage: str = ""  # the backend mask's foreground fraction ('' for mask files and reused outputs)
    qc: str = ""  # the QC rules the backend mask broke (status suspect) or "no foreground found"
    reused: bool = False  # output existed already (not in the manifest)

    def as_list(self) -> list[str]:
        return [str(getattr(self, c)) for c in MANIFEST_COLUMNS]


@dataclass
class VariantsReport:
    """Every manifest row of a run, where the manifest went, and how long it took."""

    rows: list[VariantRow] = field(default_factory=list)
    manifest_path: Path | None = None
    seconds: float = 0.0
    images: int = 0
    interrupted: bool = False  # Ctrl+C / SIGTERM: the manifest lists what finished

    def count(self, status: str | None = None, kind: str | None = None) -> int:
        """Rows with this status (and kind, when given)."""
        return sum((status is None or r.status == status) and (kind is None or r.kind == kind) for r in self.rows)

    @property
    def reused(self) -> int:
        """Rows whose outputs already existed and were kept."""
        return sum(r.reused for r in self.rows)

    @property
    def failed(self) -> list[VariantRow]:
        return [r for r in self.rows if r.status == "failed"]

    def summary(self) -> dict[str, dict[str, int]]:
        """``{kind: {"ok": n, "skipped": n, "failed": n}}`` in kind order."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rows:
            d = out.setdefault(r.kind, {"ok": 0, "skipped": 0, "failed": 0})
            d[r.status] = d.get(r.status, 0) + 1
        return out


@dataclass(frozen=True)
class _Ref:
    """What a worker needs to load one image (picklable)."""

    path: Path
    label: str
    stem: str
    mask_path: Path | None


@dataclass(frozen=True)
class _Job:
    ref: _Ref
    kinds: tuple[Kind, ...]
    partners: Mapping[str, _Ref]
    color: tuple[int, int, int] | None


def _out_paths(kind: Kind, label: str, stem: str) -> tuple[str, str]:
    rel = f"{kind.dir_name}/{label}/{stem}{_SUFFIX}"
    return rel, f"{MASKS_DIR}/{rel}"


class _Worker:
    """Loads images, masks and boxes (GT, backend or locator) and writes the variants of one image at a time."""

    def __init__(self, config: Mapping[str, Any], threads: int = 0, device: str = "cpu") -> None:
        from bglab.foreground import Runtime, create

        runtime = Runtime.for_threads(threads, device)
        self.dst = Path(config["dst"])
        self.size: int | None = config["size"]
        self.blur: float = config["blur"]
        self.cache = Path(config["cache"]) if config["cache"] else None
        self.segmenter = (create(config["backend"], kind="segmenter", runtime=runtime,
                                 **config["backend_options"]) if config["backend"] else None)
        self.locator = (create(config["locator"], kind="locator", runtime=runtime, **config["locator_options"])
                        if config["locator"] else None)
        from bglab.foreground.qc import QCRules, uses_screen

        qc = config.get("qc", {})
        self.qc = None if qc is None or self.segmenter is None else QCRules.from_options(qc)
        self.on_suspect = config.get("on_suspect", "keep")
        self.screen = uses_screen(config["backend"])

    def load(self, ref: _Ref) -> tuple[np.ndarray, np.ndarray, Box | None, str]:
        """Image, boolean foreground, box (None: no box) and why there is no box."""
        from bglab.io.files import read_image, read_mask, write_mask

        image = read_image(ref.path)
        if self.segmenter is None:
            if ref.mask_path is None:
                raise MaskError("no mask file for this image", path=ref.path,
                                hint=f"add masks/{ref.stem}.png next to images/, or pass --backend NAME")
            raw = read_mask(ref.mask_path, shape=image.shape)
        else:
            cached = self.cache / ref.label / f"{ref.stem}.png" if self.cache else None
            if cached is not None and cached.is_file():
                raw = read_mask(cached, shape=image.shape)
            else:
                raw = ops.binarize(self.segmenter.predict(image, source=ref.path))
                if cached is not None:
                    write_mask(cached, raw)
        fg = ops.binarize(ops.as_soft(raw, image.shape))
        if self.locator is not None:
            boxes = self.locator.locate(image, source=ref.path)
            box = boxes[0] if boxes else None
            why = "the locator found no box"
        else:
            box = Box.from_mask(fg)
            why = "the mask has no foreground"
        return image, fg, box, why

    def _shrink(self, image: np.ndarray, fg: np.ndarray, box: Box | None) -> tuple[np.ndarray, np.ndarray,
                                                                                   Box | None, float]:
        """Resize to fit ``size`` (aspect kept) *before* making variants, so masks stay exact and Only-BG-T
        never tiles from padding; the blur sigma is scaled to stay in source-image pixels."""
        assert self.size is not None
        h, w = image.shape[:2]
        t = ops.pad_transform(w, h, self.size)
        nw, nh = t.new_width, t.new_height
        small = ops.resize(image, (nw, nh), "area")
        small_fg = ops.resize(fg.astype(np.uint8) * 255, (nw, nh), "nearest") > 127
        if self.locator is not None:
            box = box.scale(nw / w, nh / h) if box is not None else None
        else:
            box = Box.from_mask(small_fg)
        return small, small_fg, box, self.blur * t.scale

    def process(self, jobs: Sequence[_Job]) -> list[list[VariantRow]]:
        """The rows of each job (one image, its kinds), in order."""
        return [self._variants(j) for j in jobs]

    def _variants(self, job: _Job) -> list[VariantRow]:
        from bglab.io.files import write_image, write_mask

        ref = job.ref
        rows: list[VariantRow] = []

        def row(kind: Kind, **kw: Any) -> VariantRow:
            p = job.partners.get(kind.name)
            color = _hex(job.color) if kind.name == "bg-color" and job.color is not None else ""
            return VariantRow(str(kind), ref.label, ref.stem, str(ref.path), bg_source=str(p.path) if p else "",
                              color=color, **kw)

        try:
            image, fg, box, why = self.load(ref)
        except BglabError as exc:
            return [row(k, status="failed", error=str(exc)) for k in job.kinds]
        except Exception as exc:  # noqa: BLE001 - a batch records unexpected failures and goes on
            err = f"{ref.path}: unexpected {type(exc).__name__}: {exc}"
            return [row(k, status="failed", error=err) for k in job.kinds]
        qc: dict[str, str] = {}
        if self.qc is not None:
            from bglab.foreground.qc import check_mask

            chk = check_mask(fg, self.qc, image=image, screen=self.screen)
            qc["coverage"] = f"{chk.coverage:.4f}"
            if chk.status == "not-found":
                return [row(k, status="not-found", qc="no foreground found", **qc) for k in job.kinds]
            if chk.status == "suspect":
                qc["qc"] = chk.reason
                if self.on_suspect == "skip":
                    return [row(k, status="suspect", **qc) for k in job.kinds]
                if self.on_suspect == "fail":
                    err = f"{ref.path}: suspect mask ({chk.reason}); --on-suspect fail"
                    return [row(k, status="failed", error=err, **qc) for k in job.kinds]
        blur = self.blur
        if self.size:
            image, fg, box, blur = self._shrink(image, fg, box)
        for kind in job.kinds:
            try:
                partner_bg = None
                if kind.needs_box and box is None:
                    raise VariantSkipped(f"{kind}: {why}")
                if kind.is_mixed:
                    if not fg.any():
                        raise VariantSkipped(f"{kind}: the mask has no foreground to paste")
                    p = job.partners[kind.name]
                    try:
                        p_img, p_fg, p_box, _ = self.load(p)
                    except BglabError as exc:
                        raise BglabError(f"background partner failed: {exc}") from None
                    partner_bg = only_bg_tiles(p_img, p_fg, p_box)
                out, mask = make_variant(kind, image, fg, box, partner_bg, color=job.color, blur=blur)
                if self.size:  # already resized to fit: this only pads (black image, background mask)
                    out, _ = ops.resize_pad(out, self.size)
                    mask, _ = ops.resize_mask_pad(mask, self.size)
                rel_img, rel_mask = _out_paths(kind, ref.label, ref.stem)
                write_image(self.dst / rel_img, out)
                write_mask(self.dst / rel_mask, mask)
                rows.append(row(kind, output=rel_img, mask=rel_mask, status="suspect" if qc.get("qc") else "ok",
                                **qc))
            except VariantSkipped as exc:
                rows.append(row(kind, status="skipped", error=exc.message, **qc))
            except BglabError as exc:
                rows.append(row(kind, status="failed", error=str(exc)))
            except Exception as exc:  # noqa: BLE001
                rows.append(row(kind, status="failed", error=f"{ref.path}: unexpected {type(exc).__name__}: {exc}"))
        return rows

_PRELOAD = ["numpy", "cv2", "PIL.Image", "bglab.io.files", "bglab.ops", "bglab.background.variants", "bglab.foreground"]


def _check_backend(name: str | None, kind: str, options: Mapping[str, Any] | None = None) -> None:
    if name is None:
        return
    from bglab.foreground import resolve

    resolve(name, kind, options, available=True)  # type: ignore[arg-type]


def generate_variants(
    src: str | Path,
    dst: str | Path,
    kinds: str | Sequence[Kind | str] = "all",
    *,
    backend: str | None = None,
    backend_options: Mapping[str, Any] | None = None,
    locator: str | None = None,
    locator_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    workers: int = 1,
    size: int | None = None,
    color: Sequence[int] | None = None,
    blur: float = DEFAULT_BLUR,
    overwrite: bool = False,
    progress: Callable[[int, int, list[VariantRow]], None] | None = None,
    qc: Mapping[str, Any] | None | bool = True,
    on_suspect: str = "keep",
    engine: str = "local",
    engine_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> VariantsReport:
    """Write the requested variants of every image of the ImageFolder ``src`` into ``dst`` (see module doc).

    Masks: ``src``'s ``<class>/masks`` files, or ``backend`` (a segmenter name) when given. Boxes: the mask's
    box, or ``locator``'s first box. Existing outputs are kept unless ``overwrite``. ``progress(done, total,
    rows)`` is called once with ``done=0`` and after each image. Bad images never stop the run. ``qc``:
    QC rule overrides for backend masks (``True``: the defaults, ``False``: no QC); ``on_suspect``: keep |
    skip | fail (see the module doc). ``workers`` processes, or Ray actors with ``engine="ray"``
    (:func:`bglab.batch.engine.run_batch`); ``device``: where the ONNX backends run, ``cpu`` | ``cuda`` | ``auto``.
    """
    from bglab.batch.engine import check_engine, run_batch, write_csv
    from bglab.data.dataset import read_imagefolder
    from bglab.io.files import check_separate, prepare_output_dir
    from bglab.io.limits import MAX_OUTPUT_SIDE, MAX_WORKERS

    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    items = [kinds] if isinstance(kinds, str) else list(kinds)
    kind_list = list(dict.fromkeys(k for it in items for k in ([it] if isinstance(it, Kind) else parse_kinds(it))))
    if not 1 <= int(workers) <= MAX_WORKERS:
        raise ConfigError(f"workers must be in [1, {MAX_WORKERS}], got {workers}")
    if size is not None and not 1 <= int(size) <= MAX_OUTPUT_SIDE:
        raise ConfigError(f"size must be a number of pixels in [1, {MAX_OUTPUT_SIDE}], got {size}")
    if not (math.isfinite(float(blur)) and blur >= 0):
        raise ConfigError(f"blur must be >= 0 (a Gaussian sigma in pixels), got {blur}")
    check_engine(engine, engine_options)  # an unknown engine or a silent Ray cluster: before anything is written
    from bglab.foreground.onnxrt import check_device

    device = check_device(device)  # cuda without onnxruntime-gpu: before anything is written
    check_separate([src], dst)  # the shared check: DST = SRC, DST inside SRC, SRC inside DST
    _check_backend(backend, "segmenter", backend_options)
    _check_backend(locator, "locator")
    from bglab.foreground.qc import check_on_suspect, rules_from

    on_suspect = check_on_suspect(on_suspect)
    qc_options = None if qc is False else ({} if qc is True or qc is None else dict(qc))
    if qc_options is not None:
        rules_from(qc_options)  # checked here, before any work
    samples = sorted(read_imagefolder(src), key=_key)
    if backend is not None:
        from bglab.foreground.auto import resolve

        backend_options = resolve(backend, backend_options or {}, [s.path for s in samples])  # auto: per data set
    if backend is None and not any(s.mask_path for s in samples):
        raise ConfigError("the source has no masks (no <class>/masks/<stem>.png files)", path=src,
                          hint="compute masks with a segmenter: --backend NAME (see `bglab backends`)")
    mixed = [k for k in kind_list if k.is_mixed]
    pairs = plan_pairs(samples, seed) if mixed else {}
    by_path = {s.path: s for s in samples}

    def ref(s: Sample) -> _Ref:
        return _Ref(s.path, s.label, s.path.stem, s.mask_path)

    rows: dict[tuple[int, str, str], VariantRow] = {}
    order = {k: i for i, k in enumerate(kind_list)}
    order_by_name = {str(k): i for k, i in order.items()}
    jobs: list[_Job] = []
    seen: dict[tuple[str, str], Path] = {}
    for s in samples:
        stem = s.path.stem
        partners = {k.name: ref(by_path[p]) for k in mixed if (p := pairs[k.name][s.path]) is not None}
        col = tuple(int(c) for c in color) if color is not None else random_color(seed, s.label, stem)

        def base(kind: Kind, s: Sample = s, stem: str = stem, partners: dict = partners,
                 col: tuple = col) -> VariantRow:
            p = partners.get(kind.name)
            return VariantRow(str(kind), s.label, stem, str(s.path), bg_source=str(p.path) if p else "",
                              color=_hex(col) if kind.name == "bg-color" else "")

        clash = seen.get((s.label, stem))
        seen.setdefault((s.label, stem), s.path)
        todo: list[Kind] = []
        for k in kind_list:
            key = (order[k], s.label, stem if clash is None else str(s.path))
            r = base(k)
            if clash is not None:
                r.status, r.error = "failed", f"{s.path}: output name clashes with {clash} (same stem); rename one"
                rows[key] = r
                continue
            if k.is_mixed and k.name not in partners:
                r.status, r.error = "skipped", f"{k}: no other image to take the background from"
                rows[key] = r
                continue
            rel_img, rel_mask = _out_paths(k, s.label, stem)
            if not overwrite and (dst / rel_img).is_file() and (dst / rel_mask).is_file():
                r.output, r.mask, r.reused = rel_img, rel_mask, True
                rows[key] = r
                continue
            todo.append(k)
        if todo:
            jobs.append(_Job(ref(s), tuple(todo), partners, col))

    config = {
        "dst": str(dst), "size": int(size) if size else None, "blur": float(blur),
        "backend": backend, "backend_options": dict(backend_options or {}),
        "locator": locator, "locator_options": dict(locator_options or {}),
        "cache": str(_cache_dir(dst, backend, backend_options)) if backend and mixed else None,
        "qc": qc_options, "on_suspect": on_suspect,
    }
    total = len(samples)
    done = total - len(jobs)
    if progress is not None:
        progress(done, total, [])
    prepare_output_dir(dst)
    pooled = engine == "ray" or int(workers) > 1
    count = {"done": done}

    def on_chunk(_: Sequence[_Job], results: list[list[VariantRow]]) -> None:
        for job_rows in results:
            for r in job_rows:
                rows[(order_by_name[r.kind], r.label, r.stem)] = r
            count["done"] += 1
            if progress is not None:
                progress(count["done"], total, job_rows)

    chunk = max(1, min(8, len(jobs) // (int(workers) * 4))) if pooled else 1  # small chunks: balanced workers
    interrupted = run_batch(jobs, partial(_Worker, config, 1 if pooled else 0, device), on_chunk, workers=int(workers),
                            chunk=chunk, engine=engine, engine_options=engine_options, threads=1, preload=_PRELOAD)
    report = VariantsReport(rows=[rows[k] for k in sorted(rows)], images=total, interrupted=interrupted)
    if backend and qc_options is not None:
        _batch_qc(report.rows, rules_from(qc_options), dst, on_suspect)
    report.manifest_path = write_csv(dst / "manifest.csv", MANIFEST_COLUMNS, (r.as_list() for r in report.rows))
    report.seconds = time.perf_counter() - t0
    return report


def _batch_qc(rows: Sequence[VariantRow], rules: Any, dst: Path, on_suspect: str) -> None:
    """The QC batch pass over this run's backend masks (one coverage per image): far from the median -> suspect
    (outputs removed again under ``on_suspect`` skip / fail)."""
    from bglab.ops.qc import median_outliers

    per_image: dict[tuple[str, str], list[VariantRow]] = defaultdict(list)
    for r in rows:
        if r.coverage and r.status in ("ok", "suspect", "skipped"):
            per_image[(r.label, r.stem)].append(r)
    keys = list(per_image)
    covs = [float(per_image[k][0].coverage) for k in keys]
    for k, why in zip(keys, median_outliers(covs, rules), strict=True):
        if not why:
            continue
        for r in per_image[k]:
            r.qc = f"{r.qc}; {why}" if r.qc else why
            if r.status == "ok":
                r.status = "suspect"
            if on_suspect != "keep" and r.output:
                for rel in (r.output, r.mask):
                    (dst / rel).unlink(missing_ok=True)
                r.output = r.mask = ""
                if on_suspect == "fail":
                    r.status, r.error = "failed", f"{r.source}: suspect mask ({r.qc}); --on-suspect fail"


def _cache_dir(dst: Path, backend: str | None, options: Mapping[str, Any] | None) -> Path:
    """Where backend masks are kept for re-use as Mixed-* partners (one folder per backend + options)."""
    digest = hashlib.sha256(json.dumps(dict(options or {}), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return dst / ".cache" / f"masks-{backend}-{digest}"
