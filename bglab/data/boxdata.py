"""Box annotations: read them (CSV, Pascal VOC XML, COCO JSON), check them, clean them, turn them into samples.

Readers
    :func:`read_boxes` dispatches on the path: ``.csv`` (the face-mask layout
    ``file,width,height,label[,label_original],xmin,ymin,xmax,ymax``; ``path`` may stand for ``file``, and
    ``width,height`` may be absent), ``.xml`` or a folder of ``.xml`` files (Pascal VOC), ``.json`` (COCO).
    Every reader returns one typed list of :class:`BoxAnnotation`, one per box, each remembering where it came
    from (``source_line``: ``annotations.csv:12``, ``img7.xml:object 2``, ``coco.json:annotations[5]``).
    Readers never drop anything and never raise for a bad *row*: a row whose coordinates are not numbers, a
    VOC object without ``<bndbox>``, a COCO box for an unknown image id ... become annotations with
    ``box=None`` (or the box as read) and ``error`` set to the problem kind. A VOC file without objects or a
    COCO image without annotations becomes a marker annotation with ``error="files-with-no-boxes"``. Only a
    file that cannot be read at all (missing, not CSV/XML/JSON, no required columns) raises
    :class:`~bglab.errors.DatasetError` naming the file; in a folder of XML files, one broken XML is an
    ``unreadable`` annotation and the others are still read.

Checking
    :func:`check_boxes` reports every broken box by kind (:data:`KINDS`) with its file and line and applies the
    reference rule of the mask-detector study: in ``mode="train"`` a broken box is **skipped**; in
    ``mode="test"`` it is **repaired** where that is safe (:meth:`bglab.ops.box.Box.repair`: clip to the image,
    widen a zero-size side to one pixel) and **dropped** where it is not (NaN, text, reversed, wholly outside
    the image, missing image file, missing field, unknown image id). Nothing is changed silently: every
    skipped, repaired or dropped box is one :class:`BoxIssue` in the :class:`BoxCheckReport`.

Output
    :func:`write_boxes_csv` writes clean annotations back in the face-mask CSV layout (readable by
    :func:`read_boxes`, the ``box-csv`` locator and ``bglab train-det``); :func:`to_samples` /
    :func:`write_clean_manifest` give :class:`bglab.data.dataset.Sample` s (group = image file, so a split keeps
    all boxes of one image together) and a bglab manifest.
"""

from __future__ import annotations

import csv
import io
import json
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from bglab.data.dataset import Sample, write_manifest
from bglab.errors import BglabError, BoxError, ConfigError, DatasetError
from bglab.io.files import IMAGE_SUFFIXES, atomic_write_text
from bglab.ops.box import Box

__all__ = [
    "CSV_COLUMNS", "FATAL_KINDS", "KINDS", "BoxAnnotation", "BoxCheckReport", "BoxIssue", "check_boxes",
    "read_boxes", "read_boxes_coco", "read_boxes_csv", "read_boxes_voc", "to_samples", "write_boxes_csv",
    "write_clean_manifest",
]

#: Every problem kind :func:`check_boxes` reports, in report order.
KINDS: tuple[str, ...] = (
    "nan", "text", "negative", "reversed", "zero-width", "zero-height", "outside-image", "partly-outside",
    "missing-file", "image-size-mismatch", "files-with-no-boxes",
    # reader-level problems of the structured formats
    "missing-field", "unknown-image", "unknown-category", "unreadable",
)
#: Kinds that no repair can fix: such boxes are dropped in test mode too.
FATAL_KINDS: frozenset[str] = frozenset({
    "nan", "text", "reversed", "outside-image", "missing-file", "missing-field", "unknown-image",
    "unknown-category", "unreadable", "files-with-no-boxes",
})
#: Columns :func:`write_boxes_csv` writes (the face-mask layout plus where each box came from).
CSV_COLUMNS = ("file", "width", "height", "label", "xmin", "ymin", "xmax", "ymax", "source_line")
_COORDS = ("xmin", "ymin", "xmax", "ymax")

Mode = Literal["train", "test"]


