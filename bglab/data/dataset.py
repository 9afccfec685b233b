"""The data-set layer: one typed list of :class:`Sample` from folder trees and CSV manifests.

Sources
    * :func:`read_imagefolder` reads an ImageFolder tree: one sub-folder per class, holding the images
      (``root/<class>/*.jpg``) or an ``images/`` folder next to a ``masks/`` folder
      (``root/<class>/images/<stem>.jpg`` + ``root/<class>/masks/<stem>.png``, the pets3 layout).
    * :func:`read_manifest` reads a CSV manifest (``path,label[,origin,mask,xmin,ymin,xmax,ymax,group]``);
      :func:`write_manifest` writes one back (atomically).
    * :func:`combine` joins sources; every sample keeps its *origin* (the domain it came from).

Groups
    Files that are near-duplicates of each other share a *group*, and :func:`split` never puts one group in
    two splits. The derived group of a sample is ``"<label>/<key>"`` where ``key`` is :func:`default_group` of
    its path: the file stem, cut before ``.rf.`` so that Roboflow's augmented copies of one original
    (``abc_jpg.rf.<hash>.jpg``) fall together. Derived groups are scoped per label, so two classes that
    happen to use the same file names (``0001.jpg`` in every class folder) do not clash. A manifest's
    ``group`` column (or :func:`regroup`) sets groups verbatim; such groups may span labels and origins,
    and :func:`split` still keeps each one whole.

Splits
    :func:`split` is stratified by label and origin, seeded, independent of input order, and keeps groups
    whole; see its docstring for the algorithm.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from bglab.errors import BglabError, ConfigError, DatasetError
from bglab.io.files import IMAGE_SUFFIXES, atomic_write_text, relative_posix
from bglab.ops.box import Box

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from rich.table import Table

#: Manifest columns, in the order :func:`write_manifest` writes them.
MANIFEST_COLUMNS = ("path", "label", "origin", "mask", "xmin", "ymin", "xmax", "ymax", "group")
_BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")
_SPLIT_NAMES = ("train", "val", "test")
_MAX_LISTED = 10


def default_group(path: str | Path) -> str:
    """The near-duplicate key of a file: its name before ``.rf.`` (Roboflow augmented copies), else its stem.

    ``training__rock.0001_png.rf.5e00...af_01894.jpg`` -> ``training__rock.0001_png``; ``a/b/cat_3.jpg`` ->
    ``cat_3``. Samples prefix it with their label (``"rock/training__rock.0001_png"``), see the module notes.
    """
    name = Path(path).name
    if ".rf." in name:
        head = name.split(".rf.", 1)[0]
        if head:
            return head
    return Path(name).stem


def _derived_group(label: str, path: Path, group_fn: Callable[[Path], str] = default_group) -> str:
    return f"{label}/{group_fn(path)}"


@dataclass(frozen=True)
class Sample:
    """One labelled image: where it is, its class, the domain it came from, and optional mask and box.

    ``group`` defaults to ``"<label>/<default_group(path)>"``; samples sharing a group never cross splits.
    """

    path: Path
    label: str
    origin: str
    mask_path: Path | None = None
    box: Box | None = None
    group: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        if self.mask_path is not None and not isinstance(self.mask_path, Path):
            object.__setattr__(self, "mask_path", Path(self.mask_path))
        if not self.group:
            object.__setattr__(self, "group", _derived_group(self.label, self.path))


def sample_key(s: Sample) -> str:
    """The sample's stable key: ``origin/label/filename`` (also the seed of its random distortions)."""
    return f"{s.origin}/{s.label}/{Path(s.path).name}"


def _sort_key(s: Sample) -> tuple[str, str, str, str]:
    return (s.origin, s.label, str(s.path), s.group)


def class_names(samples: Iterable[Sample]) -> list[str]:
    """The sorted distinct labels."""
    return sorted({s.label for s in samples})


def regroup(samples: Iterable[Sample], key: Callable[[Sample], str]) -> list[Sample]:
    """Copies of ``samples`` with ``group = key(sample)`` (e.g. to tie crops of one frame across labels)."""
    return [replace(s, group=str(key(s))) for s in samples]


# ----------------------------------------------------------------------------------------------- folders


