"""Analysis of a run directory and ONE self-contained HTML report (plots as base64 PNG, no external assets).

:func:`analyse` reads ``metrics.csv`` and the final predictions and computes, per study and protocol: final
accuracy per line (arm / variant) x test set x distortion with a t-interval over seeds, accuracy curves,
per-class accuracy, confusion matrices (summed over seeds), and paired comparisons (each arm against the
baseline arm; each variant against the study's first variant) with Holm-corrected verdicts.
:func:`write_report` writes ``summary.json`` and ``report.html`` (matplotlib, Agg backend only).

Matrix studies (``test_arms``) add the train x test accuracy matrix (mean over seeds with a t-interval, from the
saved ``predictions/<run>/matrix`` files) and BG-Gap = acc(test arm ``mixed-same``) - acc(test arm ``mixed-rand``)
per trained arm; ``saliency:`` adds the share of Grad-CAM saliency inside the foreground mask per arm and a sheet.
"""

from __future__ import annotations

import glob
import html
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bglab.experiment.checks import (MIN_SEEDS, accuracy_interval, chance_check, chance_rate, checked_verdict,
                                     min_detectable_difference, seeds_check, training_check)
from bglab.experiment.config import ExperimentConfig, RunKey, StudyConfig, row_label
from bglab.experiment.ensemble import fuse
from bglab.experiment.figures import (confusion_fig, curves_fig, diff_fig, matrix_fig, per_class_fig, photos_fig,
                                      robust_fig, sheet_b64)
from bglab.experiment.label_check import MIN_RUNS, agreed_errors
from bglab.experiment.leaks import THUMB
from bglab.experiment.metrics_file import read_metrics
from bglab.experiment.stats import Comparison, compare, t_interval

NEAR_TWIN_WARN = 0.01  # a test set with at least this share of near-twins in training is flagged in the report

__all__ = ["analyse", "analyse_matrix", "analyse_saliency", "gap_text", "line_predictions", "render_html",
           "study_lines", "write_report"]

SECTION_TITLES = ("Accuracy curves", "Final accuracy", "Per-class accuracy", "Confusion matrices",
                  "Accuracy under distortion", "Differences and paired tests", "Photos every model gets wrong")


# ----------------------------------------------------------------------------------------------- analysis


def _lines(study: StudyConfig) -> list[tuple[str, str, str]]:
    """``(label, arm, variant)`` for every arm x variant of a study."""
    out = []
    for v in study.variants:
        for a in study.arms:
            if len(study.variants) == 1:
                label = a
            elif len(study.arms) == 1:
                label = v
            else:
                label = f"{a} / {v}"
            out.append((label, a, v))
    return out


def _load_preds(out: Path, key: RunKey, test: str, dist: str) -> dict[str, np.ndarray] | None:
    return _load_npz(out / "predictions" / key.id / f"{test}__{dist}.npz")


def _load_npz(p: Path) -> dict[str, np.ndarray] | None:
    """One saved predictions file (``y_true``, ``y_pred``, ``keys``, ``probs`` where saved), None if absent."""
    if not p.is_file():
        return None
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k].copy() for k in ("y_true", "y_pred", "keys", "probs") if k in z.files}


def study_lines(study: StudyConfig) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every line of a study as ``(label, members)``: each arm x variant (one ``(arm, variant)``), then each
    ensemble (its members)."""
    return ([(lab, ((a, v),)) for lab, a, v in _lines(study)]
            + [(en, tuple(mem)) for en, mem in study.ensembles.items()])


def line_predictions(out: str | Path, proto: str, members: Sequence[tuple[str, str]], seed: int, test: str,
                     dist: str = "clean", notes: list[str] | None = None, name: str = ""
                     ) -> dict[str, np.ndarray] | None:
    """A line's saved predictions (``y_true``, ``y_pred``, ``keys``, ``probs``) for one seed and test set: its
    run's, or an ensemble's fused from its members' runs; None when one is missing or they do not line up."""
    preds = [_load_preds(Path(out), RunKey(proto, v, seed, a), test, dist) for a, v in members]
    return _fused(preds, notes, f"ensemble {name}, {proto}, seed {seed}, test set {test} ({dist})")


def _fused(preds: Sequence[dict[str, np.ndarray] | None], notes: list[str] | None, where: str
           ) -> dict[str, np.ndarray] | None:
    """One run's predictions, or its members' soft vote; None when one is missing (not run yet) or, noted in
    ``notes``, when the members' saved predictions do not line up."""
    if any(p is None for p in preds):
        return None
    if len(preds) == 1:
        return preds[0]
    line = fuse(preds)  # type: ignore[arg-type]
    if line is None and notes is not None:
        notes.append(f"{where}: the members' saved predictions do not line up, so this seed is left out of the "
                     "ensemble's line (no class probabilities: run the experiment again on this directory, which "
                     "adds them; other test images or labels: delete the members' checkpoints to train them "
                     "again)")
    return line


def _final_rows(rows: Sequence[Mapping[str, Any]], cfg: ExperimentConfig) -> dict[tuple, float]:
    """(protocol, arm, variant, seed, split, test_set, distortion) -> accuracy at the run's last epoch."""
    out: dict[tuple, float] = {}
    for r in rows:
        if r["split"] == "fit" or int(r["epoch"]) != cfg.variants[r["variant"]].train.epochs:
            continue
        out[(r["protocol"], r["arm"], r["variant"], int(r["seed"]), r["split"], r["test_set"], r["distortion"])] = \
            float(r["accuracy"])
    return out


def _ci(values: list[float], bounded: bool = True) -> dict[str, Any]:
    """Mean and 95 % t-interval over seeds, clipped to [0, 1] (``bounded``: a share) or [-1, 1] (a
    difference). With fewer than 3 seeds there is no interval (``lo = hi = nan``): a t-interval over 2 values
    has 1 degree of freedom and spans most of the scale, which would read as a measurement."""
    m, lo, hi = t_interval(values)
    if len(values) < MIN_SEEDS:
        lo = hi = math.nan
    if lo == lo:
        lo, hi = (max(0.0, lo), min(1.0, hi)) if bounded else (max(-1.0, lo), min(1.0, hi))
    return {"mean": m, "lo": lo, "hi": hi, "n": len(values), "values": values}