@dataclass(frozen=True)
class BoxAnnotation:
    """One annotated box (or one reader-level problem) of one image.

    ``image`` is the file name as the annotation gives it (relative to the images folder); ``width`` and
    ``height`` the image size the annotation claims (None when the format or row has none); ``box`` the box
    in pixels as read (None when the coordinates could not be read); ``source_line`` where it came from;
    ``error`` a problem kind found while reading (``text``, ``missing-field``, ``unknown-image``,
    ``unknown-category``, ``unreadable``, ``files-with-no-boxes``; empty when the row read fine) and
    ``detail`` a sentence about it.
    """

    image: str
    width: float | None
    height: float | None
    label: str
    box: Box | None
    source_line: str
    error: str = ""
    detail: str = ""

    @property
    def is_marker(self) -> bool:
        """True for a "files-with-no-boxes" marker (an image the annotation file lists without any box)."""
        return self.error == "files-with-no-boxes"


# ------------------------------------------------------------------------------------------------ readers


def _num(text: Any) -> tuple[float | None, str]:
    """(value, "") for a number (NaN allowed: it is reported as kind ``nan`` later), else (None, why)."""
    if text is None:
        return None, "empty"
    if isinstance(text, bool):
        return None, f"{text!r} is not a number"
    if isinstance(text, int | float):
        return float(text), ""
    s = str(text).strip()
    if not s:
        return None, "empty"
    try:
        return float(s), ""
    except ValueError:
        return None, f"{s!r} is not a number"


def _coords(values: Sequence[Any], names: Sequence[str]) -> tuple[Box | None, str]:
    nums: list[float] = []
    bad: list[str] = []
    for name, v in zip(names, values, strict=True):
        x, why = _num(v)
        if x is None:
            bad.append(f"{name} {why}")
        else:
            nums.append(x)
    if bad:
        return None, "; ".join(bad)
    return Box.from_xyxy(*nums), ""


def read_boxes(path: str | Path, *, fmt: Literal["auto", "csv", "voc", "coco"] = "auto") -> list[BoxAnnotation]:
    """Read box annotations from a CSV file, a VOC XML file or folder of them, or a COCO JSON file."""
    p = Path(path)
    if fmt == "auto":
        if p.is_dir() or p.suffix.lower() == ".xml":
            fmt = "voc"
        elif p.suffix.lower() == ".json":
            fmt = "coco"
        elif p.suffix.lower() in (".csv", ".txt", ".tsv"):
            fmt = "csv"
        else:
            raise DatasetError("cannot tell the annotation format from the name", path=p,
                               hint="use a .csv, a .json (COCO), a .xml or a folder of .xml files (VOC)")
    if fmt == "csv":
        return read_boxes_csv(p)
    if fmt == "voc":
        return read_boxes_voc(p)
    if fmt == "coco":
        return read_boxes_coco(p)
    raise ConfigError(f"unknown annotation format {fmt!r}", hint="auto, csv, voc or coco")


def _read_text(p: Path, what: str) -> str:
    try:
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{what} not found", path=p, hint="check the path") from None
    except IsADirectoryError:
        raise DatasetError(f"{what} is a folder", path=p, hint=f"pass the {what} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {what}: {exc}", path=p, hint="it must be a UTF-8 text file") from None


