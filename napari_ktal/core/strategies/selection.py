"""Choosing which volumes to label: the random subset R_U and the top-M rule."""

from __future__ import annotations

import math

import numpy as np


def random_subset(candidates: np.ndarray, m: int, subset_factor: float, rng: np.random.Generator) -> np.ndarray:
    """A random subset of about ``subset_factor * m`` candidates (all of them if fewer), sorted."""
    candidates = np.asarray(candidates, dtype=np.int64)
    size = min(len(candidates), math.ceil(subset_factor * m))
    return np.sort(rng.choice(candidates, size=size, replace=False))


def top_m(candidates: np.ndarray, scores: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` highest-scoring candidates, highest first; ties keep the candidates' order."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")[:m]
    return np.asarray(candidates)[order], scores[order]
