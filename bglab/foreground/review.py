"""Blind side-by-side review of segmenters on photos that have no ground-truth masks.

Without masks, the honest way to choose a segmenter for one's own photos is to look at the cut-outs without
knowing which backend made which. :func:`make_review` samples photos and writes, per photo, the cut-out of
every backend in a random order (columns A, B, C, ... shuffled per row) on contact sheets, a judgement CSV to
fill with ``y`` (usable) / ``n`` (not), the same rows as a page to judge by clicking (it saves that CSV), and
the key (which column was which backend). :func:`tally_review` reads the filled CSV and unblinds it.
``bglab review-seg`` is the command; docs/segmenter-v4.md used it.
"""

from __future__ import annotations

import csv
import io
import json
import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bglab.errors import BglabError, ConfigError, DatasetError

KEY_FILE = "key.json"
JUDGEMENTS_FILE = "judgements.csv"
PAGE_FILE = "review.html"
SHEET_NAME = "sheet-{:02d}.png"
BACKDROP = (30, 60, 150)  # dark blue: grey shadows, skin, white walls and black sleeves all show against it
YES = frozenset({"y", "yes", "1", "usable"})
NO = frozenset({"n", "no", "0", "unusable"})


@dataclass(frozen=True)
class ReviewMade:
    """What :func:`make_review` wrote: the rows (photos), sheets, and the photos it could not use."""

    out: Path
    rows: int
    sheets: list[Path]
    failed: list[tuple[Path, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ReviewTally:
    """Unblinded judgements: per backend label, one bool per row (True = judged usable)."""

    labels: list[str]
    images: list[str]
    usable: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(self.images)

    def count(self, label: str) -> int:
        return int(self.usable[label].sum())


def column_letters(n: int) -> list[str]:
    """``A, B, C, ...`` for ``n`` backends (at most 26: a row of more cut-outs cannot be judged side by side)."""
    if not 2 <= n <= 26:
        raise ConfigError(f"a review compares 2 to 26 backends, got {n}", hint="e.g. --backends unet,unet-effnet")
    return list(string.ascii_uppercase[:n])


def make_review(
    images: Sequence[Path],
    segmenters: Mapping[str, Any],
    out: Path,
    *,
    root: Path,
    sample: int | None = 48,
    seed: int = 0,
    threshold: float = 0.5,
    rows_per_sheet: int = 8,
    cell: int = 200,
    refine: Mapping[str, float] | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: Callable[[Path, bool], None] | None = None,
) -> ReviewMade:
    """Write a blind review of ``segmenters`` (label -> segmenter) on ``sample`` photos drawn with ``seed``.

    Photos are drawn in a seeded random order; one that cannot be read or segmented is recorded in the key
    and the next photo takes its row, so the review has ``sample`` rows when enough photos are readable. A
    folder that already holds a review is refused (its judgements would be lost). ``refine`` (label -> the
    smallest region kept, as a fraction of the largest) cleans those labels' masks the way ``bglab remove``
    does by default (stray regions dropped, holes filled), to judge the cut-outs it writes.
    """
    from bglab.io.files import atomic_write_text, prepare_output_dir, read_image, relative_posix, write_image
    from bglab.ops.mask import as_soft
    from bglab.ops.viz import contact_sheet, fit_cell

    letters = column_letters(len(segmenters))
    if sample is not None and sample < 1:
        raise ConfigError(f"--sample must be at least 1, got {sample}")
    if rows_per_sheet < 1 or cell < 32:
        raise ConfigError("rows per sheet must be >= 1 and the cell >= 32 px")
    if (out / KEY_FILE).exists() or (out / JUDGEMENTS_FILE).exists():
        raise ConfigError("this folder already holds a review; writing another would lose its judgements",
                          path=out, hint="choose a new --out folder")
    if not images:
        raise DatasetError("no images to review", path=root, hint="pass a folder of photos")
    prepare_output_dir(out, what="review folder")
    order = sorted(images)
    random.Random(seed).shuffle(order)
    shuffler = random.Random(f"{seed}:columns")
    labels = list(segmenters)
    refine = dict(refine or {})
    if set(refine) - set(labels):
        raise ConfigError(f"refine names no backend of this review: {sorted(set(refine) - set(labels))}")
    want = len(order) if sample is None else sample
    rows: list[dict[str, Any]] = []
    cells: list[list[np.ndarray]] = []
    failed: list[tuple[Path, str]] = []
    for path in order:
        if len(rows) >= want:
            break
        try:
            image = read_image(path)
            cutouts = {lb: review_cutout(image, as_soft(segmenters[lb].predict(image, source=path), image.shape),
                                         threshold=threshold, min_region=refine.get(lb))
                       for lb in labels}
        except (BglabError, OSError) as exc:
            failed.append((path, str(exc)))
            if progress is not None:
                progress(path, False)
            continue
        cols = labels[:]
        shuffler.shuffle(cols)
        rows.append({"row": len(rows) + 1, "image": relative_posix(path, root),
                     "columns": dict(zip(letters, cols, strict=True))})
        cells.append([fit_cell(a, cell) for a in (image, *(cutouts[lb] for lb in cols))])  # small: many rows
        if progress is not None:
            progress(path, True)
    if not rows:
        raise DatasetError("no photo could be read and segmented", path=root,
                           hint="; ".join(f"{p.name}: {e}" for p, e in failed[:3]))
    page = review_page(rows, cells, letters)
    sheets = []
    for s in range(0, len(rows), rows_per_sheet):
        sheet = contact_sheet(cells[s:s + rows_per_sheet], cell=cell,
                              row_labels=[f"row {r['row']}" for r in rows[s:s + rows_per_sheet]],
                              col_labels=["photo", *letters])
        sheets.append(write_image(out / SHEET_NAME.format(s // rows_per_sheet + 1), sheet))
    key = {"backends": labels, "columns": letters, "seed": seed, "threshold": threshold, "refine": refine,
           "root": str(root),
           "rows": rows, "failed": [{"image": str(p), "error": e} for p, e in failed], **(meta or {})}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "image", *letters])
    for r in rows:
        w.writerow([r["row"], r["image"], *[""] * len(letters)])
    atomic_write_text(out / KEY_FILE, json.dumps(key, indent=1) + "\n")
    atomic_write_text(out / JUDGEMENTS_FILE, buf.getvalue())
    atomic_write_text(out / PAGE_FILE, page)
    return ReviewMade(out, len(rows), sheets, failed)


def review_cutout(image: np.ndarray, soft: np.ndarray, *, threshold: float = 0.5,
                  min_region: float | None = None) -> np.ndarray:
    """The picture a reviewer judges: the photo where the mask is above ``threshold``, :data:`BACKDROP`
    elsewhere; with ``min_region``, the mask is first cleaned as ``bglab remove`` does (regions under that
    fraction of the largest dropped, holes filled)."""
    from bglab.ops.background import fill_background
    from bglab.ops.mask import refine

    if min_region is not None:
        soft = refine(soft, threshold=threshold, min_fraction=min_region, fill=True)
    return fill_background(image, soft > threshold, BACKDROP)


def review_page(rows: Sequence[Mapping[str, Any]], cells: Sequence[Sequence[np.ndarray]],
                letters: Sequence[str]) -> str:
    """A self-contained HTML page of the review rows (``cells``: per row the photo and the cut-outs, already
    fitted to the cell size): click each cut-out to mark it usable (green) or not (red), then save
    ``judgements.csv``. It names no backend (the key stays in its own file)."""
    import base64
    import html

    from bglab.io.files import encode_image

    def img(a: np.ndarray, alt: str) -> str:
        b64 = base64.b64encode(encode_image(a, "jpg", quality=85)).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{b64}">'

    body = []
    for r, row_cells in zip(rows, cells, strict=True):
        tds = [f'<td class="photo">{img(row_cells[0], "photo")}<div>row {r["row"]}</div></td>']
        tds += [f'<td><button type="button" class="cut" data-row="{r["row"]}" data-col="{c}" '
                f'aria-label="row {r["row"]} {c}: not judged">{img(a, c)}<div>{c}: <span class="v">?</span></div>'
                f'</button></td>' for c, a in zip(letters, row_cells[1:], strict=True)]
        body.append(f'<tr data-image="{html.escape(str(r["image"]))}">{"".join(tds)}</tr>')
    return _PAGE.format(n=len(rows) * len(letters), letters=html.escape(",".join(letters)),
                        file=JUDGEMENTS_FILE, rows="\n".join(body))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bglab review-seg</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }} table {{ border-collapse: collapse; }}
td {{ padding: 2px; text-align: center; }} button.cut {{ cursor: pointer; background: #fff; padding: 2px;
border: 5px solid #ccc; }} button.y {{ border-color: #2a2; }} button.n {{ border-color: #d22; }}
button.cut:focus {{ outline: 3px dashed #000; }} #bar {{ position: sticky; top: 0; background: #fff; padding: .5em 0; }}
</style></head><body>
<div id="bar"><b>Blind review</b>: click a cut-out (or Tab to it and press Enter) once for usable (green), twice
for not usable (red). <span id="left" aria-live="polite"></span> <button type="button" id="save">Save {file}</button>
</div>
<table data-letters="{letters}">
{rows}
</table>
<script>
const letters = document.querySelector("table").dataset.letters.split(",");
const cells = [...document.querySelectorAll("button.cut")];
function count() {{
  const left = cells.filter(c => !c.dataset.v).length;
  document.getElementById("left").textContent = left ? left + " of {n} left to judge" : "all {n} judged";
}}
cells.forEach(c => c.addEventListener("click", () => {{
  c.dataset.v = c.dataset.v === "y" ? "n" : "y";
  c.className = "cut " + c.dataset.v;
  c.querySelector(".v").textContent = c.dataset.v;
  c.setAttribute("aria-label", "row " + c.dataset.row + " " + c.dataset.col + ": " +
                 (c.dataset.v === "y" ? "usable" : "not usable"));
  count();
}}));
document.getElementById("save").addEventListener("click", () => {{
  const q = s => '"' + String(s).replace(/"/g, '""') + '"';
  const lines = ["row,image," + letters.join(",")];
  document.querySelectorAll("tr[data-image]").forEach((tr, i) => {{
    const v = [...tr.querySelectorAll("button.cut")].map(c => c.dataset.v || "");
    lines.push([i + 1, q(tr.dataset.image), ...v].join(","));
  }});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([lines.join("\\n") + "\\n"], {{type: "text/csv"}}));
  a.download = "{file}";
  a.click();
}});
count();
</script></body></html>
"""


def tally_review(folder: Path, judgements: Path | None = None) -> ReviewTally:
    """Read ``folder``'s filled judgement CSV (or ``judgements``, e.g. the one the page saved to Downloads) and
    its key; every cell must be ``y`` or ``n``.

    Raises :class:`DatasetError` naming the file and the rows to fix (blank or unknown cells, rows that do not
    match the key), so a half-judged review is never tallied as if it were whole.
    """
    key_path, csv_path = folder / KEY_FILE, judgements or folder / JUDGEMENTS_FILE
    for p in (key_path, csv_path):
        if not p.is_file():
            raise DatasetError("not a review folder (file missing)", path=p,
                               hint="make one with: bglab review-seg make PHOTOS --backends A,B --out DIR")
    try:
        key = json.loads(key_path.read_text(encoding="utf-8"))
        labels, letters, key_rows = list(key["backends"]), list(key["columns"]), key["rows"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"unreadable review key: {exc}", path=key_path,
                           hint="the key is written by review-seg make; do not edit it") from exc
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        table = list(csv.DictReader(fh))
    if len(table) != len(key_rows):
        raise DatasetError(f"{len(table)} judgement rows but the key has {len(key_rows)}", path=csv_path,
                           hint="keep one line per row of the sheets; do not add or delete lines")
    usable = {lb: np.zeros(len(key_rows), bool) for lb in labels}
    blank: list[str] = []
    bad: list[str] = []
    for i, (line, kr) in enumerate(zip(table, key_rows, strict=True)):
        if str(line.get("row", "")).strip() != str(kr["row"]) or line.get("image") != kr["image"]:
            raise DatasetError(f"line {i + 2} is row {line.get('row')!r} / {line.get('image')!r}, the key says "
                               f"row {kr['row']} / {kr['image']!r}", path=csv_path,
                               hint="keep the rows in the order written; do not sort the file")
        for letter in letters:
            value = (line.get(letter) or "").strip().lower()
            if value in YES:
                usable[kr["columns"][letter]][i] = True
            elif value in NO:
                pass
            elif not value:
                blank.append(f"{kr['row']}{letter}")
            else:
                bad.append(f"{kr['row']}{letter}={value!r}")
    problems = [f"{what}: {', '.join(cells[:12])}"
                for what, cells in ((f"{len(blank)} blank cell(s)", blank), ("unreadable cell(s)", bad)) if cells]
    if problems:
        raise DatasetError("; ".join(problems), path=csv_path, hint="judge every cell: y (usable cut-out) or n (not)")
    return ReviewTally(labels, [r["image"] for r in key_rows], usable)