def read_boxes_csv(path: str | Path) -> list[BoxAnnotation]:
    """Read a face-mask style CSV: one row per box, ``file,width,height,label,xmin,ymin,xmax,ymax``.

    ``path`` may replace ``file``; ``width,height`` are optional (then outside-image checks need the images
    folder). A row whose coordinates or size are not numbers is kept with ``error="text"``.
    """
    p = Path(path)
    text = _read_text(p, "annotation CSV")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [(h or "").strip() for h in (reader.fieldnames or [])]
    if not any(header):
        raise DatasetError("annotation CSV is empty (no header row)", path=p,
                           hint="first line: file,width,height,label,xmin,ymin,xmax,ymax")
    reader.fieldnames = header
    file_col = "file" if "file" in header else ("path" if "path" in header else None)
    missing = [c for c in ("label", *_COORDS) if c not in header]
    if file_col is None:
        missing.insert(0, "file")
    if missing:
        raise DatasetError(f"annotation CSV lacks column(s) {', '.join(missing)} (line 1 has: {', '.join(header)})",
                           path=p, hint="need file (or path), label, xmin, ymin, xmax, ymax; width, height optional")
    has_size = "width" in header and "height" in header
    out: list[BoxAnnotation] = []
    for row in reader:
        line = reader.line_num
        if not any((v or "").strip() for k, v in row.items() if k is not None and isinstance(v, str)):
            continue
        where = f"{p.name}:{line}"
        image = (row.get(file_col) or "").strip()
        label = (row.get("label") or "").strip()
        errors: list[str] = []
        if row.get(None):  # type: ignore[call-overload]
            errors.append(f"{len(row[None])} more cell(s) than header columns")  # type: ignore[index]
        if not image:
            out.append(BoxAnnotation("", None, None, label, None, where, "missing-field", "empty file name"))
            continue
        width = height = None
        if has_size:
            width, why_w = _num(row.get("width"))
            height, why_h = _num(row.get("height"))
            if width is None or height is None:
                errors.append("; ".join(f"{n} {w}" for n, w in (("width", why_w), ("height", why_h)) if w))
                width = height = None
            elif not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
                errors.append(f"image size {width:g}x{height:g} is not positive")
                width = height = None
        box, why = _coords([row.get(c) for c in _COORDS], _COORDS)
        if why:
            errors.insert(0, why)
        if not label:
            out.append(BoxAnnotation(image, width, height, label, box, where, "missing-field", "empty label"))
            continue
        out.append(BoxAnnotation(image, width, height, label, box, where, "text" if errors else "", "; ".join(errors)))
    return out


def _xml_text(el: ET.Element | None, tag: str) -> str | None:
    if el is None:
        return None
    child = el.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return None
    return child.text.strip()


def _read_voc_file(p: Path) -> list[BoxAnnotation]:
    try:
        root = ET.fromstring(_read_text(p, "VOC XML"))
    except ET.ParseError as exc:
        return [BoxAnnotation(p.stem, None, None, "", None, f"{p.name}:{exc.position[0]}", "unreadable",
                              f"not well-formed XML: {exc}")]
    filename = _xml_text(root, "filename")
    size = root.find("size")
    out: list[BoxAnnotation] = []
    image = filename or p.stem
    width = height = None
    size_problem = ""
    if size is None:
        size_problem = "no <size>"
    else:
        width, wy = _num(_xml_text(size, "width"))
        height, hy = _num(_xml_text(size, "height"))
        if width is None or height is None or not (width > 0 and height > 0):
            size_problem = f"<size> unusable (width {wy or width}, height {hy or height})"
            width = height = None
    objects = root.findall("object")
    if filename is None:
        out.append(BoxAnnotation(image, width, height, "", None, f"{p.name}:filename", "missing-field",
                                 "no <filename>; its boxes cannot be matched to an image"))
        return out
    if not objects:
        return [BoxAnnotation(image, width, height, "", None, f"{p.name}", "files-with-no-boxes",
                              "the XML lists no <object>")]
    for i, obj in enumerate(objects, start=1):
        where = f"{p.name}:object {i}"
        label = _xml_text(obj, "name")
        bnd = obj.find("bndbox")
        missing = [] if label else ["<name>"]
        if bnd is None:
            missing.append("<bndbox>")
            vals: list[str | None] = [None] * 4
        else:
            vals = [_xml_text(bnd, c) for c in _COORDS]
            missing += [f"<{c}>" for c, v in zip(_COORDS, vals, strict=True) if v is None]
        if missing:
            out.append(BoxAnnotation(image, width, height, label or "", None, where, "missing-field",
                                     f"object {i} has no {', '.join(missing)}"))
            continue
        box, why = _coords(vals, _COORDS)
        err, detail = ("text", why) if why else ("", "")
        if not err and size_problem:
            detail = size_problem
        out.append(BoxAnnotation(image, width, height, label or "", box, where, err, detail))
    return out


