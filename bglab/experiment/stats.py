"""Statistics for arm comparisons: accuracy CIs over seeds, paired tests on the same test images.

* :func:`t_interval`: mean and Student-t confidence interval of a few values (accuracy over seeds).
* :func:`mcnemar`: exact (binomial) McNemar test and its mid-p version on the discordant pairs of two
  classifiers scored on the same images (``b`` = only A right, ``c`` = only B right).
* :func:`wilson_interval`: the Wilson score interval of a proportion (a share of photos judged usable).
* :func:`paired_bootstrap`: bootstrap over test images of the accuracy difference B - A (images are resampled
  together across seeds, so seeds are not counted as independent images), percentile CI and two-sided p.
* :func:`compare` bundles both for two arms; :func:`verdict` states whether "preprocessing does not matter"
  is rejected at ``alpha`` (Holm correction over the comparisons, using the bootstrap p-values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["BootstrapResult", "Comparison", "McNemarResult", "compare", "holm", "mcnemar", "mcnemar_counts",
           "paired_bootstrap", "t_interval", "verdict", "wilson_interval"]


def _t_quantile(q: float, df: int) -> float:
    try:
        from scipy.stats import t

        return float(t.ppf(q, df))
    except ImportError:  # pragma: no cover - scipy comes with albumentations; bisection on the t CDF otherwise
        lo, hi = 0.0, 1000.0
        for _ in range(200):
            mid = (lo + hi) / 2
            # regularised incomplete beta via the series is overkill here; numeric integration of the density
            xs = np.linspace(0, mid, 4001)
            dens = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * \
                (1 + xs ** 2 / df) ** (-(df + 1) / 2)
            cdf = 0.5 + float(np.trapezoid(dens, xs))
            lo, hi = (mid, hi) if cdf < q else (lo, mid)
        return (lo + hi) / 2


def t_interval(values: Sequence[float], conf: float = 0.95) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the Student-t ``conf`` interval of the mean; ``lo = hi = nan`` for one value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    m = float(x.mean())
    if x.size < 2:
        return (m, math.nan, math.nan)
    se = float(x.std(ddof=1)) / math.sqrt(x.size)
    h = _t_quantile(0.5 + conf / 2, x.size - 1) * se
    return (m, m - h, m + h)


def wilson_interval(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """``(lo, hi)``: the Wilson score interval of ``k`` successes in ``n`` (sound at 0, n and small n)."""
    if n <= 0:
        return (math.nan, math.nan)
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + conf / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (0.0 if k <= 0 else max(0.0, centre - half), 1.0 if k >= n else min(1.0, centre + half))


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (integers, then one division)."""
    if k < 0:
        return 0.0
    return float(sum(math.comb(n, i) for i in range(0, min(k, n) + 1)) / 2 ** n)


@dataclass(frozen=True)
class McNemarResult:
    b: int          # A right, B wrong
    c: int          # A wrong, B right
    p_exact: float  # two-sided exact binomial p
    p_midp: float   # mid-p: exact p minus the probability of the observed table

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def mcnemar_counts(b: int, c: int) -> McNemarResult:
    """McNemar test from the discordant counts: exact ``min(1, 2 P(X <= min(b, c)))`` and its mid-p."""
    b, c = int(b), int(c)
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0, 1.0)
    k = min(b, c)
    p = min(1.0, 2.0 * _binom_cdf_half(k, n))
    pmf = math.comb(n, k) / 2 ** n
    mid = 2.0 * (_binom_cdf_half(k, n) - 0.5 * pmf)
    return McNemarResult(b, c, p, min(1.0, max(0.0, mid)))