def analyse(out: str | Path, cfg: ExperimentConfig, rows: Sequence[Mapping[str, Any]] | None = None
            ) -> dict[str, Any]:
    """Everything the report shows, as plain data (JSON-serialisable)."""
    out = Path(out)
    if rows is None:
        rows = read_metrics(out / "metrics.csv")
    final = _final_rows(rows, cfg)
    dists = ["clean", *cfg.evaluate.distortions]
    classes: list[str] = []
    notes: list[str] = []  # what the analysis had to leave out, shown under the verdicts
    data_json = out / "data.json"
    if data_json.is_file():
        classes = json.loads(data_json.read_text(encoding="utf-8")).get("classes", [])
    studies: dict[str, Any] = {}
    for sname, st in cfg.studies.items():
        lines = _lines(st)
        label_of = {(a, v): lab for lab, a, v in lines}
        sp: dict[str, Any] = {}
        for proto in st.protocols:
            tests = list(cfg.protocols[proto].test_sets)
            res: dict[str, Any] = {"tests": tests, "distortions": dists, "lines": [lab for lab, _, _ in lines],
                                   "final": {}, "curves": {}, "per_class": {}, "confusion": {}}
            # final accuracy
            for lab, a, v in lines:
                f: dict[str, Any] = {}
                for split, test, dist in [("train", "train", "clean"), ("val", "val", "clean"),
                                          *(("test", t, d) for t in tests for d in dists)]:
                    vals = [final[k] for s in cfg.seeds
                            if (k := (proto, a, v, s, split, test, dist)) in final]
                    f[f"{test}|{dist}"] = _ci(vals)
                res["final"][lab] = f
            # curves (mean / min / max over seeds)
            acc: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
            for r in rows:
                if r["protocol"] != proto or r["distortion"] != "clean" or r["split"] == "matrix":
                    continue
                for lab, a, v in lines:
                    if r["arm"] == a and r["variant"] == v:
                        acc[(lab, r["split"], r["test_set"])][int(r["epoch"])].append(float(r["accuracy"]))
            res["curves"] = {f"{lab}|{split}|{test}": {str(e): [float(np.mean(x)), float(np.min(x)), float(np.max(x))]
                                                       for e, x in sorted(ep.items())}
                             for (lab, split, test), ep in acc.items()}
            # per-class accuracy and confusion (clean, summed over seeds) + correctness for the paired tests;
            # an ensemble's final accuracy too (it has no metric rows: its predictions are fused here)
            correct: dict[tuple, tuple[list[int], np.ndarray]] = {}
            for en in st.ensembles:
                res["lines"].append(en)
                res["final"][en] = {"train|clean": _ci([]), "val|clean": _ci([])}
            members = study_lines(st)
            trained: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)  # clean predictions per test set
            for lab, mem in members:
                for t in tests:
                    for d in dists:
                        seeds, mats, keys = [], [], None
                        cm = None
                        for s in cfg.seeds:
                            pr = line_predictions(out, proto, mem, s, t, d, notes, lab)
                            if pr is None:
                                continue
                            if d == "clean" and lab not in st.ensembles:
                                trained[t].append(pr)
                            if keys is not None and not np.array_equal(keys, pr["keys"]):
                                continue
                            keys = pr["keys"]
                            seeds.append(s)
                            mats.append(pr["y_true"] == pr["y_pred"])
                            if d == "clean":
                                k = max(len(classes), int(pr["y_true"].max(initial=0)) + 1,
                                        int(pr["y_pred"].max(initial=0)) + 1)
                                m = np.zeros((k, k), np.int64)
                                np.add.at(m, (pr["y_true"], pr["y_pred"]), 1)
                                cm = m if cm is None else cm + m
                        if mats:
                            correct[(lab, t, d)] = (seeds, np.stack(mats), keys)  # type: ignore[assignment]
                        if lab in st.ensembles:
                            res["final"][lab][f"{t}|{d}"] = _ci([float(m.mean()) for m in mats if m.size])
                        if cm is not None:
                            res["confusion"][f"{lab}|{t}"] = cm.tolist()
                            with np.errstate(invalid="ignore", divide="ignore"):
                                pc = np.diag(cm) / cm.sum(axis=1)
                            res["per_class"][f"{lab}|{t}"] = [None if math.isnan(x) else float(x) for x in pc]
            for (lab, t, d), (_seeds, mats, _keys) in correct.items():
                cell = res["final"][lab].get(f"{t}|{d}")
                if cell is not None and cell["n"]:
                    _, cell["img_lo"], cell["img_hi"] = accuracy_interval(mats, n_boot=cfg.evaluate.bootstrap,
                                                                         seed=cfg.evaluate.seed)
            res["label_check"] = {t: chk for t in tests if (chk := agreed_errors(trained[t], classes))}
            checks = _input_checks(res, lines, tests, len(classes))
            res["comparisons"], res["verdicts"] = _comparisons(cfg, st, proto, lines, tests, dists, correct,
                                                               checks)
            sp[proto] = res
        studies[sname] = {"protocols": sp, "arms": list(st.arms), "variants": list(st.variants),
                          "lines": [lab for lab, _, _ in lines] + list(st.ensembles),
                          **({"ensembles": {en: [label_of[m] for m in mem] for en, mem in st.ensembles.items()}}
                             if st.ensembles else {})}
    return {"name": cfg.name, "classes": classes, "seeds": list(cfg.seeds), "baseline": cfg.baseline,
            "studies": studies, "matrix": analyse_matrix(out, cfg, notes), "saliency": analyse_saliency(out, cfg),
            "notes": list(dict.fromkeys(notes))}