def _is_hidden(p: Path) -> bool:
    return p.name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    """The image files of one folder; a folder that cannot be read is an error, never an empty class."""
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise DatasetError(f"cannot read this folder: {exc.strerror or exc}", path=folder,
                           hint="check its permissions (its images would be left out), or move it away") from None
    out = []
    for p in entries:
        if _is_hidden(p) or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if not p.is_file():
            if p.is_symlink() or not p.exists():
                raise DatasetError("not a readable file (a broken symlink or a symlink loop?)", path=p,
                                   hint="fix or remove the link")
            continue
        out.append(p)
    return sorted(out)


MASKS_DIR = "_masks"
"""``bglab variants`` keeps masks out of the image trees: ``DST/_masks/<kind>/...`` mirrors ``DST/<kind>/...``, so
``DST/<kind>`` holds images only and loads as an ImageFolder (torchvision's too)."""


def masks_root(image_root: str | Path) -> Path:
    """The sibling mask tree of an image tree: ``DST/<kind>`` -> ``DST/_masks/<kind>``."""
    image_root = Path(image_root)
    return image_root.parent / MASKS_DIR / image_root.name


def read_imagefolder(
    root: str | Path,
    *,
    origin: str | None = None,
    mask_dir: str | None = "masks",
    image_dir: str | None = None,
    group_fn: Callable[[Path], str] = default_group,
) -> list[Sample]:
    """Read an ImageFolder tree: the immediate (non-hidden) sub-folders of ``root`` are the classes.

    Per class, images are read from ``<class>/<image_dir>`` when ``image_dir`` is given, else from
    ``<class>/images`` when that folder exists (pets3 layout), else from ``<class>`` itself; not recursively.
    Masks are matched by stem in ``<class>/<mask_dir>``, else in the sibling mask tree of a ``bglab variants``
    output (:func:`masks_root`); a missing mask gives ``mask_path=None``; ``mask_dir=None`` turns masks off.
    Hidden and non-image files are skipped. ``origin`` defaults to the name of ``root``; groups are
    ``"<label>/<group_fn(path)>"``. Samples come sorted by label, then path.

    Raises :class:`DatasetError` when ``root`` is not a folder, has no class folders, or a class has no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("not a folder", path=root,
                           hint="pass a folder with one sub-folder of images per class")
    origin = origin or root.name or root.resolve().name
    classes = sorted((p for p in root.iterdir() if p.is_dir() and not _is_hidden(p)), key=lambda p: p.name)
    if not classes:
        hint = "pass the folder that contains one sub-folder per class (root/<class>/*.jpg)"
        if _image_files(root):
            hint = "the images lie directly in this folder; put them in one sub-folder per class"
        raise DatasetError("no class folders", path=root, hint=hint)
    samples: list[Sample] = []
    for cls in classes:
        if image_dir is not None:
            img_folder = cls / image_dir
            if not img_folder.is_dir():
                raise DatasetError(f"class {cls.name!r} has no {image_dir!r} folder", path=cls,
                                   hint="check --image-dir, or omit it to read the class folder itself")
        elif (cls / "images").is_dir():
            img_folder = cls / "images"
        else:
            img_folder = cls
        images = _image_files(img_folder)
        if not images:
            raise DatasetError(f"class {cls.name!r} holds no images", path=img_folder,
                               hint=f"add images ({', '.join(sorted(IMAGE_SUFFIXES))}) or remove the folder")
        masks: dict[str, Path] = {}
        mask_folder = None if mask_dir is None else cls / mask_dir
        if mask_folder is not None and not mask_folder.is_dir():
            mask_folder = masks_root(root) / cls.name  # a bglab variants tree: masks in the sibling _masks/ tree
        if mask_folder is not None and mask_folder.is_dir():
            # prefer .png when a stem has several mask files
            for m in sorted(_image_files(mask_folder), key=lambda p: (p.suffix.lower() != ".png", p.name)):
                masks.setdefault(m.stem, m)
        for img in images:
            samples.append(Sample(path=img, label=cls.name, origin=origin, mask_path=masks.get(img.stem),
                                  group=_derived_group(cls.name, img, group_fn)))
    return samples


# --------------------------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class ManifestProblem:
    """One bad manifest row: the manifest file, the 1-based line number in it, and what is wrong."""

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .-]{0,39}$")


def _describe_header(header: Sequence[str]) -> str:
    """What line 1 holds, for an error message, without quoting the file's content: column names are listed
    only when they all look like column names (a file that is not a CSV at all, e.g. /etc/passwd, is not
    echoed), at most 12 of them."""
    if header and all(_COLUMN_NAME.match(h) for h in header if h):
        more = f", ... ({len(header)} in all)" if len(header) > 12 else ""
        return f"line 1 has: {', '.join(header[:12])}{more}"
    return f"line 1 has {len(header)} cell(s) that do not look like column names: is this a CSV manifest?"


def _manifest_origin(path: Path) -> str:
    # a file called manifest.csv says nothing about its domain; its folder does (rps/webcam/manifest.csv)
    if path.stem.lower() == "manifest" and path.resolve().parent.name:
        return path.resolve().parent.name
    return path.stem


def _parse_box(row: dict[str, str]) -> Box | None | str:
    """A Box, None when all four cells are empty, or an error message."""
    cells = [(row.get(c) or "").strip() for c in _BOX_COLUMNS]
    if not any(cells):
        return None
    if not all(cells):
        missing = [c for c, v in zip(_BOX_COLUMNS, cells, strict=True) if not v]
        return f"box is incomplete: {', '.join(missing)} empty (give all four of xmin,ymin,xmax,ymax or none)"
    values: list[float] = []
    for c, v in zip(_BOX_COLUMNS, cells, strict=True):
        try:
            x = float(v)
        except ValueError:
            return f"box {c}={v!r} is not a number"
        if not math.isfinite(x):
            return f"box {c}={v!r} is not a finite number"
        values.append(x)
    box = Box.from_xyxy(*values)
    found = box.problems()
    if found:
        return (f"box {box.xyxy} is invalid: {', '.join(found)} "
                "(need 0 <= xmin < xmax and 0 <= ymin < ymax, in pixels)")
    return box


@overload
def read_manifest(path: str | Path, *, strict: Literal[True] = ...) -> list[Sample]: ...


@overload
def read_manifest(path: str | Path, *, strict: Literal[False]) -> tuple[list[Sample], list[ManifestProblem]]: ...


def read_manifest(path: str | Path, *, strict: bool = True):
    """Read a CSV manifest into samples.

    Columns: ``path`` and ``label`` (required); ``origin`` (default: the manifest's stem, or its folder's
    name when the file is called ``manifest.csv``); ``mask``; ``xmin,ymin,xmax,ymax`` (all four or none; a
    row may leave all four empty); ``group`` (verbatim; default derived as for folders). Relative paths are
    relative to the manifest's folder. Extra columns are ignored.

    Problems with the file itself (unreadable, no header, missing ``path``/``label`` columns, no rows) always
    raise :class:`DatasetError`. Row problems (empty path or label, file or mask not found, box not four
    finite numbers or empty/reversed) are collected: with ``strict=True`` one :class:`DatasetError` lists up
    to 10 of them by line number (all of them are on its ``problems`` attribute); with ``strict=False`` the
    bad rows are skipped and ``(samples, problems)`` is returned.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError("manifest not found", path=path, hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read manifest: {exc}", path=path,
                           hint="a manifest is a UTF-8 CSV file with a header row") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [(h or "").strip() for h in (reader.fieldnames or [])]
    if not any(header):
        raise DatasetError("manifest is empty (no header row)", path=path,
                           hint="first line: path,label[,origin,mask,xmin,ymin,xmax,ymax,group]")
    reader.fieldnames = header
    missing = [c for c in ("path", "label") if c not in header]
    if missing:
        raise DatasetError(f"manifest lacks required column(s) {', '.join(missing)} ({_describe_header(header)})",
                           path=path, hint="the header needs at least path,label")
    box_cols = [c for c in _BOX_COLUMNS if c in header]
    if box_cols and len(box_cols) != 4:
        raise DatasetError(f"manifest has box column(s) {', '.join(box_cols)} but not all of "
                           f"{', '.join(_BOX_COLUMNS)} (line 1)", path=path,
                           hint="give all four box columns or none")
    base = path.parent
    default_origin = _manifest_origin(path)
    samples: list[Sample] = []
    problems: list[ManifestProblem] = []
    n_rows = 0
    for row in reader:
        line = reader.line_num
        if not any((v or "").strip() for k, v in row.items() if k is not None):
            continue  # blank line
        n_rows += 1

        def bad(message: str, line: int = line) -> None:
            problems.append(ManifestProblem(path, line, message))

        if row.get(None):  # type: ignore[call-overload]
            bad(f"{len(row[None])} more cell(s) than header columns")  # type: ignore[index]
            continue
        rel = (row.get("path") or "").strip()
        label = (row.get("label") or "").strip()
        if not rel:
            bad("empty path")
            continue
        if not label:
            bad(f"empty label for {rel!r}")
            continue
        img = base / rel
        if not img.is_file():
            bad(f"file not found: {rel!r} (looked for {img})")
            continue
        mask_rel = (row.get("mask") or "").strip()
        mask = base / mask_rel if mask_rel else None
        if mask is not None and not mask.is_file():
            bad(f"mask not found: {mask_rel!r} (looked for {mask})")
            continue
        box = _parse_box(row) if box_cols else None
        if isinstance(box, str):
            bad(box)
            continue
        origin = (row.get("origin") or "").strip() or default_origin
        group = (row.get("group") or "").strip() or _derived_group(label, img)
        samples.append(Sample(path=img, label=label, origin=origin, mask_path=mask, box=box, group=group))
    if n_rows == 0:
        raise DatasetError("manifest has a header but no rows", path=path, hint="add one row per image")
    if strict:
        if problems:
            listed = "; ".join(f"line {p.line}: {p.message}" for p in problems[:_MAX_LISTED])
            more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
            exc = DatasetError(f"{len(problems)} bad row(s) of {n_rows}: {listed}{more}", path=path,
                               hint="fix these rows, or read with strict=False to skip them")
            exc.problems = problems  # type: ignore[attr-defined]
            raise exc
        return samples
    return samples, problems


