"""How good a teacher is on a labeled test set: accuracy, balanced accuracy, recall per class.

Balanced accuracy is the mean recall over the classes the test set holds: on an imbalanced
set (the paper's real data has 320-876 volumes per class) it does not reward a model that
predicts the largest class. Particle accuracy leaves the ``junk`` class out: it is the accuracy
over the test volumes whose true class is a particle class (calling such a volume junk is an
error), so a model is not rewarded for recognising junk. Pure functions of label arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..project import JUNK_CLASS


@dataclass(frozen=True)
class Scores:
    accuracy: float
    balanced_accuracy: float
    recall: dict[str, float]  # class name -> recall, for the classes in the test set
    particle_accuracy: float = float("nan")  # accuracy over the test volumes that are not junk

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
    particles = true != classes.index(JUNK_CLASS) if JUNK_CLASS in classes else np.ones(len(true), bool)
    particle = float((pred[particles] == true[particles]).mean()) if particles.any() else float("nan")
    return Scores(float((pred == true).mean()), float(np.mean(list(recall.values()))), recall, particle)


def parse_recall(text: str) -> dict[str, float]:
    """The inverse of :meth:`Scores.recall_text` (empty text: no recall)."""
    out = {}
    for part in filter(None, (text or "").split(";")):
        name, _, value = part.rpartition("=")
        out[name] = float(value)
    return out
