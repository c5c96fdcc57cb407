"""How good a teacher is on a labeled test set: accuracy, balanced accuracy, recall per class.

Balanced accuracy is the mean recall over the classes the test set holds: on an imbalanced
set (the paper's real data has 320-876 volumes per class) it does not reward a model that
predicts the largest class. Pure functions of label arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    accuracy: float
    balanced_accuracy: float
    recall: dict[str, float]  # class name -> recall, for the classes in the test set

    def recall_text(self) -> str:
        """``name=0.93;other=0.50``: one history.csv cell."""
        return ";".join(f"{name}={value:.4g}" for name, value in self.recall.items())


def score_predictions(predicted, truth, classes: list[str]) -> Scores:
    """Scores of ``predicted`` class ids against ``truth`` class ids (indices into ``classes``)."""
    pred, true = np.asarray(predicted), np.asarray(truth)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.shape} predictions for {true.shape} labels")
    if not len(true):
        return Scores(float("nan"), float("nan"), {})
    recall = {classes[k]: float((pred[true == k] == k).mean()) for k in np.unique(true)}
    return Scores(float((pred == true).mean()), float(np.mean(list(recall.values()))), recall)


def parse_recall(text: str) -> dict[str, float]:
    """The inverse of :meth:`Scores.recall_text` (empty text: no recall)."""
    out = {}
    for part in filter(None, (text or "").split(";")):
        name, _, value = part.rpartition("=")
        out[name] = float(value)
    return out