def read_boxes_voc(path: str | Path) -> list[BoxAnnotation]:
    """Read one Pascal VOC XML file, or every ``*.xml`` in a folder (sorted; not recursive)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() == ".xml" and f.is_file())
        if not files:
            raise DatasetError("folder holds no .xml files", path=p, hint="pass a folder of Pascal VOC XML files")
    elif p.is_file():
        files = [p]
    else:
        raise DatasetError("VOC annotation not found", path=p, hint="check the path")
    out: list[BoxAnnotation] = []
    for f in files:
        out.extend(_read_voc_file(f))
    return out


def read_boxes_coco(path: str | Path) -> list[BoxAnnotation]:
    """Read a COCO detection JSON (``images``, ``annotations`` with ``bbox=[x, y, w, h]``, ``categories``)."""
    p = Path(path)
    try:
        data = json.loads(_read_text(p, "COCO JSON"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"not valid JSON (line {exc.lineno}: {exc.msg})", path=p,
                           hint="a COCO file is one JSON object with images, annotations, categories") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        raise DatasetError("not a COCO detection file (need lists 'images' and 'annotations')", path=p,
                           hint="export the annotations as COCO JSON")
    out: list[BoxAnnotation] = []
    images: dict[Any, tuple[str, float | None, float | None]] = {}
    for i, im in enumerate(data["images"]):
        where = f"{p.name}:images[{i}]"
        if not isinstance(im, dict) or "id" not in im or not str(im.get("file_name") or "").strip():
            out.append(BoxAnnotation("", None, None, "", None, where, "missing-field",
                                     "image entry needs 'id' and 'file_name'"))
            continue
        w, _ = _num(im.get("width"))
        h, _ = _num(im.get("height"))
        if w is None or h is None or not (w > 0 and h > 0):
            w = h = None
        images[im["id"]] = (str(im["file_name"]).strip(), w, h)
    cats: dict[Any, str] = {}
    for c in data.get("categories") or []:
        if isinstance(c, dict) and "id" in c:
            cats[c["id"]] = str(c.get("name") or c["id"])
    used: set[Any] = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"{p.name}:annotations[{i}]"
        if not isinstance(ann, dict):
            out.append(BoxAnnotation("", None, None, "", None, where, "missing-field", "annotation is not an object"))
            continue
        img_id = ann.get("image_id")
        if img_id not in images:
            out.append(BoxAnnotation(f"<image_id {img_id!r}>", None, None, "", None, where, "unknown-image",
                                     f"image_id {img_id!r} is not in 'images'"))
            continue
        used.add(img_id)
        name, w, h = images[img_id]
        cat = ann.get("category_id")
        label = cats.get(cat, "")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list | tuple) or len(bbox) != 4:
            out.append(BoxAnnotation(name, w, h, label, None, where, "missing-field",
                                     f"bbox must be [x, y, width, height], got {bbox!r}"))
            continue
        xywh: list[float] = []
        bad = []
        for n, v in zip(("x", "y", "width", "height"), bbox, strict=True):
            x, why = _num(v)
            (bad.append(f"{n} {why}") if x is None else xywh.append(x))
        if bad:
            out.append(BoxAnnotation(name, w, h, label, None, where, "text", "; ".join(bad)))
            continue
        box = Box.from_xywh(*xywh)
        if not label:
            out.append(BoxAnnotation(name, w, h, "", box, where, "unknown-category",
                                     f"category_id {cat!r} is not in 'categories'"))
            continue
        out.append(BoxAnnotation(name, w, h, label, box, where))
    for i, im in enumerate(data["images"]):
        if isinstance(im, dict) and im.get("id") in images and im["id"] not in used:
            name, w, h = images[im["id"]]
            out.append(BoxAnnotation(name, w, h, "", None, f"{p.name}:images[{i}]", "files-with-no-boxes",
                                     "no annotation refers to this image"))
    return out


# ------------------------------------------------------------------------------------------------ checking


@dataclass(frozen=True)
class BoxIssue:
    """One problem: its kinds, the image, where the annotation is, what was done (skipped/repaired/dropped/none)."""

    kinds: tuple[str, ...]
    image: str
    source_line: str
    detail: str
    action: Literal["skipped", "repaired", "dropped", "reported"]
    box: tuple[float, float, float, float] | None = None
    repaired: tuple[float, float, float, float] | None = None

    def __str__(self) -> str:
        fix = f" -> {self.repaired}" if self.repaired is not None else ""
        return (f"{self.source_line or self.image}: {', '.join(self.kinds)} ({self.image}"
                f"{': ' + self.detail if self.detail else ''}){fix} [{self.action}]")

    def as_dict(self) -> dict[str, Any]:
        return {"kinds": list(self.kinds), "image": self.image, "source_line": self.source_line,
                "detail": self.detail, "action": self.action,
                "box": _json_box(self.box), "repaired": _json_box(self.repaired)}


def _json_box(b: tuple[float, ...] | None) -> list[float | None] | None:
    if b is None:
        return None
    return [v if math.isfinite(v) else None for v in b]


@dataclass
class BoxCheckReport:
    """What :func:`check_boxes` found and did. ``kept`` holds the usable (possibly repaired) annotations."""

    mode: Mode
    n_boxes: int = 0
    n_images: int = 0
    kept: list[BoxAnnotation] = field(default_factory=list)
    issues: list[BoxIssue] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Number of issues per kind (a box with two kinds counts in both), every kind listed."""
        c = Counter(k for i in self.issues for k in i.kinds)
        return {k: c.get(k, 0) for k in KINDS}

    @property
    def actions(self) -> dict[str, int]:
        c = Counter(i.action for i in self.issues)
        return {a: c.get(a, 0) for a in ("skipped", "repaired", "dropped", "reported")}

    @property
    def ok(self) -> bool:
        return not self.issues

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "boxes": self.n_boxes, "images": self.n_images, "kept": len(self.kept),
                "ok": self.ok, "counts": self.counts, "actions": self.actions,
                "issues": [i.as_dict() for i in self.issues]}

    def summary(self) -> str:
        nz = ", ".join(f"{k} {n}" for k, n in self.counts.items() if n) or "no problems"
        a = self.actions
        return (f"{self.n_boxes} boxes in {self.n_images} images ({self.mode} mode): {nz}; kept {len(self.kept)}, "
                f"skipped {a['skipped']}, repaired {a['repaired']}, dropped {a['dropped']}")


