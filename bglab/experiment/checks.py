"""Verdicts that check their inputs: chance-level arms, under-trained runs, too few seeds, and the power note.

A paired test says whether two arms' predictions differ; it cannot say whether either arm learned anything.
Before a comparison may reject "preprocessing does not matter", :func:`checked_verdict` asks of its inputs:

* **seeds**: at least ``MIN_SEEDS`` (3) seeds. With 1 or 2 the spread between trainings is unknown (a
  t-interval over 2 values has 1 degree of freedom: t = 12.7), so one lucky or unlucky run decides.
* **chance**: each arm's accuracy on the test set, with a 95 % bootstrap interval over the test images, must
  lie above the chance rate (the larger of 1 / classes and the largest class's share of the test set). An
  arm whose interval includes chance has not been shown to learn anything; "B beats A" then only says that
  A's training failed.
* **training**: a run whose final train accuracy is below ``MIN_TRAIN_ACC`` (90 %) and still rising (by
  more than ``RISING_BY``, 2 points, over the last quarter of its epochs) stopped before it converged; a
  difference between arms then measures training speed, not what they learn.

A comparison failing any check is *inconclusive* (the reasons are given) and cannot make the verdict
REJECTED; only comparisons that pass every check can. A group with no significant checked comparison but
some failing ones is INCONCLUSIVE, not "not rejected". :func:`min_detectable_difference` gives the power
note: the smallest difference the design (seeds x test images) would detect with 80 % power at the
Holm-adjusted level, so "not rejected" reads "not detected at this size". See docs/trust.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["MIN_SEEDS", "MIN_TRAIN_ACC", "RISING_BY", "CheckedVerdict", "accuracy_interval", "chance_check",
           "chance_rate", "checked_verdict", "min_detectable_difference", "seeds_check", "training_check"]

MIN_SEEDS = 3
MIN_TRAIN_ACC = 0.90
RISING_BY = 0.02
POWER = 0.8


def chance_rate(n_classes: int, class_counts: Sequence[int] | None = None) -> float:
    """Accuracy of guessing: the larger of 1 / classes and the largest class's share of the test set."""
    k = max(int(n_classes), 1)
    rate = 1.0 / k
    if class_counts is not None and sum(class_counts) > 0:
        rate = max(rate, max(class_counts) / sum(class_counts))
    return rate


def accuracy_interval(correct: np.ndarray, *, n_boot: int = 2000, seed: int = 0, conf: float = 0.95
                      ) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: accuracy over test images (averaged over seeds first) and its percentile bootstrap
    interval over the images, within [0, 1]. ``correct`` is ``(n_images,)`` or ``(n_seeds, n_images)``."""
    c = np.atleast_2d(np.asarray(correct, bool)).astype(np.float64)
    per_image = c.mean(axis=0)
    n = per_image.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for i in range(0, n_boot, 256):
        m = min(256, n_boot - i)
        boots[i:i + m] = per_image[rng.integers(0, n, size=(m, n))].mean(axis=1)
    lo, hi = (float(v) for v in np.quantile(boots, [(1 - conf) / 2, 0.5 + conf / 2]))
    return (float(per_image.mean()), max(0.0, lo), min(1.0, hi))


def chance_check(label: str, test_set: str, correct: np.ndarray, chance: float, *, n_boot: int = 2000,
                 seed: int = 0) -> str:
    """'' when the arm is above chance on the test set, else the reason (its interval includes chance)."""
    mean, lo, hi = accuracy_interval(correct, n_boot=n_boot, seed=seed)
    if math.isnan(mean) or lo > chance:
        return ""
    return (f"{label} is at chance on {test_set}: {100 * mean:.1f} % (95 % CI over test images "
            f"{100 * lo:.1f}..{100 * hi:.1f} %) includes the chance rate {100 * chance:.1f} %")


def training_check(label: str, curve: Mapping[int, float], *, min_acc: float = MIN_TRAIN_ACC,
                   rising_by: float = RISING_BY) -> str:
    """'' unless the run is under-trained: final train accuracy below ``min_acc`` and still rising by more
    than ``rising_by`` over the last quarter of the epochs (``curve``: epoch -> mean train accuracy)."""
    if not curve:
        return ""
    epochs = sorted(int(e) for e in curve)
    last = epochs[-1]
    final = float(curve[last])
    if final >= min_acc or len(epochs) < 2:
        return ""
    cut = last - max(1, round(last / 4))
    earlier = [e for e in epochs if e <= cut] or epochs[:1]
    before = float(curve[earlier[-1]])
    if final - before <= rising_by:
        return ""
    return (f"{label} is under-trained: train accuracy {100 * final:.1f} % at epoch {last}, still rising "
            f"(+{100 * (final - before):.1f} points since epoch {earlier[-1]}); train longer")


def seeds_check(n_seeds: int, minimum: int = MIN_SEEDS) -> str:
    if n_seeds >= minimum:
        return ""
    return (f"only {n_seeds} seed(s): at least {minimum} are needed to tell a difference between arms from the "
            "spread between trainings")


def min_detectable_difference(correct_a: np.ndarray, correct_b: np.ndarray, *, alpha: float = 0.05,
                              power: float = POWER) -> float:
    """Smallest accuracy difference (a fraction) a two-sided paired test over the test images detects with
    ``power`` at level ``alpha``: ``(z(1 - alpha/2) + z(power)) * sd(d) / sqrt(n)``, ``d`` the per-image
    difference averaged over seeds. Without any discordant image, ``sd(d)`` is taken from independent
    errors at the arms' mean accuracy, ``sqrt(2 p (1 - p) / seeds)``."""
    a = np.atleast_2d(np.asarray(correct_a, bool)).astype(np.float64)
    b = np.atleast_2d(np.asarray(correct_b, bool)).astype(np.float64)
    d = (b - a).mean(axis=0)
    n = d.size
    if n < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        p = float((a.mean() + b.mean()) / 2)
        sd = math.sqrt(max(2 * p * (1 - p), 1.0 / n) / a.shape[0])
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return min(1.0, z * sd / math.sqrt(n))


