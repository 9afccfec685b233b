"""Test photos that every trained model gets wrong the same way: candidate label errors.

When every run of a study (every arm, variant and seed) gives one test photo the same class, and that class is
not the photo's label, the label is wrong, or the photo shows none of the classes, or all the models share one
blind spot; a person should look. The share of such photos bounds what any model trained on these labels can
score (the report's "ceiling"): on rock-paper-scissors, 14 of 751 combined test photos are wrongly labelled or
unreadable (docs/pretrained.md). Pure numpy on the runs' saved predictions of the clean test images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["MIN_RUNS", "agreed_errors"]

#: fewer runs than this flag nothing: three runs at chance on three classes agree on one wrong class for 7 % of
#: the photos, six for 0.3 %, so a handful of runs is needed before agreement says something about the label
MIN_RUNS = 6


def agreed_errors(preds: Sequence[Mapping[str, np.ndarray]], classes: Sequence[str] = (), *,
                  min_runs: int = MIN_RUNS, limit: int = 100) -> dict[str, Any] | None:
    """The photos every run predicts as the same class other than the label.

    ``preds``: one mapping per run with ``keys``, ``y_true`` and ``y_pred`` on one test set; photos that a run
    could not read (absent from its keys) are left out of the check. Returns None below ``min_runs`` runs or
    when the runs disagree on a photo's label; else ``runs``, ``photos`` (checked), ``count``, ``share``,
    ``ceiling`` (1 - share: the best accuracy possible if these labels are wrong) and up to ``limit``
    ``suspects`` (``key``, ``label``, ``predicted``), sorted by key."""
    if len(preds) < max(1, int(min_runs)):
        return None
    common = preds[0]["keys"]
    for p in preds[1:]:
        common = np.intersect1d(common, p["keys"])
    if common.size == 0:
        return None
    truth: np.ndarray | None = None
    votes = []
    for p in preds:
        keys = np.asarray(p["keys"])
        order = np.argsort(keys, kind="stable")
        idx = order[np.searchsorted(keys, common, sorter=order)]
        y_true = np.asarray(p["y_true"])[idx]
        if truth is None:
            truth = y_true
        elif not np.array_equal(truth, y_true):
            return None
        votes.append(np.asarray(p["y_pred"])[idx])
    assert truth is not None
    v = np.stack(votes)
    agreed = (v == v[0]).all(axis=0) & (v[0] != truth)
    hits = np.flatnonzero(agreed)

    def name(c: int) -> str:
        return classes[c] if 0 <= c < len(classes) else str(c)

    share = float(hits.size / common.size)
    return {"runs": len(preds), "photos": int(common.size), "count": int(hits.size), "share": share,
            "ceiling": 1.0 - share,
            "suspects": [{"key": str(common[i]), "label": name(int(truth[i])), "predicted": name(int(v[0, i]))}
                         for i in hits[:max(0, int(limit))]]}