def mcnemar(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> McNemarResult:
    """McNemar test of two classifiers on the same images, from their per-image correctness."""
    a = np.asarray(correct_a, bool).ravel()
    bb = np.asarray(correct_b, bool).ravel()
    if a.shape != bb.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {bb.shape}")
    return mcnemar_counts(int((a & ~bb).sum()), int((~a & bb).sum()))


@dataclass(frozen=True)
class BootstrapResult:
    diff: float  # accuracy of B minus accuracy of A
    lo: float
    hi: float
    p: float     # two-sided bootstrap p of "no difference"


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                     conf: float = 0.95) -> BootstrapResult:
    """Bootstrap of acc(B) - acc(A) over test images; inputs ``(n_images,)`` or ``(n_seeds, n_images)``.

    Images are resampled with replacement (the same resample for every seed); the CI is the percentile
    interval and p is twice the smaller tail fraction of resampled differences on either side of 0.
    """
    a = np.atleast_2d(np.asarray(correct_a, bool)).astype(np.float64)
    b = np.atleast_2d(np.asarray(correct_b, bool)).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    d = (b - a).mean(axis=0)  # per-image difference averaged over seeds
    n = d.size
    if n == 0:
        return BootstrapResult(math.nan, math.nan, math.nan, 1.0)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for i in range(0, n_boot, 256):
        m = min(256, n_boot - i)
        idx = rng.integers(0, n, size=(m, n))
        boots[i:i + m] = d[idx].mean(axis=1)
    diff = float(d.mean())
    lo, hi = (float(v) for v in np.quantile(boots, [(1 - conf) / 2, 0.5 + conf / 2]))
    if np.all(d == 0):
        return BootstrapResult(0.0, 0.0, 0.0, 1.0)
    tail = min(float((boots <= 0).mean()), float((boots >= 0).mean()))
    p = min(1.0, 2.0 * tail)
    return BootstrapResult(diff, lo, hi, max(p, 1.0 / n_boot))


@dataclass(frozen=True)
class Comparison:
    """Arm (or variant) B against A on one test set: accuracies, difference with CIs, paired tests."""

    a: str
    b: str
    test_set: str
    acc_a: float
    acc_b: float
    diff: float
    seed_ci: tuple[float, float]      # t-interval over seeds of the per-seed difference, within [-1, 1]
                                      # (nan with fewer than 3 seeds)
    boot_ci: tuple[float, float]      # bootstrap over images
    p_boot: float
    mcnemar: list[McNemarResult]      # one per seed
    p_holm: float = math.nan

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["mcnemar"] = [m.as_dict() for m in self.mcnemar]
        return d


def compare(a: str, b: str, test_set: str, correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 2000,
            seed: int = 0) -> Comparison:
    """Compare B with A on the same images; ``correct_*`` is ``(n_seeds, n_images)`` bool (seed-aligned)."""
    ca = np.atleast_2d(np.asarray(correct_a, bool))
    cb = np.atleast_2d(np.asarray(correct_b, bool))
    per_seed = cb.mean(axis=1) - ca.mean(axis=1)
    _, lo, hi = t_interval(per_seed)
    if per_seed.size < 3:  # 1 degree of freedom spans most of [-1, 1]: not shown as if it measured something
        lo = hi = math.nan
    elif lo == lo:
        lo, hi = max(-1.0, lo), min(1.0, hi)
    bt = paired_bootstrap(ca, cb, n_boot=n_boot, seed=seed)
    mc = [mcnemar(x, y) for x, y in zip(ca, cb, strict=True)]
    return Comparison(a, b, test_set, float(ca.mean()), float(cb.mean()), float(per_seed.mean()), (lo, hi),
                      (bt.lo, bt.hi), bt.p, mc)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, float)
    m = p.size
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def verdict(comparisons: Sequence[Comparison], alpha: float = 0.05, what: str = "preprocessing"
            ) -> tuple[bool, list[Comparison], str]:
    """Holm-adjust the bootstrap p-values; say plainly whether "``what`` does not matter" is rejected."""
    if not comparisons:
        return False, [], f"No comparisons: \"{what} does not matter\" was not tested."
    adj = holm([c.p_boot for c in comparisons])
    out = [Comparison(**{**c.__dict__, "p_holm": float(p)}) for c, p in zip(comparisons, adj, strict=True)]
    best = min(out, key=lambda c: c.p_holm)
    if best.p_holm < alpha:
        sig = [c for c in out if c.p_holm < alpha]
        parts = ", ".join(f"{c.b} vs {c.a} on {c.test_set}: {c.diff * 100:+.1f} points (p={c.p_holm:.3g})"
                          for c in sig)
        return True, out, (f"\"{what.capitalize()} does not matter\" is REJECTED at {alpha:g} "
                           f"(Holm-corrected paired bootstrap): {parts}.")
    return False, out, (f"\"{what.capitalize()} does not matter\" is NOT rejected at {alpha:g} (smallest Holm-corrected"
                        f" p = {best.p_holm:.3g}, {best.b} vs {best.a} on {best.test_set}).")
