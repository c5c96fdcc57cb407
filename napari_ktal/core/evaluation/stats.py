"""Statistics of a strategy comparison over seeds: bootstrap intervals and paired tests.

Runs of different strategies with the same seed share their initial labeled set, network
initialisation and training order (see :mod:`.benchmark`), so strategies are compared *paired*
by seed: the Wilcoxon signed-rank test on the per-seed differences, and a bootstrap interval of
the mean difference. With n seeds the exact two-sided Wilcoxon p-value cannot go below 2 / 2^n
(0.0625 for 5 seeds, 0.031 for 6, 0.0078 for 8): a verdict at 5% needs at least 6 seeds.
Both come from scipy.stats: ``wilcoxon`` (exact for small n) and ``bootstrap`` (percentile
intervals, seeded, so a summary is reproducible).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOOTSTRAP = 10_000
LEVEL = 0.95


def _percentile_interval(data: tuple[np.ndarray, ...], statistic, level: float, n_boot: int, seed: int,
                         paired: bool = False) -> tuple[float, float]:
    """scipy's percentile bootstrap interval of ``statistic`` (vectorised, ``axis=``) on ``data``.

    Percentile, not BCa: with the 3-8 seeds of a benchmark BCa's jackknife acceleration is too
    noisy to trust, and it has no interval at all when every value is the same."""
    from scipy.stats import bootstrap  # slow to import; only a summary needs it

    with np.errstate(invalid="ignore"):  # its standard error of a distribution with +inf in it is NaN: unused
        result = bootstrap(data, statistic, n_resamples=n_boot, confidence_level=level, method="percentile",
                           paired=paired, vectorized=True, random_state=np.random.default_rng(seed))
    lo, hi = result.confidence_interval
    return float(lo), float(hi)


def bootstrap_ci(values, level: float = LEVEL, n_boot: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaN for fewer than 2 values)."""
    v = np.asarray([x for x in values if math.isfinite(x)], float)
    if len(v) < 2:
        return float("nan"), float("nan")
    return _percentile_interval((v,), np.mean, level, n_boot, seed)


def _ratio_of_means(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """mean(x) / mean(y) of non-negative values; +inf where only y's mean is 0 (x is unboundedly
    larger), 1 where both are 0 (equal: neither has any)."""
    num, den = np.mean(x, axis=axis), np.mean(y, axis=axis)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 1.0))


def ratio_ci(a: dict[int, float], b: dict[int, float], level: float = LEVEL, n_boot: int = BOOTSTRAP,
             seed: int = 0) -> tuple[float, float, float]:
    """mean(a) / mean(b) of non-negative per-seed values (junk shares) over the seeds both have,
    and its percentile bootstrap interval, the seeds resampled in pairs (NaN where b's mean is 0;
    no interval for fewer than 2 seeds). A resample whose seeds all have b = 0 counts as +inf
    (or 1 where a is 0 there too), so the interval is open above when b is often 0."""
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    x, y = np.array([a[s] for s in seeds], float), np.array([b[s] for s in seeds], float)
    if not seeds or y.mean() == 0:
        return float("nan"), float("nan"), float("nan")
    ratio = float(x.mean() / y.mean())
    if len(seeds) < 2:
        return ratio, float("nan"), float("nan")
    return (ratio, *_percentile_interval((x, y), _ratio_of_means, level, n_boot, seed, paired=True))


def min_wilcoxon_p(n: int) -> float:
    """The smallest exact two-sided Wilcoxon signed-rank p-value that ``n`` pairs can give."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


@dataclass(frozen=True)
class PairedComparison:
    """``a`` against ``b`` over the seeds both ran."""

    n: int  # seeds compared
    mean_difference: float  # mean of a - b
    ci: tuple[float, float]  # bootstrap interval of that mean
    wins: int  # seeds where a > b
    p_value: float  # exact two-sided Wilcoxon signed-rank (1.0 when every difference is 0)

    def describe(self, digits: int = 1, scale: float = 100.0) -> str:
        if self.n == 0:
            return "-"
        d, (lo, hi) = self.mean_difference * scale, self.ci
        ci = f" [{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}]" if math.isfinite(lo) else ""
        return f"{d:+.{digits}f}{ci} p={self.p_value:.3g} ({self.wins}/{self.n})"


def paired_comparison(a: dict[int, float], b: dict[int, float]) -> PairedComparison:
    """Compare per-seed values ``a`` and ``b`` (seed -> value) on the seeds both have."""
    from scipy.stats import wilcoxon

    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    if not seeds:
        return PairedComparison(0, float("nan"), (float("nan"), float("nan")), 0, float("nan"))
    d = np.array([a[s] - b[s] for s in seeds])
    if np.all(d == 0):
        p = 1.0
    else:
        p = float(wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto").pvalue)
    return PairedComparison(len(seeds), float(d.mean()), bootstrap_ci(d), int((d > 0).sum()), p)
