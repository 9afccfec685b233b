"""Score an experiment's finished models on another data set: per run, then per arm over the seeds.

Each model sees the data set through its own arm's pipeline (the one recorded in its checkpoint), so the
figures are comparable with the experiment's own test sets; the study's ensembles (``studies.NAME.ensembles``
in the run directory's config) are scored too, from their members' class probabilities on the images every
member could read. ``bglab eval-cls`` prints them, with the photos every run gets wrong the same way
(:mod:`bglab.experiment.label_check`), and writes each photo's answers with ``--predictions``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bglab.errors import BglabError, DatasetError

__all__ = ["Scores", "by_arm", "evaluate_run_dir", "score_run_dir"]


@dataclass
class Scores:
    """What ``score_run_dir`` saw: the rows (one per run and ensemble) and each one's answer per photo."""

    rows: list[dict[str, Any]]
    paths: list[str]  # the photos, in the data set's order
    labels: np.ndarray  # their class indices
    classes: list[str]
    #: run or ensemble id -> predicted class index per photo (-1 where its arm could not read the photo)
    predicted: dict[str, np.ndarray]
    #: photo -> why an arm could not read or preprocess it, as "PATH: reason" (not scored by that arm's runs)
    unreadable: dict[str, str]

    def label_check(self) -> dict[str, dict[str, Any]]:
        """Per protocol: the photos every run (not the ensembles) gives the same wrong class
        (:func:`bglab.experiment.label_check.agreed_errors`; protocols with too few runs are left out)."""
        from bglab.experiment.label_check import agreed_errors

        keys = np.array(self.paths)
        out = {}
        for proto in dict.fromkeys(r["protocol"] for r in self.rows):
            preds = []
            for r in self.rows:
                if r["protocol"] == proto and r["arm"] != "ensemble":
                    ok = self.predicted[r["run"]] >= 0
                    preds.append({"keys": keys[ok], "y_true": self.labels[ok], "y_pred": self.predicted[r["run"]][ok]})
            if (check := agreed_errors(preds, self.classes)) is not None:
                out[proto] = check
        return out

    def predictions_csv(self) -> str:
        """One line per photo: its path, label and every run's and ensemble's answer (empty where unread)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        ids = [r["run"] for r in self.rows]
        w.writerow(["path", "label", *ids])
        for i, (path, y) in enumerate(zip(self.paths, self.labels, strict=True)):
            w.writerow([path, self.classes[int(y)],
                        *(self.classes[int(c)] if (c := self.predicted[rid][i]) >= 0 else "" for rid in ids)])
        return buf.getvalue()


def evaluate_run_dir(run_dir: Path, data_dir: Path, *, runs: list[str] | None = None,
                     as_source: str | None = None) -> list[dict[str, Any]]:
    """Accuracy (overall and per class) of every finished run's final model on an ImageFolder data set
    (:func:`score_run_dir`'s rows)."""
    return score_run_dir(run_dir, data_dir, runs=runs, as_source=as_source).rows


def score_run_dir(run_dir: Path, data_dir: Path, *, runs: list[str] | None = None,
                  as_source: str | None = None) -> Scores:
    """Every finished run's final model (and the study's ensembles) on an ImageFolder data set: accuracy
    overall and per class, and each one's answer per photo.

    ``as_source``: the folder counts as this source of the experiment, for arms whose steps apply to some
    sources only (``arms.NAME.sources``); otherwise those arms give it the resize / grey alone."""
    import torch

    from bglab.data.dataset import read_imagefolder
    from bglab.experiment.checkpoints import build_run_model, load_checkpoint
    from bglab.experiment.config import ArmConfig, arm_pipeline
    from bglab.experiment.data import prepare_arm
    from bglab.experiment.inference import predict_proba, to_tensor

    ckpts = sorted((run_dir / "checkpoints").glob("*.safetensors"))
    if not ckpts:
        raise BglabError("no checkpoints in the run directory", path=run_dir,
                         hint="run `bglab experiment CONFIG --out RUN_DIR` first")
    samples = read_imagefolder(data_dir, origin=as_source)
    results: list[dict[str, Any]] = []
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # run -> (indices of the samples it read, probabilities)
    predicted: dict[str, np.ndarray] = {}
    cache: dict[str, Any] = {}
    ok_cache: dict[str, Any] = {}
    unreadable: dict[str, str] = {}
    for path in ckpts:
        state, weights, _ = load_checkpoint(path)
        if not state.get("done") or (runs and state["run"] not in runs):
            continue
        classes = list(state["classes"])
        index = _class_index({s.label for s in samples}, classes)
        if unknown := sorted({s.label for s in samples} - set(index)):
            raise DatasetError(f"classes {unknown} were not trained (the model knows {classes})", path=data_dir,
                               hint="use class folders named like the training classes")
        pipeline = state["pipeline"]
        if state.get("sources") is not None and as_source not in state["sources"]:  # not a source of its steps
            pipeline = arm_pipeline([], int(state["size"]), int(state["channels"]), pipeline.get("seed", 0))
        pkey = json.dumps(pipeline, sort_keys=True)
        if pkey not in cache:
            arm = ArmConfig(state["arm"], [], pipeline)
            imgs = prepare_arm(arm, samples, size=int(state["size"]), channels=int(state["channels"]), cache_dir=None)
            cache[pkey], ok_cache[pkey] = imgs.images, imgs.ok
            for sample, ok_i, why in zip(samples, imgs.ok, imgs.errors, strict=True):
                if not ok_i:
                    why = why or f"arm {state['arm']} could not preprocess it"
                    unreadable.setdefault(str(sample.path), why if str(sample.path) in why else f"{sample.path}: {why}")
        x, ok = cache[pkey], ok_cache[pkey]
        labels = np.array([index[s.label] for s in samples], np.int64)
        y = labels[ok]
        model = build_run_model(state, weights)
        pred, probs, loss = predict_proba(model, to_tensor(x[ok]), torch.from_numpy(y))
        scored[state["run"]] = (np.flatnonzero(ok), probs)
        predicted[state["run"]] = _answers(len(samples), np.flatnonzero(ok), pred)
        results.append({"run": state["run"], "protocol": state["protocol"], "arm": state["arm"],
                        "variant": state["variant"], "seed": state["seed"], "n": int(len(y)),
                        "failed": int((~ok).sum()), **_scores(pred, y, classes), "loss": loss})
    if not results:
        raise BglabError("no finished runs to evaluate", path=run_dir, hint="let the experiment finish first")
    ensembles = _ensembles(run_dir, results, scored, labels, classes, predicted)
    return Scores(results + ensembles, [str(s.path) for s in samples], labels, classes, predicted, unreadable)


def _class_index(folders: set[str], classes: list[str]) -> dict[str, int]:
    """Class folder name -> index of the trained class it names: the same name, else the same name in another
    case (``Rock`` for ``rock``) where that matches one class only; folders naming no class are left out."""
    folded: dict[str, list[int]] = {}
    for i, c in enumerate(classes):
        folded.setdefault(c.casefold(), []).append(i)
    out = {}
    for f in folders:
        if f in classes:
            out[f] = classes.index(f)
        elif len(hit := folded.get(f.casefold(), [])) == 1:
            out[f] = hit[0]
    return out


def _answers(n: int, idx: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The predicted classes of the photos at ``idx`` spread over all ``n`` photos, -1 for the others."""
    out = np.full(n, -1, np.int64)
    out[idx] = pred
    return out


def _scores(pred: Any, y: Any, classes: list[str]) -> dict[str, Any]:
    per_class = {c: (float((pred[y == i] == i).mean()) if (y == i).any() else None) for i, c in enumerate(classes)}
    return {"accuracy": float((pred == y).mean()) if len(y) else None, "per_class": per_class}


def _ensembles(run_dir: Path, results: list[dict[str, Any]], scored: dict[str, Any], labels: Any,
               classes: list[str], predicted: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per ensemble of the run directory's studies x protocol x seed whose members were all scored:
    their probabilities averaged on the images every member read (its answers added to ``predicted``)."""
    import yaml

    from bglab.experiment.config import RunKey, run_dir_studies
    from bglab.experiment.ensemble import fuse

    path = run_dir / "config.yaml"
    if not path.is_file():  # no record of the studies: the runs are scored, no ensemble can be
        return []
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BglabError(f"cannot read the run directory's config ({exc})", path=path,
                         hint="restore it (bglab experiment writes it), or delete it to score the runs alone") from None
    runs = {(r["protocol"], r["arm"], r["variant"], r["seed"]): r["run"] for r in results}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for st in run_dir_studies(raw).values():
        for name, members in st.ensembles.items():
            for proto in st.protocols:
                for seed in sorted({r["seed"] for r in results}):
                    ids = [runs.get((proto, a, v, seed)) for a, v in members]
                    rid = RunKey(proto, name, seed, "ensemble").id
                    if any(i is None for i in ids) or rid in seen:
                        continue
                    seen.add(rid)
                    common = scored[ids[0]][0]
                    for i in ids[1:]:
                        common = np.intersect1d(common, scored[i][0])
                    parts = [{"keys": common, "y_true": labels[common],
                              "probs": scored[i][1][np.searchsorted(scored[i][0], common)]} for i in ids]
                    fused = fuse(parts)
                    if fused is None:
                        continue
                    predicted[rid] = _answers(len(labels), common, fused["y_pred"])
                    out.append({"run": rid, "protocol": proto, "arm": "ensemble",
                                "variant": name, "seed": seed, "n": int(len(common)),
                                "failed": int(len(labels) - len(common)),
                                **_scores(fused["y_pred"], fused["y_true"], classes), "loss": None,
                                "members": ids})
    return out


def by_arm(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per protocol x arm x variant: accuracy mean and 95 % t-interval over the seeds, and the per-class means."""
    from bglab.experiment.stats import t_interval

    def num(v: float) -> float | None:
        return None if v != v else v  # NaN (one seed, or no images) -> null in JSON

    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["protocol"], r["arm"], r["variant"]), []).append(r)
    out = []
    for (proto, arm, variant), rows in groups.items():
        accs = [r["accuracy"] for r in rows if r["accuracy"] is not None]
        mean, lo, hi = t_interval(accs)
        if len(accs) < 3:  # a t-interval over 2 seeds spans most of [0, 1]: not shown
            lo = hi = float("nan")
        per_class = {}
        for c in rows[0]["per_class"]:
            vals = [r["per_class"][c] for r in rows if r["per_class"].get(c) is not None]
            per_class[c] = float(np.mean(vals)) if vals else None
        out.append({"protocol": proto, "arm": arm, "variant": variant, "seeds": sorted(r["seed"] for r in rows),
                    "n": rows[0]["n"], "accuracy": num(mean), "ci95": [num(lo), num(hi)], "per_class": per_class})
    return out
