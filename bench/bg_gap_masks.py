"""BG-Gap with variants built from two kinds of masks, side by side (issue 23: does mask quality change it?).

Reads a finished run of the shipped config ``pets3-u2netp`` (or ``pets3-u2netp-pretrained``): the same trained
models tested on Mixed-Same / Mixed-Rand built from the ground-truth masks and from u2netp's masks. The gap of
each pair is computed by the report's own function (mean over seeds, 95 % t-interval), per trained line.

    .venv/bin/python bench/bg_gap_masks.py pets3-u2netp work/experiments/pets3-u2netp \
        [--out bench/results/bg_gap_masks.json]

``--pair NAME=SAME,RAND`` (repeatable) names other pairs of test arms (default: Mixed-Same / Mixed-Rand from
ground-truth and from u2netp masks).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bglab.experiment.config import load_experiment_config  # noqa: E402
from bglab.experiment.report import bg_gap, matrix_accuracies  # noqa: E402
from bglab.experiment.templates import find_config  # noqa: E402

PAIRS = {"ground truth": ("mixed-same", "mixed-rand"), "u2netp": ("u2-mixed-same", "u2-mixed-rand")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="the experiment config that was run (a file or a shipped name)")
    ap.add_argument("run", type=Path, help="its run directory")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--pair", action="append", default=None, metavar="NAME=SAME,RAND",
                    help="a pair of test arms to compute the gap on (repeatable; default: "
                         + "; ".join(f"{k}={a},{b}" for k, (a, b) in PAIRS.items()) + ")")
    args = ap.parse_args(argv)
    pairs = dict(PAIRS)
    if args.pair:
        try:
            pairs = {name: tuple(arms.split(",")) for name, arms in (x.split("=", 1) for x in args.pair)}
        except ValueError:
            ap.error("--pair takes NAME=SAME,RAND")
        if any(len(v) != 2 for v in pairs.values()):
            ap.error("--pair takes NAME=SAME,RAND (two test arms)")
    cfg = load_experiment_config(find_config(args.config))
    (study,) = cfg.matrix_studies()
    rows = []
    for proto in study.protocols:
        for test_set in cfg.protocols[proto].test_sets:
            for arm in study.arms:
                for variant in study.variants:
                    row = {"protocol": proto, "test_set": test_set, "train_arm": arm, "variant": variant}
                    for masks, names in pairs.items():
                        same, rand = (matrix_accuracies(args.run, proto, ((arm, variant),), cfg.seeds, test_set, n)
                                      for n in names)
                        g = bg_gap(arm, same, rand, names)
                        row[masks] = {"gap": g["mean"], "lo": g["lo"], "hi": g["hi"], "seeds": g["seeds"],
                                      "same": sum(same.values()) / max(len(same), 1),
                                      "rand": sum(rand.values()) / max(len(rand), 1)}
                    rows.append(row)
    print(f"{'train arm':<12} {'test':<6} " + "  ".join(f"{m + ' BG-Gap (same / rand)':<40}" for m in pairs))
    for r in rows:
        cells = []
        for m in pairs:
            c = r[m]
            cells.append(f"{100 * c['gap']:+5.1f} [{100 * c['lo']:+5.1f}, {100 * c['hi']:+5.1f}] "
                         f"({100 * c['same']:.1f} / {100 * c['rand']:.1f})".ljust(40))
        print(f"{r['train_arm']:<12} {r['test_set']:<6} " + "  ".join(cells))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"run": str(args.run), "seeds": cfg.seeds, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
