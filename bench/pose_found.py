"""How the pose arms split into photos with and without a hand found, from a finished run directory.

    .venv/bin/python bench/pose_found.py work/exp-ref4 --arm pose
    .venv/bin/python bench/pose_found.py work/exp-pose --arm pose-or-photo --detect-arm pose --detect-run work/exp-ref4

Reads the arm's cached images (``cache/<arm>-*.npz``): a pose image whose drawing channel is all black had no
hand found. Prints the share of photos with a hand found per source, then, for every finished run of
``--arm``, the clean test accuracy on the photos with and without a hand. ``--detect-arm`` (in
``--detect-run``) says which arm's cache decides "found" when ``--arm`` keeps the photo for a missed hand.
No training, no MediaPipe: the figures come from files the run wrote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def found_by_key(run_dir: Path, arm: str) -> dict[str, bool]:
    """Sample key -> whether the arm's pose drawing has any white pixel (a hand was found)."""
    caches = sorted((run_dir / "cache").glob(f"{arm}-*.npz"))
    caches = [c for c in caches if c.name[len(arm) + 1:-4].isalnum()]  # not e.g. pose-turns for pose
    if len(caches) != 1:
        sys.exit(f"{run_dir}/cache: expected one cache of arm {arm!r}, found {[c.name for c in caches]}")
    with np.load(caches[0], allow_pickle=False) as z:
        images, keys = z["images"], z["keys"]
    drawing = images[..., 1] if images.ndim == 4 else images  # with_photo: channel 1 holds the drawing
    found = drawing.reshape(len(drawing), -1).any(axis=1)
    return {str(k): bool(f) for k, f in zip(keys, found, strict=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--arm", default="pose")
    ap.add_argument("--detect-arm", default=None, help="arm whose cache says found / not found (default --arm)")
    ap.add_argument("--detect-run", type=Path, default=None, help="run directory of --detect-arm (default RUN_DIR)")
    ap.add_argument("--test-set", default="sxsw")
    args = ap.parse_args()
    found = found_by_key(args.detect_run or args.run_dir, args.detect_arm or args.arm)
    sources = sorted({k.split("/")[0] for k in found})
    for s in sources:
        v = [f for k, f in found.items() if k.split("/")[0] == s]
        print(f"hand found: {s} {100 * np.mean(v):.1f} % of {len(v)} photos")
    for folder in sorted((args.run_dir / "predictions").glob(f"*__{args.arm}__*")):
        path = folder / f"{args.test_set}__clean.npz"
        if not path.is_file():
            continue
        with np.load(path, allow_pickle=False) as z:
            ok = z["y_true"] == z["y_pred"]
            hit = np.array([found[str(k)] for k in z["keys"]])
        print(f"{folder.name}: {100 * ok.mean():.1f} % on {len(ok)} {args.test_set} photos; "
              f"hand found {100 * ok[hit].mean():.1f} % (n={hit.sum()}), "
              f"not found {100 * ok[~hit].mean():.1f} % (n={(~hit).sum()})")


if __name__ == "__main__":
    main()
