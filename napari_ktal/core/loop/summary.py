"""The numbers of each cycle that the widget plots: labeled volumes per class, batch
uncertainty, agreement with the teacher, test accuracy.

Cycle ``c`` here is batch ``c`` and the labeled set it completes (what cycle ``c`` trains on):

- counts: labeled volumes per class among batches ``0..c`` (current labels, so relabels count);
- mean uncertainty of batch ``c`` (the knowledge-transfer score of cycle ``c-1``'s models;
  cycle 0's batch is random and has none);
- agreement: how often cycle ``c-1``'s teacher predicted the label you then gave, on batch
  ``c``. These are the volumes the models were least sure of, so this is a pessimistic,
  free estimate of accuracy; it needs no held-out set;
- test accuracy of cycle ``c``'s teacher, when the project was trained with a test set
  (``ktal-cryo train --test``; history.csv).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..project import Project


@dataclass(frozen=True)
class CycleRow:
    cycle: int
    counts: dict[str, int]  # labeled volumes per class in batches 0..cycle
    mean_score: float
    agreement: float
    test_accuracy: float


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def cycle_summary(project: Project, labels: dict[int, str] | None = None) -> list[CycleRow]:
    labels = project.labels() if labels is None else labels
    classes = project.classes
    history = {int(r["cycle"]): r for r in project.history()}
    members: set[int] = set()
    rows = []
    for cycle in project.query_cycles():
        batch = project.read_query(cycle)
        members.update(q.index for q in batch)
        counts = dict.fromkeys(classes, 0)
        for i in members:
            if labels.get(i) in counts:
                counts[labels[i]] += 1
        scores = [q.score for q in batch if not math.isnan(q.score)]
        judged = [q.predicted == labels[q.index] for q in batch if q.predicted and q.index in labels]
        rows.append(CycleRow(
            cycle, counts,
            sum(scores) / len(scores) if scores else float("nan"),
            sum(judged) / len(judged) if judged else float("nan"),
            _num(history.get(cycle, {}).get("test_accuracy")),
        ))
    return rows
