"""Which labels are likely wrong: confident learning on out-of-sample probabilities.

The rule of Northcutt, Jiang and Chuang (2021, "Confident learning", the idea behind
cleanlab; this is not its code). With ``P`` the out-of-sample probabilities (:mod:`.crossfit`)
and ``y`` the given labels:

- each class ``j`` has a threshold ``t_j``: the mean of ``P[:, j]`` over the volumes labeled
  ``j`` (how confident the model is, on average, about the class where the expert agrees);
  per class, because an easy class and a hard one are confident at different levels;
- a volume labeled ``i`` is a *suspect* when some other class ``j`` has ``P[j] >= t_j`` and
  ``P[j] > P[i]``: a class the model is confident about, by that class's own standard, and
  prefers to the given one. (Cleanlab's confident joint counts the first condition; the
  second keeps a volume whose given class still wins off the list.)

Every labeled volume is then scored by the normalised margin of its given label,
``score = (1 - (P[i] - max_{j != i} P[j])) / 2`` in [0, 1] (0: the given label wins with
certainty, 1: another class does; cleanlab's "normalized margin" ranking), and ranked
suspects first, each part by score, most suspect first. The suggested class is the argmax of
``P``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Suspect:
    """One labeled volume's verdict (no path: the caller maps ``index`` to its file)."""

    index: int  # pool index
    given: int  # the class it is labeled as
    suggested: int  # the out-of-sample argmax
    score: float  # in [0, 1]; higher is more likely wrong
    p_given: float  # out-of-sample probability of the given class
    suspect: bool  # flagged by the confident-learning rule


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``t_j`` = mean out-of-sample probability of class ``j`` over the volumes labeled ``j``.

    A class nobody labeled gets ``inf``: nothing is confidently of a class with no evidence."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    k = probs.shape[1]
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=k)
    counts = np.bincount(labels, minlength=k)
    return np.divide(sums, counts, out=np.full(k, np.inf), where=counts > 0)


def flag_suspects(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """True where another class ``j`` has ``P[j] >= t_j`` and ``P[j] > P[given]`` (see the module)."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    t = class_thresholds(probs, labels) if thresholds is None else np.asarray(thresholds)
    rows = np.arange(len(labels))
    p_given = probs[rows, labels]
    confident = (probs >= t) & (probs > p_given[:, None])
    confident[rows, labels] = False
    return confident.any(1)


def margin_score(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(1 - (P[given] - max other P)) / 2``: 0 for a certain given label, 1 for a certain other one."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    rows = np.arange(len(labels))
    p_given = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -np.inf
    return np.clip((1.0 - (p_given - others.max(1))) / 2.0, 0.0, 1.0)


def rank_suspects(probs: np.ndarray, labels: np.ndarray, indices: np.ndarray | None = None,
                  judged: np.ndarray | None = None) -> list[Suspect]:
    """Every labeled volume, most likely mistake first: the flagged ones by score, then the rest by score.

    ``probs`` (n, K) must be out-of-sample (:class:`~.crossfit.CrossFit` ``probs``); with a
    model's in-sample probabilities nothing would ever be flagged. ``judged`` (CrossFit's):
    volumes whose class no other volume shares could not be judged; they are never flagged and
    come last (an unseen class has probability ~0 and would otherwise top the list). Ties keep
    the given order.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
    judged = np.ones(len(labels), bool) if judged is None else np.asarray(judged, bool)
    flagged = flag_suspects(probs, labels) & judged
    score = margin_score(probs, labels)
    order = np.lexsort((-score, ~flagged, ~judged))  # the last key sorts first
    suggested = probs.argmax(1)
    p_given = probs[np.arange(len(labels)), labels]
    return [Suspect(int(indices[i]), int(labels[i]), int(suggested[i]), float(score[i]), float(p_given[i]),
                    bool(flagged[i])) for i in order]
