"""Confidence that means what it says: temperature scaling and the expected calibration error.

A network trained to zero loss is overconfident: of the volumes it calls 99% sure, fewer
than 99% are right. Temperature scaling (Guo et al. 2017) divides the logits by one scalar
``T > 0`` fitted to minimise the negative log-likelihood of held-out labels; it rescales
confidence without changing any prediction (the argmax is the same for every ``T``). The
held-out logits are the cross-fitted ones (:mod:`.crossfit`), so no test set is needed.

The expected calibration error (ECE) bins the predictions by their confidence (the top
probability) into equal-width bins and averages ``|accuracy - mean confidence|`` over the
bins, weighted by the share of predictions in each: 0 for a calibrated model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

DEFAULT_BINS = 15
#: the temperatures searched (log-uniformly): from 20x sharper to 50x flatter than the logits
T_RANGE = (0.05, 50.0)


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and what it did to the ECE of the logits it was fitted on."""

    temperature: float
    ece_before: float
    ece_after: float
    n: int


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities: ``softmax(logits / T)``, row by row."""
    return softmax(np.asarray(logits, np.float64) / temperature, axis=1)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``."""
    logp = log_softmax(np.asarray(logits, np.float64) / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` minimising the NLL of ``labels``, searched over ``log T`` in :data:`T_RANGE`.

    The NLL is convex in ``1/T``, so the bounded scalar search finds its one minimum; on ``log T``
    it treats sharpening and flattening alike. No labels: ``T = 1`` (nothing to fit).
    """
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    if len(labels) == 0:
        return 1.0
    lo, hi = np.log(T_RANGE)
    best = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))), bounds=(lo, hi),
                           method="bounded", options={"xatol": 1e-4})
    return float(np.exp(best.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """ECE over ``bins`` equal-width confidence bins ``(k/bins, (k+1)/bins]``; NaN without predictions."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(which, weights=correct - conf, minlength=bins)  # per bin: n_b * (accuracy - confidence)
    return float(np.abs(gap).sum() / len(labels))


def calibrate(logits: np.ndarray, labels: np.ndarray, bins: int = DEFAULT_BINS) -> Calibration:
    """Fit ``T`` on out-of-sample ``logits`` and report the ECE before and after (on the same logits)."""
    t = fit_temperature(logits, labels)
    before = expected_calibration_error(apply_temperature(logits, 1.0), labels, bins)
    after = expected_calibration_error(apply_temperature(logits, t), labels, bins)
    return Calibration(t, before, after, len(labels))
