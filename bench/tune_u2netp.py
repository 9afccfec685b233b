"""How the ``u2netp`` backend's post-processing defaults were chosen (test-time options, no training).

The network's input is fixed (1 x 3 x 320 x 320), so the options are test-time only: flip averaging, rembg's
per-image min-max stretch or the raw sigmoid, the threshold, dropping small components, filling holes. The
raw maps of every pets3 photo (and its mirror) are computed once; every option combination is scored on the
*tuning half* (pets3 images with an even number, e.g. ``Bengal_10``; ``--every 2``: every other one of them, 150
images, what the defaults were picked on) and the best one is picked there. ``bench/bench_segment.py --sets
pets3`` then reports the chosen defaults on all 599, split into the tuning half and the held-out half. Nothing
is picked on the held-out half or on the hand sets.

    .venv/bin/python bench/tune_u2netp.py --every 2 --out bench/results/tune_u2netp.json

A second stage, ``--refine``, keeps the first stage's flip averaging and raw sigmoid and searches the edge
snapping by a guided filter (``guided`` radius, ``guided_eps``) with the threshold through the backend's own
``postprocess``, on the same 151 tuning images. pets3's masks count the trimap's thin "not classified" band
around the pet as pet, so a mask that merely grows scores higher; the rule is therefore: the highest mean IoU
among the settings whose IoU with that band ignored (``band_iou``) is not below the first stage's choice:

    .venv/bin/python bench/tune_u2netp.py --every 2 --refine --out bench/results/tune_u2netp_refine.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bglab.foreground.general import clean_mask, find_model, postprocess  # noqa: E402
from bglab.foreground.registry import Runtime  # noqa: E402
from bglab.foreground.rembg_backend import U2NetOnnx  # noqa: E402
from bglab.io.files import read_image, read_mask  # noqa: E402
from bglab.ops.metrics import seg_scores, summarize  # noqa: E402

DATA = Path(os.environ.get("BGLAB_SHARED_DATA", REPO.parent / "shared" / "data"))


def pets3(data: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for img in sorted((data / "pets3").glob("*/images/*.jpg")):
        out.append((img.stem, img, img.parent.parent / "masks" / f"{img.stem}.png"))
    return out


def is_tuning(stem: str) -> bool:
    """The tuning half: image number even (``Abyssinian_10``), about half of each breed."""
    m = re.search(r"_(\d+)$", stem)
    return bool(m) and int(m.group(1)) % 2 == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=REPO / "work" / "tune_u2netp_maps.npz")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--all", action="store_true", help="also compute the held-out half's maps (2x the CPU)")
    ap.add_argument("--every", type=int, default=1, help="only every K-th image of the chosen images")
    ap.add_argument("--refine", action="store_true", help="second stage: guided-filter edge snapping")
    args = ap.parse_args(argv)
    items = [it for it in pets3(args.data) if args.all or is_tuning(it[0])][:: max(1, args.every)]
    if not items:
        print(f"no pets3 under {args.data}")
        return 1
    if args.cache.is_file():
        z = np.load(args.cache)
        maps, flips = dict(zip(z["keys"], z["plain"], strict=True)), dict(zip(z["keys"], z["flip"], strict=True))
    else:
        net = U2NetOnnx(find_model(), Runtime(), flip=False, normalize="none")
        maps, flips = {}, {}
        t0 = time.time()
        for k, img_path, _ in items:
            x = net.preprocess(read_image(img_path))
            maps[k] = net._run(x)
            flips[k] = net._run(np.ascontiguousarray(x[..., ::-1]))[:, ::-1]
        print(f"raw maps of {len(items)} images x 2 in {time.time() - t0:.0f} s", flush=True)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        keys = [k for k, _, _ in items]
        np.savez_compressed(args.cache, keys=keys, plain=np.stack([maps[k] for k in keys]),
                            flip=np.stack([flips[k] for k in keys]))
    truths = {k: read_mask(m) for k, _, m in items}
    img_paths = {k: p for k, p, _ in items}
    bands = {k: np.asarray(Image.open(m.parent.parent / "trimaps" / m.name)) != 3 for k, _, m in items} \
        if args.refine else {}
    grid = {"flip": [False, True], "normalize": ["none", "minmax"], "threshold": [0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5],
            "keep": [0.0, 0.1, 1.0], "fill_holes": [False, True]}
    if args.refine:  # the first stage's winners kept; the edge snapping searched with the threshold and keep
        grid = {"flip": [True], "normalize": ["none"], "threshold": [0.1, 0.15, 0.2], "keep": [0.1],
                "fill_holes": [True], "guided": [0, 3, 4, 6], "guided_eps": [0.01, 0.02, 0.05, 0.1, 0.3]}
    combos = [dict(zip(grid, c, strict=True)) for c in itertools.product(*grid.values())]
    if args.refine:  # eps means nothing without the filter: one unfiltered row per threshold
        combos = [c for c in combos if c["guided"] > 0 or c["guided_eps"] == grid["guided_eps"][0]]
    per: list[dict[str, object]] = [{} for _ in combos]
    per_band: list[dict[str, object]] = [{} for _ in combos]  # --refine: scored with the boundary band left out
    for k, _, _ in items:  # image-major: each full-size map is made once, then every combination is scored
        h, w = truths[k].shape[:2]
        full = {}
        for flip in grid["flip"]:
            for norm in grid["normalize"]:
                p = 0.5 * (maps[k] + flips[k]) if flip else maps[k]
                if norm == "minmax":
                    lo, hi = float(p.min()), float(p.max())
                    p = (p - lo) / (hi - lo) if hi > lo else np.zeros_like(p)
                full[(flip, norm)] = np.clip(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)
        image = read_image(img_paths[k]) if args.refine else None
        for i, cfg in enumerate(combos):
            if args.refine:
                m = postprocess(image, full[(cfg["flip"], cfg["normalize"])], size=320, guided=cfg["guided"],
                                guided_eps=cfg["guided_eps"], threshold=cfg["threshold"], keep=cfg["keep"],
                                fill_holes=cfg["fill_holes"])
            else:
                m = clean_mask(full[(cfg["flip"], cfg["normalize"])], threshold=cfg["threshold"], keep=cfg["keep"],
                               fill_holes=cfg["fill_holes"])
            per[i][k] = seg_scores(m, truths[k])
            if args.refine:  # the same with the trimap's boundary band left out of both masks
                care = bands[k]
                per_band[i][k] = seg_scores(np.where(care, m, 0), np.where(care, truths[k], 0))
    rows = []
    for i, (cfg, scores) in enumerate(zip(combos, per, strict=True)):
        band = {"band_iou": round(summarize(list(per_band[i].values())).iou, 4)} if args.refine else {}
        tune = summarize([s for k, s in scores.items() if is_tuning(k)])
        held = summarize([s for k, s in scores.items() if not is_tuning(k)])
        allx = summarize(list(scores.values()))
        rows.append({**cfg, **band, "tune_iou": round(tune.iou, 4), "heldout_iou": round(held.iou, 4),
                     "all_iou": round(allx.iou, 4), "all_f1": round(allx.f1, 4), "n_tune": tune.n,
                     "n_heldout": held.n})
    rows.sort(key=lambda r: -r["tune_iou"])
    if args.refine:  # the reference row is the first stage's choice; the winner may not lose band IoU to it
        rembg = next(r for r in rows if r["guided"] == 0 and r["threshold"] == 0.1)
        best = next(r for r in rows if r["band_iou"] >= rembg["band_iou"])
    else:
        rembg = next(r for r in rows if not r["flip"] and r["normalize"] == "minmax" and r["threshold"] == 0.5
                     and r["keep"] == 0.0 and not r["fill_holes"])
        best = rows[0]
    print(f"{'flip':5s} {'norm':7s} {'thr':>4s} {'keep':>4s} {'fill':5s} {'tune':>6s} {'held':>6s} {'all':>6s}")
    for r in [*rows[:12], rembg]:
        snap = f" guided {r['guided']} eps {r['guided_eps']} band {r['band_iou']:.4f}" if "guided" in r else ""
        print(f"{r['flip']!s:5s} {r['normalize']:7s} {r['threshold']:4.2f} {r['keep']:4.1f} "
              f"{r['fill_holes']!s:5s}{snap} {r['tune_iou']:6.4f} {r['heldout_iou']:6.4f} {r['all_iou']:6.4f}")
    print(f"{'first stage' if args.refine else 'rembg'}'s settings: all {rembg['all_iou']:.4f}; "
          f"best on the tuning half: {best}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": "python bench/tune_u2netp.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "selection": "max mean IoU on tune half" + (
                " among band_iou >= the first stage's choice" if args.refine else ""),
            "grid": grid, "best": best, "rembg_settings": rembg, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