def gap_text(label: str, gap: Mapping[str, Any], same: Mapping[str, Any], rand: Mapping[str, Any],
             names: Sequence[str]) -> str:
    """One plain-language line on a trained arm's BG-Gap (points = percentage points of accuracy)."""
    if gap["n"] == 0:
        return f"{label}: BG-Gap n/a (no predictions on {names[0]} and {names[1]})."
    m, lo, hi = 100 * gap["mean"], 100 * gap["lo"], 100 * gap["hi"]
    head = (f"{label}: {_pct(same['mean'])} % on {names[0]} (own-class background) vs {_pct(rand['mean'])} % on "
            f"{names[1]} (random background): BG-Gap {m:+.1f} points")
    if math.isnan(lo):
        ci, sure = f" ({gap['n']} seed(s): no CI, needs {MIN_SEEDS})", False
    else:
        ci, sure = f" [95 % CI {lo:+.1f}, {hi:+.1f}]", True
    if abs(m) <= 1.0 and (not sure or (lo >= -2.0 and hi <= 2.0)):
        tail = "the background barely changes its answers (within the 1-point target)."
    elif sure and lo > 0:
        tail = "it relies on background cues: a background from another class costs accuracy."
    elif sure and hi < 0:
        tail = "it does better on random backgrounds than on own-class ones (unusual; check the variants)."
    else:
        tail = "the gap is not clearly different from 0 over seeds."
    return f"{head}{ci}; {tail}"


def bg_gap(label: str, same: Mapping[int, float], rand: Mapping[int, float], names: Sequence[str]
           ) -> dict[str, Any]:
    """BG-Gap of one trained line from its per-seed accuracies on the two test arms ``names`` (same, rand):
    the mean difference over the seeds both have, its t-interval, the seeds and a plain-language line."""
    common = [s for s in same if s in rand]  # in the order of `same` (the config's seeds)
    g = _ci([same[s] - rand[s] for s in common], bounded=False)
    g["seeds"] = common
    g["text"] = gap_text(label, g, _ci([same[s] for s in common]), _ci([rand[s] for s in common]), names)
    return g


def matrix_accuracies(out: str | Path, protocol: str, members: Sequence[tuple[str, str]], seeds: Sequence[int],
                      test_set: str, test_arm: str, notes: list[str] | None = None, name: str = ""
                      ) -> dict[int, float]:
    """Per-seed accuracy of a line on ``test_set`` seen through ``test_arm``: one run's ``(arm, variant)``, or an
    ensemble's members fused (:func:`bglab.experiment.ensemble.fuse`); the seeds whose predictions exist (a seed
    whose ensemble members do not line up is left out and said so in ``notes``)."""
    accs = {}
    for s in seeds:
        preds = [_load_npz(Path(out) / "predictions" / RunKey(protocol, v, s, a).id / "matrix"
                           / f"{test_set}__{test_arm}.npz") for a, v in members]
        line = _fused(preds, notes, f"ensemble {name}, {protocol}, seed {s}, test set {test_set} through test arm "
                                    f"{test_arm}")
        if line is not None and len(line["y_true"]):
            accs[s] = float((line["y_true"] == line["y_pred"]).mean())
    return accs


def analyse_matrix(out: str | Path, cfg: ExperimentConfig, notes: list[str] | None = None
                   ) -> dict[str, Any] | None:
    """Train x test-arm accuracy (mean, t-interval over seeds) and BG-Gap per trained line, from saved predictions.

    Rows are every (arm, variant) trained by a study with ``test_arms`` (named by :func:`row_label`), then the
    study's ensembles (members' predictions fused per seed); None when no study has test arms. ``row_runs``
    names each row's runs as a list of ``[arm, variant]`` (one for a trained line, the members for an ensemble).
    """
    out = Path(out)
    studies = cfg.matrix_studies()
    if not studies:
        return None
    rows: dict[str, tuple[tuple[str, str], ...]] = {}
    test_arms: list[str] = []
    protos: list[str] = []
    for st in studies:
        for v in st.variants:
            for a in st.arms:
                rows.setdefault(row_label(cfg, a, v), ((a, v),))
        for en, members in st.ensembles.items():
            rows.setdefault(en, tuple(members))
        test_arms += [a for a in st.test_arms if a not in test_arms]
        protos += [p for p in st.protocols if p not in protos]
    gap_names = next((st.bg_gap for st in studies if st.bg_gap), None)
    res: dict[str, Any] = {"rows": list(rows),
                           "row_runs": {k: [list(x) for x in m] for k, m in rows.items()},
                           **({"ensembles": [en for st in studies for en in st.ensembles]}
                              if any(st.ensembles for st in studies) else {}),
                           "test_arms": test_arms, "bg_gap_arms": list(gap_names) if gap_names else None,
                           "protocols": {}}
    for proto in protos:
        tests = list(cfg.protocols[proto].test_sets)
        cells: dict[str, Any] = {}
        gaps: dict[str, Any] = {}
        for lab, members in rows.items():
            for t in tests:
                per_seed: dict[str, dict[int, float]] = {}
                for ta in test_arms:
                    per_seed[ta] = matrix_accuracies(out, proto, members, cfg.seeds, t, ta, notes, lab)
                    cells[f"{lab}|{t}|{ta}"] = _ci(list(per_seed[ta].values()))
                if gap_names:
                    gaps[f"{lab}|{t}"] = bg_gap(lab, per_seed.get(gap_names[0], {}), per_seed.get(gap_names[1], {}),
                                                gap_names)
        res["protocols"][proto] = {"tests": tests, "cells": cells, "bg_gap": gaps}
    return res


