"""Uncertainty heuristics as pure functions of prediction arrays (baal's habit).

Every function takes class probabilities (rows sum to 1) and returns one score per sample,
higher = more informative. Arrays may be NumPy arrays or anything ``np.asarray`` accepts
(CPU tensors included); the scores are float64 NumPy arrays.

- ``probs``: shape (N, C), one predictive distribution per sample;
- ``mc_probs``: shape (K, N, C), K stochastic passes (MC dropout) per sample.
"""

from __future__ import annotations

import numpy as np

_TINY = np.finfo(np.float64).tiny


def _as_probs(probs, ndim: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != ndim:
        raise ValueError(f"expected a {ndim}-d array of class probabilities, got shape {p.shape}")
    return p


def _entropy_last_axis(p: np.ndarray) -> np.ndarray:
    """-sum_c p_c log p_c over the last axis (natural log; 0 log 0 = 0)."""
    return -(p * np.log(np.clip(p, _TINY, None))).sum(axis=-1)


def entropy(probs) -> np.ndarray:
    """Predictive entropy H(p) = -sum_c p_c log p_c; maximal (log C) for a uniform prediction."""
    return _entropy_last_axis(_as_probs(probs, 2))


def margin(probs) -> np.ndarray:
    """1 - (p_top1 - p_top2): 1 when the two most likely classes tie, 0 for a one-hot prediction."""
    p = _as_probs(probs, 2)
    if p.shape[1] < 2:
        return np.zeros(len(p))
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def least_confidence(probs) -> np.ndarray:
    """1 - max_c p_c: (C-1)/C for a uniform prediction, 0 for a one-hot one."""
    return 1.0 - _as_probs(probs, 2).max(axis=1)


def bald(mc_probs) -> np.ndarray:
    """BALD mutual information I(y; w | x) = H(mean_k p_k) - mean_k H(p_k) (Houlsby et al. 2011).

    0 when all K passes agree (whatever their entropy); large when confident passes disagree.
    Clipped at 0 against round-off.
    """
    p = _as_probs(mc_probs, 3)
    mean_entropy = _entropy_last_axis(p).mean(axis=0)
    entropy_of_mean = _entropy_last_axis(p.mean(axis=0))
    return np.maximum(entropy_of_mean - mean_entropy, 0.0)


#: name -> score(probs (N, C)) for the strategies that read only the teacher's softmax
SOFTMAX_HEURISTICS = {
    "entropy": entropy,
    "margin": margin,
    "least-confidence": least_confidence,
}
