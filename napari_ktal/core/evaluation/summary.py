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
  (``ktal-cryo train --test``; history.csv), and its balanced accuracy where history.csv has
  that column;
- how long labeling batch ``c`` took and how long cycle ``c`` trained (history.csv).

Labeling time is read from the journal's timestamps: the expert's records of the batch (labels,
skips, undos and corrections given while it was on screen), from the moment the batch was
written, with every pause longer than :data:`IDLE_CAP` counted as that cap (a coffee break is
not labeling time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..project import Project

IDLE_CAP = 120.0  # seconds: a longer pause between two labels counts as this much labeling time
EXPERT = ("user", "skip")  # journal "by" values of the expert's own records


@dataclass(frozen=True)
class CycleRow:
    cycle: int
    counts: dict[str, int]  # labeled volumes per class in batches 0..cycle
    mean_score: float
    agreement: float
    test_accuracy: float
    labeling_seconds: float = float("nan")  # NaN: nothing of the batch was labeled by hand
    train_seconds: float = float("nan")  # NaN: this cycle is not trained yet
    test_balanced_accuracy: float = float("nan")  # where history.csv has the column


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def labeling_times(project: Project, batches: dict[int, set[int]]) -> dict[int, float]:
    """Seconds of labeling per batch (cycle -> seconds), from the journal (see the module's docstring)."""
    stamps: dict[int, list[float]] = {c: [] for c in batches}
    owner = {}
    for c, members in batches.items():
        for i in members:
            owner.setdefault(i, c)
    for rec in project.journal.records():
        if rec.get("op") not in ("set", "unset") or rec.get("by") not in EXPERT:
            continue
        t = rec.get("t")
        c = rec.get("cycle")
        if not isinstance(c, int):  # an unset record of an older napari-ktal: the volume's batch
            c = owner.get(int(rec["index"]))
        if c in stamps and isinstance(t, (int, float)):
            stamps[c].append(float(t))
    out = {}
    for c, times in stamps.items():
        if not times:
            out[c] = float("nan")
            continue
        try:
            start = project.paths.query(c).stat().st_mtime
        except OSError:
            start = min(times)
        times = sorted(times)
        gaps = np.diff([min(start, times[0]), *times])
        out[c] = float(np.minimum(gaps, IDLE_CAP).sum())
    return out


def cycle_summary(project: Project, labels: dict[int, str] | None = None) -> list[CycleRow]:
    labels = project.labels() if labels is None else labels
    classes = project.classes
    history = {int(r["cycle"]): r for r in project.history()}
    batches = {cycle: project.read_query(cycle) for cycle in project.query_cycles()}
    seconds = labeling_times(project, {c: {q.index for q in b} for c, b in batches.items()})
    members: set[int] = set()
    rows = []
    for cycle, batch in batches.items():
        members.update(q.index for q in batch)
        counts = dict.fromkeys(classes, 0)
        for i in members:
            if labels.get(i) in counts:
                counts[labels[i]] += 1
        scores = [q.score for q in batch if not math.isnan(q.score)]
        judged = [q.predicted == labels[q.index] for q in batch if q.predicted and q.index in labels]
        trained = history.get(cycle, {})
        rows.append(CycleRow(
            cycle, counts,
            sum(scores) / len(scores) if scores else float("nan"),
            sum(judged) / len(judged) if judged else float("nan"),
            _num(trained.get("test_accuracy")),
            seconds[cycle],
            _num(trained.get("train_seconds")),
            _num(trained.get("test_balanced_accuracy")),
        ))
    return rows
