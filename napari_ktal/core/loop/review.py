"""Reviewing the labels of a project: who gave each one and when, what the teacher thinks of
it now, which ones are likely mistakes, and the volumes that show best what a class looks like.

Plain functions over the project folder and arrays, shared by the widget's review table and
per-class examples (and usable from a script):

- :func:`provenance` replays the journal once: for each labeled volume, the record that gave
  its current label (by, cycle, time, and the label it replaced, for corrections);
- :func:`teacher_opinion` runs the latest trained teacher over some volumes (a pass over
  the labeled set takes about a second on a CPU for the quick recipe): a :class:`TeacherView`;
- :func:`review_rows` joins the two, and the labels judged out of sample where a current
  :class:`~.label_review.LabelReview` is given (cross-fitted teachers that never saw the label
  they judge: the latest teacher memorises its labels and cannot find a mistake); likely mistakes
  come first: by the out-of-sample verdict (flagged suspects, most suspect first) where there is
  one, else the volumes whose label the teacher disagrees with, the least probable label first;
- :func:`class_examples` ranks each class's labeled volumes by the teacher's probability of
  that class: the ones it is most sure of, to remind the expert what a class looks like.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..progress import QUIET, RunContext
from ..project import Project
from .label_review import LabelReview


@dataclass(frozen=True)
class Provenance:
    """The journal record that gave a volume its current label."""

    label: str
    by: str
    cycle: int | None
    t: float | None
    was: str | None  # the label this record replaced (a correction), if it says so
    n_changes: int  # how many records changed this volume's label (1: never corrected)


def provenance(project: Project) -> dict[int, Provenance]:
    """For every labeled volume, where its current label comes from (one pass over the journal)."""
    current: dict[int, Provenance] = {}
    changes: dict[int, int] = {}
    for rec in project.journal.records():
        op = rec.get("op")
        if op == "set":
            i = int(rec["index"])
            changes[i] = changes.get(i, 0) + 1
            cycle = rec.get("cycle")
            current[i] = Provenance(rec["label"], str(rec.get("by", "")), cycle if isinstance(cycle, int) else None,
                                    _float(rec.get("t")), rec.get("was"), changes[i])
        elif op == "unset":
            i = int(rec["index"])
            current.pop(i, None)
            if rec.get("by") != "skip":
                changes[i] = changes.get(i, 0) + 1
        elif op == "rename":
            old, new = rec["from"], rec["to"]
            current = {i: (p if p.label != old else _relabeled(p, new)) for i, p in current.items()}
    return current


def _relabeled(p: Provenance, label: str) -> Provenance:
    return Provenance(label, p.by, p.cycle, p.t, p.was, p.n_changes)


def _float(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class TeacherView:
    """The softmax of one trained teacher over some pool volumes."""

    cycle: int  # the cycle whose teacher this is
    classes: list[str]  # the classes it was trained with, in its output order
    indices: np.ndarray  # pool indices, (n,)
    probabilities: np.ndarray  # (n, len(classes)) float32

    def __post_init__(self):
        object.__setattr__(self, "_row", {int(i): r for r, i in enumerate(self.indices)})

    def __contains__(self, index: int) -> bool:
        return int(index) in self._row

    def guess(self, index: int) -> tuple[str, float] | None:
        """(the teacher's class, its probability) for ``index``, or None if not computed."""
        r = self._row.get(int(index))
        if r is None:
            return None
        k = int(np.argmax(self.probabilities[r]))
        return self.classes[k], float(self.probabilities[r, k])

    def probability(self, index: int, label: str) -> float:
        """The teacher's probability of ``label`` for ``index`` (NaN if unknown, or a class it never saw)."""
        r = self._row.get(int(index))
        if r is None or label not in self.classes:
            return float("nan")
        return float(self.probabilities[r, self.classes.index(label)])


def teacher_opinion(project: Project, indices, device, *, batch_size: int | None = None,
                    run: RunContext = QUIET) -> TeacherView | None:
    """The latest trained teacher's softmax over ``indices`` (None: no cycle trained yet)."""
    import torch

    from ..engine import forward_outputs

    cycles = project.checkpoint_cycles()
    if not cycles:
        return None
    teacher, _, meta = project.load_models(cycles[-1], device)
    idx = np.asarray(sorted({int(i) for i in indices}), dtype=np.int64)
    recipe = project.recipe()
    if batch_size is None:
        batch_size = recipe.train.eval_batch_size
    if len(idx):
        (logits,) = forward_outputs([teacher], project.pool, idx, torch.device(device), batch_size=batch_size,
                                    phase="predict", speed=recipe.speed, run=run)
        probs = logits.float().softmax(1).numpy().astype(np.float32)
    else:
        probs = np.zeros((0, len(meta["classes"])), np.float32)
    return TeacherView(cycles[-1], list(meta["classes"]), idx, probs)


@dataclass(frozen=True)
class ReviewRow:
    index: int
    key: str
    label: str
    cycle: int | None  # the cycle (batch) in which the current label was given
    by: str  # who gave it: user, import, oracle
    t: float | None  # when (seconds since the epoch)
    was: str | None  # for a correction: the label it replaced
    predicted: str  # the teacher's class now ("" before any training)
    confidence: float  # the teacher's probability of its class (NaN before any training)
    p_label: float  # the teacher's probability of the given label (NaN before any training)
    # judged out of sample (cross-fitting; NaN and "" until the current labels are judged):
    suggested: str = ""  # the out-of-sample class
    p_out: float = float("nan")  # the out-of-sample probability of the given label
    score: float = float("nan")  # in [0, 1]: how likely the label is wrong
    suspect: bool = False  # flagged: the out-of-sample prediction is another class

    @property
    def disagrees(self) -> bool:
        """The latest teacher (which trained on this label) prefers another class."""
        return bool(self.predicted) and self.predicted != self.label

    @property
    def judged(self) -> bool:
        """Judged out of sample (by teachers that never saw this label)."""
        return not math.isnan(self.score)

    @property
    def likely_mistake(self) -> bool:
        """Flagged out of sample where judged; else the teacher disagrees."""
        return self.suspect if self.judged else self.disagrees


def review_rows(project: Project, labels: dict[int, str] | None = None, teacher: TeacherView | None = None,
                prov: dict[int, Provenance] | None = None, judged: LabelReview | None = None) -> list[ReviewRow]:
    """Every label of the project, likely mistakes first (see the module's docstring).

    ``judged``: the labels judged out of sample; a row takes its verdict only where it judged the
    label the volume has now. Without a teacher opinion of a volume, its row comes after those
    with one, newest first.
    """
    labels = project.labels() if labels is None else labels
    prov = provenance(project) if prov is None else prov
    keys = project.pool.keys
    verdicts = _verdicts(judged, keys, labels)
    rows = []
    for i, label in labels.items():
        p = prov.get(i)
        guess = teacher.guess(i) if teacher is not None else None
        predicted, conf = guess if guess is not None else ("", float("nan"))
        p_label = teacher.probability(i, label) if teacher is not None else float("nan")
        v = verdicts.get(i)
        out = (v.suggested, v.p_given, v.score, v.suspect) if v is not None else ("", float("nan"), float("nan"), False)
        rows.append(ReviewRow(i, keys[i], label, p.cycle if p else None, p.by if p else "", p.t if p else None,
                              p.was if p else None, predicted, conf, p_label, *out))
    rows.sort(key=_mistake_order)
    return rows


def _verdicts(judged: LabelReview | None, keys, labels: dict[int, str]) -> dict:
    """The out-of-sample verdict of each volume whose label now is the one judged (none for the
    volumes of a class nobody else has: no fold could learn it)."""
    if judged is None:
        return {}
    cf = judged.crossfit
    could = {int(i) for i in cf.indices[cf.judged]}
    return {r.index: r for r in judged.rows(keys) if r.index in could and labels.get(r.index) == r.given}


def _mistake_order(r: ReviewRow):
    if r.judged:  # out of sample: the flagged suspects, most suspect first, then the rest by score
        return (0, not r.suspect, -r.score, r.index)
    known = not math.isnan(r.p_label)
    return (1, not r.disagrees, not known, r.p_label if known else 0.0, -(r.t or 0.0), r.index)


def filter_rows(rows: list[ReviewRow], label: str | None = None, disagree_only: bool = False) -> list[ReviewRow]:
    """The rows of class ``label`` (all if None), only the likely mistakes if asked
    (:attr:`ReviewRow.likely_mistake`: flagged out of sample, else the teacher disagrees)."""
    return [r for r in rows if (label is None or r.label == label) and (not disagree_only or r.likely_mistake)]


def class_examples(labels: dict[int, str], teacher: TeacherView | None, classes: list[str],
                   per_class: int = 6) -> dict[str, list[int]]:
    """For each class, up to ``per_class`` labeled volumes the teacher is most sure belong to it.

    Without a teacher (no trained cycle yet), the first labeled volumes of each class.
    """
    out: dict[str, list[int]] = {c: [] for c in classes}
    members: dict[str, list[int]] = {c: [] for c in classes}
    for i, label in labels.items():
        if label in members:
            members[label].append(int(i))
    for c, idx in members.items():
        if teacher is not None:
            scored = [(teacher.probability(i, c), i) for i in idx]
            scored = [(p, i) for p, i in scored if not math.isnan(p)]
            scored.sort(key=lambda pi: (-pi[0], pi[1]))
            ranked = [i for _, i in scored] + sorted(set(idx) - {i for _, i in scored})
        else:
            ranked = sorted(idx)
        out[c] = ranked[:per_class]
    return out