def _fmt_float(x: float) -> str:
    return repr(float(x))


def write_manifest(samples: Iterable[Sample], path: str | Path) -> Path:
    """Write ``samples`` as a CSV manifest that :func:`read_manifest` reads back to equal samples.

    Paths under the manifest's folder are written relative to it, others absolute. The write is atomic
    (temporary file in the same folder, then ``os.replace``). Returns ``path``.
    """
    path = Path(path)
    base = path.parent
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for s in samples:
        box = ["", "", "", ""] if s.box is None else [_fmt_float(v) for v in s.box.xyxy]
        mask = relative_posix(s.mask_path, base) if s.mask_path is not None else ""
        w.writerow([relative_posix(s.path, base), s.label, s.origin, mask, *box, s.group])
    atomic_write_text(path, buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------------- combine


def combine(*sources: Iterable[Sample]) -> list[Sample]:
    """Concatenate sources, keeping every sample's origin.

    A file listed twice with the same label is kept once (first occurrence); with two different labels it
    raises :class:`DatasetError`.
    """
    seen: dict[str, Sample] = {}
    out: list[Sample] = []
    for src in sources:
        for s in src:
            key = os.path.normcase(os.path.abspath(s.path))
            prev = seen.get(key)
            if prev is None:
                seen[key] = s
                out.append(s)
            elif prev.label != s.label:
                raise DatasetError(
                    f"file has two labels: {prev.label!r} (origin {prev.origin!r}) and {s.label!r} "
                    f"(origin {s.origin!r})", path=s.path,
                    hint="a file belongs to one class; fix the label in one of the sources")
    return out


# ------------------------------------------------------------------------------------------------ split


@dataclass(frozen=True)
class Split:
    """Train / val / test sample lists (``test`` is empty for a two-way split), each sorted."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    fractions: tuple[float, ...] = (0.7, 0.15, 0.15)
    seed: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return _SPLIT_NAMES[: len(self.fractions)]

    def as_dict(self) -> dict[str, list[Sample]]:
        """``{"train": [...], "val": [...], "test": [...]}`` (no ``test`` for a two-way split)."""
        return {name: getattr(self, name) for name in self.names}

    def assignment(self) -> dict[Path, str]:
        """Each sample's path mapped to the name of its split."""
        return {s.path: name for name, part in self.as_dict().items() for s in part}


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fr = tuple(float(f) for f in fractions)
    if len(fr) not in (2, 3):
        raise ConfigError(f"split fractions {fr} need 2 (train, val) or 3 (train, val, test) entries",
                          hint="e.g. 0.7,0.15,0.15")
    if not all(math.isfinite(f) and f >= 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions {fr} must be non-negative and sum to 1", hint="e.g. 0.7,0.15,0.15")
    return fr


def split(
    samples: Iterable[Sample],
    *,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: Sequence[str] = ("label", "origin"),
) -> Split:
    """Seeded, stratified train/val(/test) split that keeps every group whole.

    Algorithm: groups (``Sample.group``) are the units; each belongs to the stratum (values of ``stratify``)
    most of its samples have. Within each stratum the groups are shuffled with a RNG seeded by ``seed`` and
    the stratum, then ordered largest first; when the stratum has at least as many groups as there are
    splits with non-zero fraction, each such split first gets one of the smallest groups (smallest fraction
    first), then every remaining group goes to the split furthest below its target count
    (``fraction x stratum size``). Samples are sorted first, so the result does not depend on input order.
    """
    fr = _check_fractions(fractions)
    strat = tuple(stratify)
    for name in strat:
        if name not in ("label", "origin", "group"):
            raise ConfigError(f"cannot stratify by {name!r}", hint="use label and/or origin")
    items = sorted(samples, key=_sort_key)
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in items:
        groups[s.group].append(s)
    by_stratum: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for g in sorted(groups):
        counts = Counter(tuple(getattr(s, a) for a in strat) for s in groups[g])
        stratum = min(counts, key=lambda k: (-counts[k], k))
        by_stratum[stratum].append(g)
    active = [i for i, f in enumerate(fr) if f > 0]
    parts: list[list[Sample]] = [[] for _ in fr]
    for stratum in sorted(by_stratum):
        keys = by_stratum[stratum]
        rng = random.Random(f"bglab.split|{seed}|{'|'.join(stratum)}")
        rng.shuffle(keys)
        keys.sort(key=lambda g: -len(groups[g]))  # stable: ties stay shuffled
        total = sum(len(groups[g]) for g in keys)
        target = [f * total for f in fr]
        have = [0] * len(fr)
        if len(keys) >= len(active):
            for i in sorted(active, key=lambda i: (fr[i], i)):
                g = keys.pop()
                parts[i].extend(groups[g])
                have[i] += len(groups[g])
        for g in keys:
            i = max(active, key=lambda i: (target[i] - have[i], -i))
            parts[i].extend(groups[g])
            have[i] += len(groups[g])
    for p in parts:
        p.sort(key=_sort_key)
    test = parts[2] if len(fr) == 3 else []
    return Split(parts[0], parts[1], test, fractions=fr, seed=seed)


# ----------------------------------------------------------------------------------------------- counts


def count_matrix(samples: Iterable[Sample], rows: str = "label", cols: str = "origin") -> dict[str, dict[str, int]]:
    """``{row_value: {col_value: n}}`` for two :class:`Sample` attributes (pure Python; no pandas)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in samples:
        out[str(getattr(s, rows))][str(getattr(s, cols))] += 1
    return {r: dict(sorted(c.items())) for r, c in sorted(out.items())}


def counts_table(samples: Iterable[Sample], rows: str = "label", cols: str = "origin") -> pd.DataFrame:
    """Counts per ``rows`` x ``cols`` (default class x origin) with a ``total`` row and column.

    Needs pandas (the ``train`` extra).
    """
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is in the train extra
        raise BglabError("counts_table needs pandas", hint="pip install 'bglab[train]' or use count_matrix") \
            from None
    m = count_matrix(samples, rows, cols)
    col_names = sorted({c for r in m.values() for c in r})
    df = pd.DataFrame([[m[r].get(c, 0) for c in col_names] for r in m], index=list(m), columns=col_names,
                      dtype="int64")
    df["total"] = df.sum(axis=1).astype("int64")
    df.loc["total"] = df.sum(axis=0).astype("int64")
    df.index.name, df.columns.name = rows, cols
    return df.astype("int64")


def format_counts(samples: Iterable[Sample], rows: str = "label", cols: str = "origin",
                  *, title: str | None = None) -> Table:
    """A rich table of counts per ``rows`` x ``cols`` with totals, for the CLI."""
    from rich.markup import escape
    from rich.table import Table

    from bglab.errors import safe_text

    def esc(text: object) -> str:  # class and origin names are folder names: user text, not markup
        return escape(safe_text(text))

    m = count_matrix(samples, rows, cols)
    col_names = sorted({c for r in m.values() for c in r})
    table = Table(title=None if title is None else esc(title))
    table.add_column(f"{rows} \\ {cols}")
    for c in col_names:
        table.add_column(esc(c), justify="right")
    table.add_column("total", justify="right", style="bold")
    for r, cells in m.items():
        table.add_row(esc(r), *(str(cells.get(c, 0)) for c in col_names), str(sum(cells.values())))
    col_tot = [sum(cells.get(c, 0) for cells in m.values()) for c in col_names]
    table.add_row("total", *(str(n) for n in col_tot), str(sum(col_tot)), style="bold", end_section=True)
    return table