@dataclass
class CheckedVerdict:
    """A verdict with its input checks: ``status`` rejected | not rejected | inconclusive."""

    status: str
    text: str
    reasons: list[str] = field(default_factory=list)
    mde: float = math.nan  # smallest detectable difference (fraction), largest over the comparisons
    rejected: bool = False
    adjusted: list[Any] = field(default_factory=list)  # the comparisons with their Holm p


def checked_verdict(comparisons: Sequence[Any], problems: Sequence[Sequence[str]], mdes: Sequence[float], *,
                    alpha: float = 0.05, what: str = "preprocessing") -> CheckedVerdict:
    """The Holm-corrected verdict of :func:`bglab.experiment.stats.verdict`, allowed to reject only through
    comparisons whose ``problems`` (one list of reasons per comparison) are empty; see the module doc."""
    from bglab.experiment.stats import verdict

    q = f"\"{what.capitalize()} does not matter\""
    if not comparisons:
        return CheckedVerdict("not tested", f"No comparisons: {q} was not tested.")
    _, adjusted, _ = verdict(comparisons, alpha, what)
    reasons = list(dict.fromkeys(r for ps in problems for r in ps))
    good = [c for c, ps in zip(adjusted, problems, strict=True) if not ps]
    sig_good = [c for c in good if c.p_holm < alpha]
    sig_bad = [c for c, ps in zip(adjusted, problems, strict=True) if ps and c.p_holm < alpha]
    finite = [m for m in mdes if m == m]
    mde = max(finite) if finite else math.nan
    size = (f" Smallest difference this design detects (80 % power, Holm level): about {100 * mde:.1f} points."
            if mde == mde else "")

    def fmt(cs: Sequence[Any]) -> str:
        return ", ".join(f"{c.b} vs {c.a} on {c.test_set}: {c.diff * 100:+.1f} points (p={c.p_holm:.3g})"
                         for c in cs)

    if sig_good:
        text = (f"{q} is REJECTED at {alpha:g} (Holm-corrected paired bootstrap; inputs checked): {fmt(sig_good)}.")
        if reasons:
            text += f" Other comparisons are inconclusive: {'; '.join(reasons)}."
        return CheckedVerdict("rejected", text, reasons, mde, True, adjusted)
    if reasons:
        raw = f" The raw test found {fmt(sig_bad)}, which these inputs cannot back." if sig_bad else ""
        text = f"{q}: INCONCLUSIVE, not tested fairly: {'; '.join(reasons)}.{raw}{size}"
        return CheckedVerdict("inconclusive", text, reasons, mde, False, adjusted)
    best = min(adjusted, key=lambda c: c.p_holm)
    text = (f"{q} is NOT rejected at {alpha:g} (smallest Holm-corrected p = {best.p_holm:.3g}, {best.b} vs "
            f"{best.a} on {best.test_set}): no difference detected at this size, which is not the same as no "
            f"effect.{size}")
    return CheckedVerdict("not rejected", text, reasons, mde, False, adjusted)