def _size_of(path: Path) -> tuple[int, int] | str:
    from bglab.io.files import image_size

    try:
        return image_size(path)
    except BglabError as exc:
        return str(exc)


def check_boxes(
    annotations: Iterable[BoxAnnotation],
    images_dir: str | Path | None = None,
    mode: Mode = "train",
    *,
    scan_unused: bool = True,
) -> BoxCheckReport:
    """Report every broken box by kind with its file and line, and apply the reference rule.

    ``mode="train"``: broken boxes are skipped. ``mode="test"``: negative, zero-size, partly-outside and
    size-mismatched boxes are repaired with :meth:`Box.repair` (against the real image size when
    ``images_dir`` is given, else the annotated size); NaN, text, reversed, wholly outside, missing-file and
    reader-level problems are dropped. With ``images_dir`` every referenced image must exist (``missing-file``)
    and be readable (``unreadable``), and its header
    size must equal the annotated size, and (with ``scan_unused``) image files in the folder that no box
    refers to are reported (``files-with-no-boxes``, action ``reported``; turn it off when checking one
    part of a data set).
    """
    if mode not in ("train", "test"):
        raise ConfigError(f"mode must be train or test, not {mode!r}")
    anns = list(annotations)
    root = Path(images_dir) if images_dir is not None else None
    if root is not None and not root.is_dir():
        raise DatasetError("images folder not found", path=root, hint="pass the folder holding the image files")
    report = BoxCheckReport(mode=mode)
    sizes: dict[str, tuple[int, int] | str] = {}
    images_seen: set[str] = set()

    def issue(a: BoxAnnotation, kinds: Sequence[str], detail: str, action: str, fixed: Box | None = None) -> None:
        report.issues.append(BoxIssue(tuple(kinds), a.image, a.source_line, detail, action,  # type: ignore[arg-type]
                                      a.box.xyxy if a.box is not None else None,
                                      fixed.xyxy if fixed is not None else None))

    for a in anns:
        if a.image:
            images_seen.add(a.image)
        if a.is_marker:
            issue(a, ["files-with-no-boxes"], a.detail, "reported")
            continue
        report.n_boxes += 1
        if a.error:
            found = [a.error]
            if a.error == "text" and a.box is not None:  # box read, but size cells were text
                found += [k for k in a.box.problems() if k not in found]
            issue(a, found, a.detail, "skipped" if mode == "train" else "dropped")
            continue
        assert a.box is not None
        kinds: list[str] = []
        details: list[str] = []
        w, h = a.width, a.height
        if root is not None:
            if a.image not in sizes:
                f = root / a.image
                sizes[a.image] = _size_of(f) if f.is_file() else f"no such file {f}"
            real = sizes[a.image]
            if isinstance(real, str):
                kind = "missing-file" if real.startswith("no such file") else "unreadable"
                issue(a, [kind], real, "skipped" if mode == "train" else "dropped")
                continue
            if w is not None and h is not None and (float(real[0]), float(real[1])) != (w, h):
                kinds.append("image-size-mismatch")
                details.append(f"annotation says {w:g}x{h:g}, file is {real[0]}x{real[1]}")
            w, h = float(real[0]), float(real[1])
        kinds = [*a.box.problems(w, h), *kinds]
        if not kinds:
            report.kept.append(a)
            continue
        detail = "; ".join(details)
        if mode == "train":
            issue(a, kinds, detail, "skipped")
            continue
        if any(k in FATAL_KINDS for k in kinds) or w is None or h is None:
            if w is None or h is None:
                detail = "; ".join([*details, "no image size to repair against"])
            issue(a, kinds, detail, "dropped")
            continue
        try:
            fixed = a.box.repair(w, h)
        except BoxError as exc:  # pragma: no cover - fatal kinds are caught above
            issue(a, kinds, f"{detail}; {exc}", "dropped")
            continue
        if "image-size-mismatch" in kinds:
            detail = f"{detail}; kept with the file's size {w:g}x{h:g}"
        issue(a, kinds, detail, "repaired", fixed)
        report.kept.append(replace(a, box=fixed, width=w, height=h))
    if root is not None and scan_unused:
        for f in sorted(root.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES \
                    and f.name not in images_seen:
                report.issues.append(BoxIssue(("files-with-no-boxes",), f.name, "", f"{f} has no box", "reported"))
                images_seen.add(f.name)
    report.n_images = len(images_seen)
    return report


# ------------------------------------------------------------------------------------------------ output


def write_boxes_csv(annotations: Iterable[BoxAnnotation], path: str | Path) -> Path:
    """Write usable annotations (box read, no error) in the face-mask CSV layout, atomically; returns ``path``."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for a in annotations:
        if a.error or a.box is None:
            continue
        size = ["" if a.width is None else f"{a.width:g}", "" if a.height is None else f"{a.height:g}"]
        w.writerow([a.image, *size, a.label, *(f"{v:g}" for v in a.box.xyxy), a.source_line])
    return atomic_write_text(Path(path), buf.getvalue())


def to_samples(annotations: Iterable[BoxAnnotation], images_dir: str | Path, *, origin: str = "boxes") -> list[Sample]:
    """One :class:`Sample` per usable box (path = ``images_dir/image``), grouped by image file.

    ``group`` is ``"image/<file name>"``, so :func:`bglab.data.dataset.split` keeps all boxes of one image in
    one split. Annotations with an error or no box are left out (check them first with :func:`check_boxes`).
    """
    root = Path(images_dir)
    return [Sample(path=root / a.image, label=a.label, origin=origin, box=a.box, group=f"image/{a.image}")
            for a in annotations if not a.error and a.box is not None]


def write_clean_manifest(annotations: Iterable[BoxAnnotation], images_dir: str | Path, path: str | Path,
                         *, origin: str = "boxes") -> Path:
    """Write the usable annotations as a bglab manifest (one row per box, group = image file)."""
    return write_manifest(to_samples(annotations, images_dir, origin=origin), path)
