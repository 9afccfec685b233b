"""Rebuild ``bglab/sample_data/demo/``: the small training / test set of ``bglab demo``'s background experiment.

Run from the repository root (needs ``../shared/data``; the demo itself never does)::

    .venv/bin/python bglab/sample_data/make_demo_set.py            # writes bglab/sample_data/demo/
    .venv/bin/python bglab/sample_data/make_demo_set.py --check    # only verify the embedded files

What it does, deterministically (no random numbers):

* **Hands** (``rps/webcam``, green screen, CC BY-SA 4.0): per class, the sorted file list (450 files) and
  ``PER_CLASS`` = 60 evenly spaced picks (index ``floor((i + 0.5) * n / 60)``); pick ``i`` goes to ``test/``
  when ``i % 3 == 2`` (20 per class), else to ``train/`` (40 per class). Each is resized (Pillow LANCZOS) to a
  longest side of 128 px (128 x 85) and saved as JPEG quality 92 without chroma subsampling (4:4:4, so the
  green screen still keys cleanly); the file keeps its original stem (``<stem>.jpg``).
* **Backgrounds** (``backgrounds``): every photo whose licence is not GPL and that is not already in
  ``bglab/sample_data/backgrounds/`` (11 photos, CC BY 4.0 / CC BY-SA 3.0 / 4.0), longest side 256 px, JPEG
  quality 88; their rows of ``licenses.csv`` are copied next to them (``w``, ``h``: the embedded size).
* ``manifest.csv``: every written file with its source path and the sha256 of both.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
from pathlib import Path

from PIL import Image

CLASSES = ("paper", "rock", "scissors")
PER_CLASS = 60          # picks per class: 40 train + 20 test
TEST_EVERY = 3          # pick i is a test image when i % 3 == 2
HAND_SIDE = 128
HAND_QUALITY = 92
BG_SIDE = 256
BG_QUALITY = 88
EXCLUDED_LICENCES = ("GPL",)

HERE = Path(__file__).resolve().parent


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (the middle of ``k`` equal slices); all of them if n <= k."""
    if n <= k:
        return list(range(n))
    return [int((i + 0.5) * n / k) for i in range(k)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _encode(path: Path, side: int, quality: int) -> bytes:
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = side / max(w, h)
        if s < 1:
            im = im.resize((round(w * s), round(h * s)), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality, subsampling=0, optimize=True)
    return buf.getvalue()


def plan(shared: Path) -> list[tuple[Path, str, int, int]]:
    """(source file, relative output path, longest side, JPEG quality) for every file of the demo set."""
    items: list[tuple[Path, str, int, int]] = []
    webcam = shared / "rps" / "webcam"
    for cls in CLASSES:
        files = sorted(p for p in (webcam / cls).iterdir() if p.suffix.lower() == ".png")
        for i, j in enumerate(evenly_spaced(len(files), PER_CLASS)):
            part = "test" if i % TEST_EVERY == TEST_EVERY - 1 else "train"
            items.append((files[j], f"{part}/{cls}/{files[j].stem}.jpg", HAND_SIDE, HAND_QUALITY))
    bgs = shared / "backgrounds"
    embedded = {p.name for p in (HERE / "backgrounds").glob("*.jpg")}
    with open(bgs / "licenses.csv", newline="", encoding="utf-8") as fh:
        for row in sorted(csv.DictReader(fh), key=lambda r: r["file"]):
            if row["file"] in embedded or any(x in row["license"] for x in EXCLUDED_LICENCES):
                continue
            items.append((bgs / row["file"], f"backgrounds/{row['file']}", BG_SIDE, BG_QUALITY))
    return items


def build(shared: Path, out: Path) -> int:
    """Write the demo set into ``out`` (files, background licences, manifest); returns the number of files."""
    rows = []
    for src, rel, side, quality in plan(shared):
        data = _encode(src, side, quality)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        rows.append({"file": rel, "source": str(src.relative_to(shared)), "source_sha256": _sha(src.read_bytes()),
                     "sha256": _sha(data)})
    with open(shared / "backgrounds" / "licenses.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        keep = {Path(r["file"]).name for r in rows if r["file"].startswith("backgrounds/")}
        lic = [r for r in reader if r["file"] in keep]
        fields = reader.fieldnames or []
    for r in lic:  # w, h: the embedded copy's size
        with Image.open(out / "backgrounds" / r["file"]) as im:
            r["w"], r["h"] = str(im.width), str(im.height)
    with open(out / "backgrounds" / "licenses.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(sorted(lic, key=lambda r: r["file"]))
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "source", "source_sha256", "sha256"])
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def check(out: Path) -> list[str]:
    """Problems with the embedded set: files missing from or not matching ``manifest.csv``."""
    problems = []
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            p = out / row["file"]
            if not p.is_file():
                problems.append(f"missing: {row['file']}")
            elif _sha(p.read_bytes()) != row["sha256"]:
                problems.append(f"changed: {row['file']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"), help="the shared data folder")
    ap.add_argument("--out", type=Path, default=HERE / "demo", help="where to write the set")
    ap.add_argument("--check", action="store_true", help="only verify the files against manifest.csv")
    args = ap.parse_args(argv)
    if args.check:
        problems = check(args.out)
        print("\n".join(problems) or "ok")
        return 1 if problems else 0
    n = build(args.shared, args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {n} images to {args.out} ({size / 1e6:.2f} MB with the text files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
