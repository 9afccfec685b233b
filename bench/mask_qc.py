"""Mask QC on real photos: false-flag rate on good masks, catch rate on known-bad ones (docs/trust.md's figures).

    .venv/bin/python bench/mask_qc.py [--data ../shared/data] [--per-class 60] [--json out.json]

Good masks (should come out ``done``): pets3 ground-truth masks (every file); the default U-Net on the
green-screen webcam hands (``--per-class`` per class, evenly spaced); chroma on the same webcam hands.
Bad cases (should come out ``suspect`` or ``not-found``): the U-Net's masks of real-background sxsw photos
that cover < 4 % of the image (the case of issue 18); chroma on ordinary photos (sxsw and backgrounds/);
hand-grabcut on backgrounds/ (no hand; needs the ``hands`` extra, else reported as not run).
Per-mask rules and the batch (median) pass are both applied, per group, as ``bglab remove`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from bglab.background.remove import RemoveOptions, prepare_mask
from bglab.io.files import list_images, read_image, read_mask
from bglab.ops.qc import QCRules, check_batch, check_mask

REPO = Path(__file__).resolve().parents[1]


def _spaced(files: list[Path], n: int) -> list[Path]:
    if n <= 0 or len(files) <= n:
        return files
    return [files[int(i * len(files) / n)] for i in range(n)]


def _status(checks: list) -> list[str]:
    return [c.status for c in check_batch(checks)]


def group(name: str, items: list[tuple[str, np.ndarray, np.ndarray]], *, screen: bool = False,
          rules: QCRules = QCRules()) -> dict:
    """QC of (file, image, mask) triples: per status counts and the flagged files with their reasons."""
    checks = [check_mask(m, rules, image=img, screen=screen) for _, img, m in items]
    checks = check_batch(checks, rules)
    out = {"group": name, "n": len(items), "done": 0, "suspect": 0, "not-found": 0, "flagged": []}
    for (f, _, _), c in zip(items, checks, strict=True):
        out[c.status] += 1
        if c.status != "done":
            out["flagged"].append({"file": f, "status": c.status, "coverage": round(c.coverage, 4),
                                   "reason": c.reason})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    default = Path(os.environ.get("BGLAB_SHARED_DATA", REPO.parent / "shared" / "data"))
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from bglab.foreground import create, is_available

    data: Path = args.data
    opts = RemoveOptions()
    unet = create("unet", kind="segmenter")
    chroma = create("chroma", kind="segmenter")
    results = []

    pets = []
    for cls in sorted(p for p in (data / "pets3").iterdir() if p.is_dir()):
        for m in sorted((cls / "masks").glob("*.png")):
            img_p = next((cls / "images").glob(m.stem + ".*"), None)
            if img_p is None:
                continue
            img = read_image(img_p)
            pets.append((str(m.relative_to(data)), img, read_mask(m, shape=img.shape) > 0))
    results.append(group("pets3 ground truth (good)", pets))

    web = [p for c in ("rock", "paper", "scissors")
           for p in _spaced(list_images(data / "rps/webcam" / c), args.per_class)]
    imgs = [(str(p.relative_to(data)), read_image(p)) for p in web]
    results.append(group("webcam, unet (good)", [(f, im, prepare_mask(unet.predict(im), opts)) for f, im in imgs]))
    results.append(group("webcam, chroma (good)", [(f, im, prepare_mask(chroma.predict(im), opts)) for f, im in imgs],
                         screen=True))

    sx = [p for c in ("rock", "paper", "scissors")
          for p in _spaced(list_images(data / "rps/sxsw" / c), args.per_class)]
    sx_items = []
    for p in sx:
        im = read_image(p)
        sx_items.append((str(p.relative_to(data)), im, prepare_mask(unet.predict(im), opts)))
    all_sx = group("sxsw, unet (all)", sx_items)
    results.append(all_sx)
    bad = [it for it in sx_items if float((it[2] > 0.5).mean()) < 0.04]
    flagged = {f["file"] for f in all_sx["flagged"]}
    results.append({"group": "sxsw, unet, coverage < 4 % (bad)", "n": len(bad),
                    "caught": sum(f in flagged for f, _, _ in bad),
                    "files": [(f, round(float((m > 0.5).mean()), 4), f in flagged) for f, _, m in bad]})
    good_sx = [it for it in sx_items if float((it[2] > 0.5).mean()) >= 0.04]
    results.append({"group": "sxsw, unet, coverage >= 4 % (flag rate, not all good)", "n": len(good_sx),
                    "n_flagged": sum(f in flagged for f, _, _ in good_sx)})

    photos = [(str(p.relative_to(data)), read_image(p)) for p in list_images(data / "backgrounds")]
    photos += [(f, im) for f, im, _ in sx_items[:: max(1, len(sx_items) // 30)]]
    results.append(group("chroma on ordinary photos (bad)",
                         [(f, im, prepare_mask(chroma.predict(im), opts)) for f, im in photos], screen=True))
    if is_available("hand-grabcut"):
        hg = create("hand-grabcut", kind="segmenter")
        bgs = [(str(p.relative_to(data)), read_image(p)) for p in list_images(data / "backgrounds")]
        results.append(group("hand-grabcut on backgrounds/ (bad: no hand)",
                             [(f, im, prepare_mask(hg.predict(im), opts)) for f, im in bgs]))
    else:
        results.append({"group": "hand-grabcut on backgrounds/", "not run": "extra 'hands' not installed"})

    for r in results:
        line = {k: v for k, v in r.items() if k not in ("flagged", "files")}
        print(json.dumps(line))
        for f in (r.get("flagged") if isinstance(r.get("flagged"), list) else [])[:12]:
            print("   ", json.dumps(f))
        for f in r.get("files", []):
            print("   ", json.dumps(f))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
