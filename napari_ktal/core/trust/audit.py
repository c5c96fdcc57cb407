"""Accuracy without a test set, from an audit slice: a few volumes of every batch drawn at random.

A strategy queries the volumes the teacher finds hardest, so the teacher's accuracy on them
says nothing about its accuracy on the pool. An *audit slice* is drawn uniformly from the
unlabeled pool (:func:`audit_slice`) and labeled like the rest of the batch; a random initial
set is such a sample too. The expert's labels on audit volumes are then an unbiased sample of
"how often is the model right on volumes like the ones it will predict".

Two estimates, both with a Wilson score interval (:func:`wilson_interval`):

- :func:`crossfit_accuracy`: the cross-fitted predictions (:mod:`.crossfit`) on every audit
  volume labeled so far. Each is judged by a model that did not see it, trained on (k-1)/k of
  the labels: slightly pessimistic for the teacher trained on all of them. Per class (recall
  of the classes the expert gave) where a class has at least ``min_per_class`` audit volumes.
- :func:`prequential_accuracy`: needs no cross-fitting. The teacher of cycle ``c`` predicted
  the audit volumes of the batch it queried before they were labeled: those predictions are
  out of sample by construction. They are pooled over cycles with weight ``decay**(C - c)``
  for the latest cycle ``C`` (default 1/2: the latest teacher counts fully, the one before
  half, ...), since older teachers were trained on fewer labels; the interval uses Kish's
  effective sample size ``(sum w)^2 / sum w^2``. The initial set has no teacher before it and
  does not count here.

Both measure agreement with the expert, whose own mistakes (:mod:`.mistakes`) count as the
model's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

MIN_PER_CLASS = 10
DEFAULT_DECAY = 0.5


@dataclass(frozen=True)
class AccuracyEstimate:
    """An accuracy in [0, 1] with its interval, from ``n`` (effective) audit volumes; NaN from none."""

    accuracy: float
    low: float
    high: float
    n: float
    #: class id -> (accuracy, low, high, n), for classes with enough audit volumes
    per_class: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)


def audit_slice(unlabeled: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` volumes (all of them if fewer) drawn uniformly without replacement from ``unlabeled``, sorted.

    The caller draws the slice before the strategy chooses, and removes it from what the strategy
    may choose, so the slice does not depend on the strategy."""
    unlabeled = np.asarray(unlabeled)
    k = min(max(int(k), 0), len(unlabeled))
    return np.sort(rng.choice(unlabeled, size=k, replace=False)) if k else unlabeled[:0].copy()


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (``n`` may be an effective, non-integer size).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 and n
    successes, which small audits often give. ``n = 0``: ``(nan, nan)``."""
    if n <= 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _estimate(correct: np.ndarray, weights: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """(weighted accuracy, Wilson low, high, Kish effective n) of 0/1 outcomes."""
    if len(correct) == 0 or weights.sum() <= 0:
        return float("nan"), float("nan"), float("nan"), 0.0
    acc = float(np.average(correct, weights=weights))
    n_eff = float(weights.sum() ** 2 / (weights**2).sum())
    low, high = wilson_interval(acc * n_eff, n_eff, confidence)
    return acc, low, high, n_eff


def crossfit_accuracy(predicted: np.ndarray, labels: np.ndarray, *, confidence: float = 0.95,
                      min_per_class: int = MIN_PER_CLASS) -> AccuracyEstimate:
    """Accuracy of out-of-sample ``predicted`` classes against the expert's ``labels`` on the audit volumes.

    Pass only audit volumes (the rows of a :class:`~.crossfit.CrossFit` whose pool indices the
    journal flags as audit): volumes the strategy chose would bias the estimate downwards."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    correct = (predicted == labels).astype(np.float64)
    ones = np.ones(len(correct))
    per_class = {}
    for c in np.unique(labels):
        mine = labels == c
        if mine.sum() >= min_per_class:
            per_class[int(c)] = _estimate(correct[mine], ones[mine], confidence)
    return AccuracyEstimate(*_estimate(correct, ones, confidence), per_class=per_class)


def recency_weights(cycles: np.ndarray, latest: int | None = None, decay: float = DEFAULT_DECAY) -> np.ndarray:
    """``decay ** (latest - cycle)`` per outcome: the latest teacher's audits weigh 1, older ones less."""
    cycles = np.asarray(cycles, np.int64)
    if len(cycles) == 0:
        return np.zeros(0)
    latest = int(cycles.max()) if latest is None else latest
    if cycles.max() > latest:
        raise ValueError(f"an audit of cycle {int(cycles.max())} cannot count for the earlier cycle {latest}")
    return np.power(float(decay), latest - cycles)


def prequential_accuracy(cycles: Sequence[int] | np.ndarray, correct: Sequence[bool] | np.ndarray, *,
                         latest: int | None = None, decay: float = DEFAULT_DECAY,
                         confidence: float = 0.95) -> AccuracyEstimate:
    """Accuracy from each teacher's predictions on the audit volumes of the batch it queried.

    ``cycles[i]``: the cycle whose teacher predicted audit volume ``i`` (the query's predicted
    class, written before the volume was labeled); ``correct[i]``: whether the expert agreed.
    ``latest``: the cycle to estimate for (default the newest in ``cycles``)."""
    correct = np.asarray(correct, np.float64)
    w = recency_weights(np.asarray(cycles), latest, decay)
    return AccuracyEstimate(*_estimate(correct, w, confidence))


def estimate_text(accuracy: float, low: float, high: float) -> str:
    """An accuracy estimate as both shells word it: ``est. 85% [70-94%]``; ``-`` when there is none."""
    if math.isnan(accuracy):
        return "-"
    return f"est. {100 * accuracy:.0f}% [{100 * low:.0f}-{100 * high:.0f}%]"
