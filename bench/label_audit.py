"""Accuracy with and without the test photos a label audit struck out, from a finished run directory.

The report's label check lists the test photos every model gets wrong the same way; looking at them, some
turn out to be labelled wrongly or unreadable. This scores every line of the study (each arm x variant and
each ensemble), per seed, on all test photos and on those left after the audit, from the saved predictions
(nothing is retrained). The audit is a CSV with one row per struck-out photo group, as the experiment groups
them when splitting (``LABEL/NAME``: the name before ``.rf.`` for Roboflow copies, else the file's stem), a
``judgement`` and an optional ``note``; every test copy of a listed group is left out, whatever the models
answered on it.

    .venv/bin/python bench/label_audit.py rps-ensemble work/exp-rps-ensemble2 bench/configs/rps-sxsw-label-audit.csv \\
        --protocol combined [--json bench/results/label_audit_rps_ensemble.json]

Caveat printed with the figures: an audit that looked at the errors only finds the wrong labels the models
disagree with; a wrong label a model agrees with stays counted as right (a full audit could lower the figure),
and the photos nobody looked at stay as labelled.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bglab.data.dataset import Sample  # noqa: E402
from bglab.experiment.config import load_experiment_config  # noqa: E402
from bglab.experiment.report import line_predictions, study_lines  # noqa: E402
from bglab.experiment.templates import find_config  # noqa: E402


def read_audit(path: Path) -> dict[str, str]:
    """group -> judgement, from the audit CSV (columns group, judgement[, note])."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"group", "judgement"} <= set(rows[0]):
        raise SystemExit(f"{path}: expected a CSV with columns group, judgement[, note] and one row per group")
    return {r["group"].strip(): r["judgement"].strip() for r in rows if r["group"].strip()}


def group_of(key: str, label: str) -> str:
    """The split group of a saved test key (``SOURCE/.../FILE``) with class ``label``: the one its sample had."""
    return Sample(Path(key), label, origin="").group


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="the experiment config that was run (a file or a shipped name)")
    ap.add_argument("run", type=Path, help="its run directory")
    ap.add_argument("audit", type=Path, help="CSV: group, judgement[, note] (the photo groups struck out)")
    ap.add_argument("--protocol", action="append", default=None, help="only these protocols (repeatable)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    cfg = load_experiment_config(find_config(args.config))
    audit = read_audit(args.audit)
    classes = json.loads((args.run / "data.json").read_text(encoding="utf-8"))["classes"]
    rows: list[dict] = []
    for sname, st in cfg.studies.items():
        for proto in st.protocols:
            if args.protocol and proto not in args.protocol:
                continue
            for test in cfg.protocols[proto].test_sets:
                for label, members in study_lines(st):
                    per_seed = []
                    for seed in cfg.seeds:
                        pr = line_predictions(args.run, proto, members, seed, test)
                        if pr is None:
                            continue
                        groups = [group_of(str(k), classes[int(y)]) for k, y in zip(pr["keys"], pr["y_true"],
                                                                                     strict=True)]
                        out = np.array([g in audit for g in groups], bool)
                        ok = pr["y_true"] == pr["y_pred"]
                        per_seed.append({"seed": seed, "n": int(ok.size), "struck": int(out.sum()),
                                         "struck_wrong": int((~ok[out]).sum()),
                                         "all": float(ok.mean()) if ok.size else None,
                                         "kept": float(ok[~out].mean()) if (~out).any() else None})
                    if per_seed:
                        rows.append({"study": sname, "protocol": proto, "test_set": test, "line": label,
                                     "seeds": per_seed,
                                     "all": float(np.mean([s["all"] for s in per_seed])),
                                     "kept": float(np.mean([s["kept"] for s in per_seed]))})
    if not rows:
        raise SystemExit(f"{args.run}: no saved test predictions for this config's lines")
    print(f"{'study / protocol / test set':<36} {'line':<28} {'all photos':>22}   {'audited':>22}   struck (wrong)")
    for r in rows:
        seeds = r["seeds"]
        both = [f"{100 * r[k]:5.1f} ({' / '.join(f'{100 * s[k]:.1f}' for s in seeds)})" for k in ("all", "kept")]
        print(f"{r['study'] + ' / ' + r['protocol'] + ' / ' + r['test_set']:<36} {r['line']:<28} {both[0]:>22}   "
              f"{both[1]:>22}   {seeds[0]['struck']} of {seeds[0]['n']} "
              f"({'/'.join(str(s['struck_wrong']) for s in seeds)})")
    print("audited = without every test copy of the groups in the audit; an audit of the errors only leaves a "
          "wrong label the models agree with counted as right")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"run": str(args.run), "audit": audit, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
