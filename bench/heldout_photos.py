"""Link the real photos a `train-seg` run held out (its splits.json's `real_test`) into a folder, one
sub-folder per class, leaving out those of earlier reviews: the photos `bglab review-seg make` draws from
when a segmenter is judged by eye on photos it never trained on (docs/segmenter-v4.md).

    python bench/heldout_photos.py work/segtrain/v42/splits.json ../shared/data/rps/sxsw work/review2-photos \
        --exclude bench/results/review_sxsw_1/key.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("splits", type=Path, help="a train-seg run's splits.json")
    ap.add_argument("source", type=Path, help="the real-image folder those splits name (e.g. rps/sxsw)")
    ap.add_argument("out", type=Path, help="new folder of links")
    ap.add_argument("--exclude", type=Path, action="append", default=[],
                    help="a review's key.json whose photos are left out (repeatable)")
    a = ap.parse_args(argv)
    done = set()
    for key in a.exclude:
        done |= {r["image"] for r in json.loads(key.read_text())["rows"]}
    names = json.loads(a.splits.read_text())["real_test"]
    n = 0
    for rel in sorted(names):
        folder, stem = rel.rsplit("/", 1)
        matches = sorted((a.source / folder).glob(stem + ".*"))
        if not matches or f"{folder}/{matches[0].name}" in done:
            continue  # another source's photo (a split names every real set), or already reviewed
        dst = a.out / folder / matches[0].name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            os.symlink(matches[0].resolve(), dst)
        n += 1
    print(f"{n} held-out photos linked into {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
