"""Ensembles: finished runs of one study combined per seed by averaging their class probabilities.

Models that err on different images (an image network and a hand-pose reader, say) are often right together
where each alone is not. A study names its ensembles (``studies.NAME.ensembles``); the report scores each on
every test set and distortion like a trained line and compares it with each member (paired, per image).
Pure numpy: the members' saved predictions in, the fused ones out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["fuse"]


def fuse(members: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    """The soft vote of the members' predictions on one test set (each with ``y_true``, ``keys``, ``probs``):
    the mean of their class probabilities and its argmax. None when a member has no probabilities (a run
    directory from before they were saved, not rescored) or the members saw other images or labels."""
    if not members or any("probs" not in m for m in members):
        return None
    first = members[0]
    for m in members[1:]:
        if (not np.array_equal(m["keys"], first["keys"]) or not np.array_equal(m["y_true"], first["y_true"])
                or np.shape(m["probs"]) != np.shape(first["probs"])):
            return None
    probs = np.mean([np.asarray(m["probs"], np.float64) for m in members], axis=0)
    y_pred = probs.argmax(axis=1).astype(np.int64) if probs.size else np.zeros(0, np.int64)
    return {"y_true": np.asarray(first["y_true"], np.int64), "y_pred": y_pred, "keys": first["keys"],
            "probs": probs.astype(np.float32)}