def analyse_saliency(out: str | Path, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """Per protocol and trained line: mean share of Grad-CAM mass inside the fg mask (t-interval over seeds)."""
    from bglab.train.classifiers import classifier_spec

    out = Path(out)
    if cfg.saliency is None:
        return None
    res: dict[str, Any] = {"n": cfg.saliency.n, "protocols": {}}
    for key in cfg.runs():
        tests = cfg.protocols[key.protocol].test_sets
        t = cfg.saliency.test_set or next(iter(tests))
        if t not in tests:
            continue
        pr = res["protocols"].setdefault(key.protocol, {"test_set": t, "lines": {}})
        lab = row_label(cfg, key.arm, key.variant)
        line = pr["lines"].setdefault(lab, {"values": [], "seeds": [], "reason": "", "sheet": None})
        path = out / "predictions" / key.id / f"saliency__{t}.npz"
        name = cfg.variants[key.variant].model["name"]
        if not classifier_spec(name).grad_cam:  # the runner skips these runs
            line["reason"] = f"none: {name} has no image feature maps for Grad-CAM (it reads other features)"
        if not path.is_file():
            continue
        with np.load(path, allow_pickle=False) as z:
            share, reason = z["share"], str(z["reason"])
        if reason:
            line["reason"] = reason
        if line["sheet"] is None:
            line["sheet"] = str(path.relative_to(out))
        ok = ~np.isnan(share)
        if ok.any():
            line["values"].append(float(share[ok].mean()))
            line["seeds"].append(key.seed)
    for pr in res["protocols"].values():
        for line in pr["lines"].values():
            line["share"] = _ci(line["values"])
    return res


def _pair(correct: Mapping[tuple, Any], ka: tuple, kb: tuple) -> tuple[np.ndarray, np.ndarray] | None:
    if ka not in correct or kb not in correct:
        return None
    sa, ca, keys_a = correct[ka]
    sb, cb, keys_b = correct[kb]
    if not np.array_equal(keys_a, keys_b):
        return None
    common = [s for s in sa if s in sb]
    if not common:
        return None
    return ca[[sa.index(s) for s in common]], cb[[sb.index(s) for s in common]]


def _input_checks(res: Mapping[str, Any], lines: list[tuple[str, str, str]], tests: list[str], n_classes: int
                  ) -> dict[str, Any]:
    """What the verdicts check besides the test: each line's training curve, each test set's chance rate."""
    train: dict[str, str] = {}
    for lab, _, _ in lines:
        curve = next((c for k, c in res["curves"].items() if k.startswith(f"{lab}|train|")), {})
        train[lab] = training_check(lab, {int(e): v[0] for e, v in curve.items()})
    chance: dict[str, float] = {}
    for t in tests:
        cm = next((np.asarray(res["confusion"][f"{lab}|{t}"]) for lab, _, _ in lines
                   if f"{lab}|{t}" in res["confusion"]), None)
        k = max(n_classes, 0 if cm is None else cm.shape[0])
        chance[t] = chance_rate(k, None if cm is None else cm.sum(axis=1).tolist())
    return {"train": train, "chance": chance}


def _comparisons(cfg: ExperimentConfig, st: StudyConfig, proto: str, lines: list[tuple[str, str, str]],
                 tests: list[str], dists: list[str], correct: Mapping[tuple, Any],
                 checks: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    label = {(a, v): lab for lab, a, v in lines}
    groups: list[tuple[str, str, list[tuple[str, str]]]] = []  # (what, condition, [(label A, label B)])
    if len(st.arms) > 1:
        base = cfg.baseline if cfg.baseline in st.arms else st.arms[0]
        for v in st.variants:
            pairs = [(label[(base, v)], label[(a, v)]) for a in st.arms if a != base]
            groups.append(("preprocessing", f"variant {v}" if len(st.variants) > 1 else "", pairs))
    if len(st.variants) > 1:
        for a in st.arms:
            pairs = [(label[(a, st.variants[0])], label[(a, v)]) for v in st.variants[1:]]
            groups.append(("the model variant", f"arm {a}" if len(st.arms) > 1 else "", pairs))
    for en, mem in st.ensembles.items():  # each member against the ensemble
        groups.append(("combining the models", f"ensemble {en}", [(label[m], en) for m in mem]))
    comps: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    for what, cond, pairs in groups:
        for d in dists:
            found: list[Comparison] = []
            problems: list[list[str]] = []
            pairs_used: list[tuple[np.ndarray, np.ndarray]] = []
            ev = cfg.evaluate
            for la, lb in pairs:
                for t in tests:
                    pair = _pair(correct, (la, t, d), (lb, t, d))
                    if pair is None:
                        continue
                    found.append(compare(la, lb, t, pair[0], pair[1], n_boot=ev.bootstrap, seed=ev.seed))
                    pairs_used.append(pair)
                    why = [seeds_check(pair[0].shape[0])]
                    if checks is not None:
                        why += [checks["train"].get(la, ""), checks["train"].get(lb, "")]
                        why += [chance_check(lab, t, c, checks["chance"][t], n_boot=ev.bootstrap, seed=ev.seed)
                                for lab, c in ((la, pair[0]), (lb, pair[1]))]
                    problems.append([w for w in why if w])
            mdes = [min_detectable_difference(a, b, alpha=ev.alpha / max(len(found), 1)) for a, b in pairs_used]
            v = checked_verdict(found, problems, mdes, alpha=ev.alpha, what=what)
            where = ", ".join(x for x in (cond, f"distortion {d}" if d != "clean" else "clean test images") if x)
            verdicts.append({"what": what, "condition": cond, "distortion": d, "rejected": v.rejected,
                             "status": v.status, "reasons": v.reasons,
                             "min_detectable": None if v.mde != v.mde else v.mde,
                             "text": f"[{proto}; {where}] {v.text}"})
            for c, why, mde in zip(v.adjusted, problems, mdes, strict=True):
                comps.append({**c.as_dict(), "what": what, "condition": cond, "distortion": d,
                              "problems": why, "min_detectable": mde})
    return comps, verdicts


# ------------------------------------------------------------------------------------------------- HTML


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.rej{color:#b00020;font-weight:bold}.keep{color:#0a6b2a}
.unsure{color:#8a5a00;font-weight:bold}code{background:#f4f4f4;padding:1px 3px}
h2{border-bottom:2px solid #ddd;padding-bottom:3px;margin-top:2em}"""


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _ci_cell(d: Mapping[str, Any]) -> str:
    """``mean [lo, hi]`` over seeds; with fewer than 3 seeds the bootstrap interval over test images marked
    ``img`` when there is one, else ``mean (n=K)``."""
    if d["n"] == 0:
        return "n/a"
    if d["lo"] is None or math.isnan(d["lo"]):
        if d.get("img_lo") is not None and not math.isnan(d["img_lo"]):
            return f"{_pct(d['mean'])} [{_pct(d['img_lo'])}, {_pct(d['img_hi'])}] img"
        return f"{_pct(d['mean'])} (n={d['n']})"
    return f"{_pct(d['mean'])} [{_pct(d['lo'])}, {_pct(d['hi'])}]"


class Column(NamedTuple):
    """One table column declared once: its header and the cell it shows for a row item."""

    header: str
    cell: Callable[[Any], str]


def _table(columns: Sequence[Column], items: Iterable[Any]) -> str:
    """An HTML table of ``items``, one row each; header and cells come from the same columns, so they cannot drift."""
    h = "".join(f"<th>{html.escape(str(c.header))}</th>" for c in columns)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(str(c.cell(it)))}</td>" for c in columns) + "</tr>"
                for it in items)
    return f"<table><tr>{h}</tr>{b}</table>"


def _pairs_table(key_header: str, value_header: str, pairs: Iterable[tuple[Any, str]]) -> str:
    """A two-column table of (key, text) pairs."""
    return _table([Column(key_header, lambda kv: str(kv[0])), Column(value_header, lambda kv: kv[1])], pairs)


def _ci_column(header: str, key: str) -> Column:
    """The interval cell (:func:`_ci_cell`) of ``key`` in a ``(label, {key: interval})`` row."""
    return Column(header, lambda row: _ci_cell(row[1][key]))


def plain(value: Any) -> str:
    """A config value as a reader writes it: ``{backend: unet, options: {margin: 0.1}}`` ->
    ``backend unet, options (margin 0.1)``; lists comma-separated, booleans yes / no."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k} ({plain(v)})" if isinstance(v, Mapping) and v else f"{k} {plain(v)}"
                         for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(plain(v) for v in value) + "]"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def steps_text(steps: Sequence[Any]) -> str:
    """Pipeline steps in order, one ``name (settings)`` each: ``segment (backend unet) -> resize (size 64)``."""
    out = []
    for st in steps:
        if isinstance(st, Mapping):
            for name, body in st.items():
                out.append(f"{name} ({plain(body)})" if body else str(name))
        else:
            out.append(str(st))
    return " -> ".join(out) or "none"


def augment_text(aug: Any) -> str:
    """The augmentation that is on, e.g. ``p 0.5: flip, noise 10``; ``none`` when nothing is on."""
    from dataclasses import fields

    on = []
    for f in fields(aug):
        v = getattr(aug, f.name)
        if f.name == "p" or v in (None, False, 0, 0.0):
            continue
        on.append(f.name if v is True else f"{f.name} {plain(v)}")
    return f"p {aug.p:g}: {', '.join(on)}" if on else "none"


def _run_html(extra: Mapping[str, Any]) -> list[str]:
    """The Run section: the run's facts as a table, then each run's status (and why a run failed)."""
    facts = [(k, plain(v)) for k, v in extra.items() if not isinstance(v, Mapping)]
    parts = ["<h2 id='run'>Run</h2>", _pairs_table("", "value", facts)]
    for k, v in extra.items():
        if isinstance(v, Mapping):
            head = {"runs": ("run", "status"), "failed": ("run", "error")}.get(str(k), (str(k), "value"))
            parts.append(f"<h4>{html.escape(str(k))}</h4>"
                         + _pairs_table(*head, [(a, plain(b)) for a, b in v.items()]))
    return parts


def _matrix_html(mx: Mapping[str, Any], cfg: ExperimentConfig) -> list[str]:
    e = html.escape
    parts = ["<h2 id='matrix'>Train x test matrix</h2>",
             "<p>Rows: the arm (and variant) a model was trained on; columns: the test arm, i.e. the same test images "
             "seen through that arm's images. Final-epoch accuracy on clean images in %, mean over seeds with the "
             "95 % t-interval. BG-Gap = accuracy on the test arm with a background of the image's own class minus "
             "accuracy with a random other class's background: how much the model's answers depend on the "
             "background (0 = not at all).</p>"]
    gap = mx.get("bg_gap_arms")
    for proto, pm in mx["protocols"].items():
        for t in pm["tests"]:
            title = f"{proto} / test set {t}"
            parts.append(f"<h3>{e(title)}</h3>")
            cells = [(r, {c: pm["cells"][f"{r}|{t}|{c}"] for c in mx["test_arms"]}) for r in mx["rows"]]
            parts.append(_table([Column("trained on \\ tested on", lambda row: row[0]),
                                 *(_ci_column(c, c) for c in mx["test_arms"])], cells))
            parts.append(_img(matrix_fig(mx, proto, t, f"accuracy %: {title}"), f"matrix {title}"))
            if gap:
                parts.append(f"<h4>BG-Gap = acc({e(gap[0])}) - acc({e(gap[1])})</h4>")
                grows = [(r, {"same": pm["cells"][f"{r}|{t}|{gap[0]}"], "rand": pm["cells"][f"{r}|{t}|{gap[1]}"],
                              "gap": pm["bg_gap"][f"{r}|{t}"]}) for r in mx["rows"] if f"{r}|{t}" in pm["bg_gap"]]
                parts.append(_table([Column("trained on", lambda row: row[0]), _ci_column(f"{gap[0]} %", "same"),
                                     _ci_column(f"{gap[1]} %", "rand"),
                                     Column("BG-Gap (points, 95% CI)", lambda row: _gap_cell(row[1]["gap"]))], grows))
                parts.append("<ul>" + "".join(f"<li>{e(row[1]['gap']['text'])}</li>" for row in grows) + "</ul>")
    return parts


def _gap_cell(g: Mapping[str, Any]) -> str:
    """A BG-Gap in points with its interval (``n/a`` without runs, the mean alone without an interval)."""
    if not g["n"]:
        return "n/a"
    if math.isnan(g["lo"]):
        return f"{100 * g['mean']:+.1f}"
    return f"{100 * g['mean']:+.1f} [{100 * g['lo']:+.1f}, {100 * g['hi']:+.1f}]"


def _saliency_html(sal: Mapping[str, Any], classes: Sequence[str], out: Path | None) -> list[str]:
    e = html.escape
    parts = ["<h2 id='saliency'>Saliency (Grad-CAM)</h2>",
             "<p>Share of each test image's Grad-CAM saliency (final model, last conv layer, predicted class) that "
             "falls inside the foreground mask, averaged over the test set; mean over seeds with the 95 % "
             "t-interval. A model that looks at the object scores near 100 %; the foreground's share of the "
             "image area is the level of a model that looks everywhere. Sheets: the first images of each class "
             "(by sample key, the same for every arm), image | overlay, first seed.</p>"]
    for proto, pr in sal["protocols"].items():
        parts.append(f"<h3>{e(proto)} / test set {e(pr['test_set'])}</h3>")
        parts.append(_table([Column("trained on", lambda row: row[0]),
                             Column("saliency inside fg %",
                                    lambda row: _ci_cell(row[1]["share"]) if row[1]["share"]["n"] else "n/a"),
                             Column("note", lambda row: row[1]["reason"] or "")], pr["lines"].items()))
        if out is not None:
            for lab, line in pr["lines"].items():
                if line["sheet"]:
                    b64 = sheet_b64(out / line["sheet"], classes, sal.get("n", 8))
                    if b64:
                        parts.append(f"<h4>{e(lab)}</h4>" + _img(b64, f"saliency {proto} {lab}"))
    return parts


def _seed_ci_text(c: Mapping[str, Any]) -> str:
    lo, hi = c["seed_ci"]
    if lo is None or math.isnan(lo):
        return f"n/a ({len(c['mcnemar'])} seed(s); needs {MIN_SEEDS})"
    return f"[{_pct(lo)}, {_pct(hi)}]"


_COMPARISON_COLUMNS = [
    Column("B - A", lambda c: f"{c['b']} - {c['a']}"),
    Column("test set", lambda c: c["test_set"]),
    Column("distortion", lambda c: c["distortion"]),
    Column("diff (points)", lambda c: f"{100 * c['diff']:+.1f}"),
    Column("95% CI over seeds", _seed_ci_text),
    Column("95% bootstrap CI", lambda c: f"[{_pct(c['boot_ci'][0])}, {_pct(c['boot_ci'][1])}]"),
    Column("bootstrap p", lambda c: f"{c['p_boot']:.3g}"),
    Column("Holm p", lambda c: f"{c['p_holm']:.3g}"),
    Column("McNemar per seed", lambda c: "; ".join(f"b={m['b']} c={m['c']} p={m['p_exact']:.3g} "
                                                   f"mid-p={m['p_midp']:.3g}" for m in c["mcnemar"])),
    Column("detectable (points)", lambda c: _pct(c.get("min_detectable"))),
    Column("input checks", lambda c: "; ".join(c.get("problems") or []) or "ok"),
]
_ARM_COLUMNS = [  # rows: (name, ArmConfig)
    Column("arm", lambda row: row[0]),
    Column("images from", lambda row: str(row[1].source_dir) if row[1].source_dir else "the source"),
    Column("steps (in order)", lambda row: steps_text(row[1].pipeline["steps"])),
    Column("steps apply to", lambda row: "every source" if row[1].sources is None
           else f"{', '.join(row[1].sources)} (the others: resize / grey only)"),
]
_VARIANT_COLUMNS = [  # rows: (name, VariantConfig)
    Column("variant", lambda row: row[0]),
    Column("model", lambda row: plain(row[1].model)),
    Column("epochs", lambda row: str(row[1].train.epochs)),
    Column("batch", lambda row: str(row[1].train.batch_size)),
    Column("optimizer", lambda row: row[1].train.optimizer),
    Column("learning rate", lambda row: f"{row[1].train.lr:g} ({row[1].train.schedule})"),
    Column("augmentation", lambda row: augment_text(row[1].train.augment)),
]


def _photo_path(cfg: ExperimentConfig, key: str) -> Path | None:
    """The file of a sample key (``origin/label/filename``) in a folder source; None for other sources."""
    origin, _, rest = key.partition("/")
    label, _, name = rest.partition("/")
    src = cfg.sources.get(origin)
    if src is None or not name or not src.path.is_dir():
        return None
    p = src.path / label / name
    return p if p.is_file() else next((src.path / label).rglob(glob.escape(name)), None)


def _near_twins_html(by_test: Mapping[str, Any]) -> list[str]:
    """The test sets with images that have a near-identical training image (bglab.experiment.leaks)."""
    e = html.escape
    out = []
    for test, tw in by_test.items():
        if not tw.get("twins"):
            continue
        share = tw["twins"] / max(tw["n"], 1)
        ex = tw["examples"][0]
        out.append(f"<p{' class=unsure' if share >= NEAR_TWIN_WARN else ''}>Test set {e(test)}: {tw['twins']} "
                   f"of {tw['n']} images ({100 * share:.1f} %) have a near-identical training image (cosine >= "
                   f"{tw['threshold']} between {THUMB} x {THUMB} thumbnails), e.g. {e(ex['test'])} and "
                   f"{e(ex['train'])}. "
                   "Frames of one video, one studio's near-identical shots or re-exports of one photo on both sides "
                   "of a split make its test an easy one; where the test should measure new scenes, group them "
                   "(<code>sources.NAME.group</code>, docs/results.md, Splits).</p>")
    return out


def _label_check_html(res: Mapping[str, Any], cfg: ExperimentConfig, *, shown: int = 24) -> str:
    """Each test set's photos that every run labels as the same other class (bglab.experiment.label_check),
    the first ``shown`` of them as thumbnails."""
    e = html.escape
    checks = res.get("label_check") or {}
    if not checks:
        return (f"<p>Not checked: it needs at least {MIN_RUNS} finished runs (arms x variants x seeds) that "
                "read the same test photos.</p>")
    parts = []
    for t, c in checks.items():
        parts.append(f"<p>Test set <code>{e(t)}</code>: {c['count']} of {c['photos']} photos "
                     f"({100 * c['share']:.1f} %) get the same wrong class from all {c['runs']} runs. Look at "
                     "them: a wrong label, a photo that shows none of the classes, or a blind spot all the models "
                     f"share. If their labels are wrong, no model can score above {100 * c['ceiling']:.1f} % "
                     "on this test set as labelled.</p>")
        if c["suspects"]:
            photos = [(_photo_path(cfg, x["key"]), f"{x['label']} -> {x['predicted']}") for x in c["suspects"][:shown]]
            sheet = photos_fig(photos) if any(p is not None for p, _ in photos) else None  # none found: no sheet
            if sheet:
                parts.append(_img(sheet, f"photos every run gets wrong, test set {t}"))
            more = c["count"] - len(c["suspects"])
            parts.append(_table([Column("photo", lambda r: r["key"]), Column("label", lambda r: r["label"]),
                                 Column("every run says", lambda r: r["predicted"])], c["suspects"])
                         + (f"<p>... and {more} more (summary.json lists the first {len(c['suspects'])}).</p>"
                            if more > 0 else ""))
    return "".join(parts)


def render_html(analysis: Mapping[str, Any], cfg: ExperimentConfig, data_info: Mapping[str, Any] | None = None,
                extra: Mapping[str, Any] | None = None, out: str | Path | None = None) -> str:
    """The report as one HTML string (figures inline as base64 PNG; no external links or assets)."""
    e = html.escape
    classes = analysis.get("classes", [])
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>bglab experiment: {e(cfg.name)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Experiment <code>{e(cfg.name)}</code>{' (quick profile)' if cfg.quick else ''}</h1>",
             f"<p>Seeds {e(str(list(cfg.seeds)))}; input {cfg.size}x{cfg.size}, {cfg.channels} channel(s); "
             f"baseline arm <code>{e(cfg.baseline)}</code>. Accuracies in %; CIs are 95 % Student-t intervals "
             "(shown from 3 seeds on; with fewer, a 95 % bootstrap interval over test images marked img) "
             "over seeds; differences use a paired bootstrap over test images (images resampled jointly across "
             "seeds) and McNemar's exact / mid-p test per seed; verdicts are Holm-corrected over the comparisons "
             "of one condition.</p>"]
    # verdicts first
    parts.append("<h2 id='verdict'>Verdict</h2><ul>")
    for sname, s in analysis["studies"].items():
        for res in s["protocols"].values():
            for v in res["verdicts"]:
                cls = "rej" if v["rejected"] else "unsure" if v.get("status") == "inconclusive" else "keep"
                parts.append(f"<li class='{cls}'>{e(sname)}: {e(v['text'])}</li>")
    parts.append("</ul>")
    for note in analysis.get("notes", []):
        parts.append(f"<p class='unsure'>{e(note)}</p>")
    mx = analysis.get("matrix")
    if mx and mx.get("bg_gap_arms"):
        parts.append("<h4>BG-Gap (does the model rely on the background?)</h4><ul>")
        for proto, pm in mx["protocols"].items():
            for key, g in pm["bg_gap"].items():
                parts.append(f"<li>[{e(proto)}; test set {e(key.split('|')[-1])}] {e(g['text'])}</li>")
        parts.append("</ul>")
    # data
    parts.append("<h2 id='data'>Data</h2>")
    if data_info:
        parts.append(f"<p>{data_info.get('n_samples', '?')} images, {data_info.get('n_usable', '?')} usable in every "
                     f"arm; classes {e(', '.join(data_info.get('classes', [])))}; preprocessing "
                     f"{data_info.get('preprocess_seconds', '?')} s.</p>")
        count_columns = [Column("part", lambda row: row[0]),
                         *(Column(k, lambda row, k=k: str(row[1].get(k, 0))) for k in classes),
                         Column("total", lambda row: str(row[1]["total"]))]
        for proto, counts in data_info.get("protocols", {}).items():
            parts.append(f"<h4>{e(proto)}</h4>" + _table(count_columns, counts.items()))
            if proto in cfg.protocols and (on_val := cfg.protocols[proto].train_on_val):
                parts.append(f"<p>The val part of {e(', '.join(on_val))} trains too (<code>train_on_val</code>): it "
                             "is in the train row above; the val row is what is left to watch training.</p>")
            parts += _near_twins_html(data_info.get("near_twins", {}).get(proto, {}))
        for arm, sus in data_info.get("suspect_masks", {}).items():
            parts.append(f"<p class='unsure'>Arm {e(arm)}: {sus['count']} image(s) kept although their mask failed "
                         f"QC (docs/trust.md; <code>on_suspect: skip</code> in the segment step leaves them out), "
                         f"e.g. {e(sus['examples'][0])}</p>")
        for arm, errs in data_info.get("left_out", {}).items():
            parts.append(f"<p>Arm {e(arm)} could not preprocess {len(errs)} image(s) (left out of every arm), "
                         f"e.g. {e(errs[0])}</p>")
    parts.append("<h4>Arms (pipeline configs)</h4>" + _table(_ARM_COLUMNS, cfg.arms.items()))
    parts.append("<h4>Variants</h4>" + _table(_VARIANT_COLUMNS, cfg.variants.items()))
    for sname, s in analysis["studies"].items():
        parts.append(f"<h2 id='study-{e(sname)}'>Study: {e(sname)}</h2><p>arms {e(', '.join(s['arms']))}; "
                     f"variants {e(', '.join(s['variants']))}</p>")
        if s.get("ensembles"):
            parts.append("<p>Ensembles (per seed, the class probabilities of their members averaged; compared with "
                         "each member): " + "; ".join(f"<code>{e(n)}</code> = {e(' + '.join(m))}"
                                                     for n, m in s["ensembles"].items()) + "</p>")
        for proto, res in s["protocols"].items():
            title = f"{sname} / {proto}"
            parts.append(f"<h3>{e(proto)}</h3>")
            parts.append(f"<h4>{SECTION_TITLES[0]}</h4>" + _img(curves_fig(res, title), f"curves {title}"))
            final_columns = [Column("line", lambda row: row[0]), _ci_column("train", "train|clean"),
                             _ci_column("val", "val|clean"),
                             *(_ci_column(f"{t} ({d})", f"{t}|{d}") for t in res["tests"] for d in res["distortions"])]
            parts.append(f"<h4>{SECTION_TITLES[1]}</h4>" + _table(final_columns, res["final"].items()))
            parts.append(f"<h4>{SECTION_TITLES[2]}</h4>" + _img(per_class_fig(res, classes, title),
                                                               f"per-class {title}"))
            pc_rows = [(lab, t, res["per_class"][f"{lab}|{t}"])
                       for t in res["tests"] for lab in res["lines"] if f"{lab}|{t}" in res["per_class"]]
            parts.append(_table([Column("line", lambda row: row[0]), Column("test set", lambda row: row[1]),
                                 *(Column(k, lambda row, i=i: _pct(row[2][i])) for i, k in enumerate(classes))],
                                pc_rows))
            parts.append(f"<h4>{SECTION_TITLES[3]}</h4><p>Summed over seeds; rows are the true class.</p>")
            for t in res["tests"]:
                parts.append(_img(confusion_fig(res, t, classes, f"{title}: test {t}"), f"confusion {title} {t}"))
            parts.append(f"<h4>{SECTION_TITLES[4]}</h4>")
            if len(res["distortions"]) > 1:
                parts.append(_img(robust_fig(res, title), f"distortion {title}"))
            else:
                parts.append("<p>No distortions configured (evaluate.distortions).</p>")
            parts.append(f"<h4>{SECTION_TITLES[5]}</h4>")
            comps = res["comparisons"]
            if comps:
                parts.append(_img(diff_fig(comps, title), f"differences {title}"))
                parts.append(_table(_COMPARISON_COLUMNS, comps))
            else:
                parts.append("<p>Nothing to compare (one arm and one variant).</p>")
            parts.append(f"<h4>{SECTION_TITLES[6]}</h4>" + _label_check_html(res, cfg))
    if mx:
        parts += _matrix_html(mx, cfg)
    if analysis.get("saliency"):
        parts += _saliency_html(analysis["saliency"], classes, None if out is None else Path(out))
    if extra:
        parts += _run_html(extra)
    parts.append("</body></html>")
    return "\n".join(parts)


def _clean_json(x: Any) -> Any:
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, Mapping):
        return {str(k): _clean_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean_json(v) for v in x]
    if isinstance(x, np.generic):
        return _clean_json(x.item())
    return x


def write_report(out: str | Path, cfg: ExperimentConfig, *, data_info: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Analyse the run directory, write ``summary.json`` and ``report.html``; return the summary."""
    from bglab.io.files import atomic_write_text

    out = Path(out)
    if data_info is None and (out / "data.json").is_file():
        data_info = json.loads((out / "data.json").read_text(encoding="utf-8"))
    analysis = analyse(out, cfg)
    verdicts = [{"study": s, "protocol": p, **v} for s, st in analysis["studies"].items()
                for p, res in st["protocols"].items() for v in res["verdicts"]]
    final = {s: {p: {lab: {k: v["mean"] for k, v in f.items()} for lab, f in res["final"].items()}
                 for p, res in st["protocols"].items()} for s, st in analysis["studies"].items()}
    summary = {**(dict(extra) if extra else {}), "verdicts": verdicts, "final_accuracy": final}
    mx = analysis.get("matrix")
    if mx:
        summary["matrix"] = {p: {t: {r: {ta: pm["cells"][f"{r}|{t}|{ta}"]["mean"] for ta in mx["test_arms"]}
                                     for r in mx["rows"]} for t in pm["tests"]} for p, pm in mx["protocols"].items()}
        if mx.get("bg_gap_arms"):
            summary["bg_gap"] = {p: {t: {r: {k: g[k] for k in ("mean", "lo", "hi", "n", "values", "text")}
                                         for r in mx["rows"] if (g := pm["bg_gap"].get(f"{r}|{t}"))}
                                     for t in pm["tests"]} for p, pm in mx["protocols"].items()}
    sal = analysis.get("saliency")
    if sal:
        summary["saliency_inside_fg"] = {p: {lab: {"mean": ln["share"]["mean"], "lo": ln["share"]["lo"],
                                                   "hi": ln["share"]["hi"], "reason": ln["reason"]}
                                             for lab, ln in pr["lines"].items()}
                                         for p, pr in sal["protocols"].items()}
    checks = {s: c for s, st in analysis["studies"].items()
              if (c := {p: res["label_check"] for p, res in st["protocols"].items() if res["label_check"]})}
    if checks:
        summary["label_check"] = checks
    if analysis["notes"]:
        summary["notes"] = analysis["notes"]
    summary["analysis"] = analysis
    atomic_write_text(out / "summary.json", json.dumps(_clean_json(summary), indent=1) + "\n")
    atomic_write_text(out / "report.html", render_html(analysis, cfg, data_info, extra, out=out))
    return _clean_json(summary)
