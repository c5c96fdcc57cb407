"""The labeling session: which batch, which volume, what is labeled, what can be undone.

Plain Python over :class:`~napari_ktal.core.project.Project`, no Qt and no viewer, so it is
tested on its own. Everything it shows is derived from the project folder when it opens:

- the batch is the latest ``queries/cycle_NNN.csv`` (cycle 0's random batch is drawn on
  first open, with the same seed as ``ktal-cryo train``);
- labels are replayed from ``labels.jsonl``; a volume the user skipped is an ``unset``
  journal record written ``by="skip"``, so skips survive a restart as well;
- the position is the first volume of the batch that is neither labeled nor skipped.

Every assignment goes to the journal at once (it fsyncs). The undo stack is the only state
kept in memory; it covers the batch on screen and is emptied when the next batch arrives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from ..errors import KtalError
from ..project import JUNK_CLASS, Project, QueryItem
from ..seeds import DEFAULT_SEED
from .cycle import initial_query

SKIP_BY = "skip"  # the journal's "by" of an unset record that marks a skip
MAX_KEYED_CLASSES = 9  # number keys 1..9


class Phase(Enum):
    """What the session needs next."""

    LABELING = "labeling"  # the batch has volumes that are neither labeled nor skipped
    READY = "ready"  # the batch is done and this cycle has not been trained yet
    DONE = "done"  # the batch was trained on and no further batch was queried (pool used up)


@dataclass(frozen=True)
class Change:
    """One undoable change of one volume's label."""

    index: int
    position: int  # where in the batch it happened
    before: str | None  # label before the change (None: unlabeled)
    before_skipped: bool


class LabelingSession:
    """The state of labeling one project; derived from its folder, written through at once."""

    def __init__(self, project: Project, seed: int = DEFAULT_SEED):
        self.project = project
        self.seed = seed
        self.cycle = 0
        self.batch: list[QueryItem] = []
        self.position = 0
        self._labels: dict[int, str] = {}
        self._skipped: set[int] = set()
        self._undo: list[Change] = []
        self._trained_cycles = 0  # read from the folder by reload(): every key press asks for it
        self._final_budget = 0
        self.reload()

    # -- state from the project folder --------------------------------------------------
    def reload(self) -> None:
        """Re-derive batch, labels and position from the project folder; empties the undo stack."""
        latest = self.project.latest_query()
        if latest is None:
            self.cycle, self.batch = 0, initial_query(self.project, self.project.recipe(), self.seed)
        else:
            self.cycle, self.batch = latest
        self._labels, self._skipped = _replay(self.project)
        self._trained_cycles = self.project.trained_cycles
        self.refresh_recipe()
        self._undo.clear()
        first_open = self._next_open(0)
        self.position = first_open if first_open is not None else 0

    # -- reading -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.batch)

    @property
    def item(self) -> QueryItem | None:
        return self.batch[self.position] if self.batch else None

    @property
    def classes(self) -> list[str]:
        return self.project.classes

    @property
    def labels(self) -> dict[int, str]:
        """Every label of the project (pool index -> class), as the journal holds it."""
        return dict(self._labels)

    def label_of(self, index: int) -> str | None:
        return self._labels.get(index)

    def is_skipped(self, index: int) -> bool:
        return index in self._skipped and index not in self._labels

    def is_open(self, index: int) -> bool:
        return index not in self._labels and index not in self._skipped

    @property
    def n_open(self) -> int:
        return sum(self.is_open(q.index) for q in self.batch)

    @property
    def n_labeled_in_batch(self) -> int:
        return sum(q.index in self._labels for q in self.batch)

    @property
    def n_skipped_in_batch(self) -> int:
        return sum(self.is_skipped(q.index) for q in self.batch)

    @property
    def phase(self) -> Phase:
        if self.n_open:
            return Phase.LABELING
        if self._trained_cycles > self.cycle:
            return Phase.DONE
        return Phase.READY

    def training_blocker(self) -> str | None:
        """Why a cycle cannot be trained now, or None."""
        if len(self.project.classes) < 2:
            return "define at least 2 classes"
        if len(self._labels) < 2:
            return "label at least 2 volumes"
        return None

    def refresh_recipe(self) -> None:
        """Re-read the recipe's budget (after the recipe changed)."""
        from .cycle import budget_schedule

        n = len(self.project.pool)
        try:
            self._final_budget = budget_schedule(n, self.project.recipe().active)[-1]
        except KtalError:  # an unreadable recipe.toml must not stop labeling; training will say why
            self._final_budget = n

    def budget(self) -> tuple[int, int, int]:
        """(labeled volumes, pool size, the recipe's final labeled-set size)."""
        return len(self._labels), len(self.project.pool), self._final_budget

    def mean_score(self) -> float:
        """Mean uncertainty score of the batch (NaN for cycle 0's random batch)."""
        scores = [q.score for q in self.batch if not math.isnan(q.score)]
        return sum(scores) / len(scores) if scores else float("nan")

    # -- moving ------------------------------------------------------------------------
    def go_to(self, position: int) -> None:
        if self.batch:
            self.position = max(0, min(len(self.batch) - 1, int(position)))

    def next(self) -> None:
        self.go_to(self.position + 1)

    def previous(self) -> None:
        self.go_to(self.position - 1)

    def _next_open(self, start: int) -> int | None:
        """The first open position at or after ``start``, wrapping around; None if none."""
        n = len(self.batch)
        for k in range(n):
            pos = (start + k) % n
            if self.is_open(self.batch[pos].index):
                return pos
        return None

    def _advance(self) -> None:
        nxt = self._next_open(self.position + 1) if self.batch else None
        if nxt is not None:
            self.position = nxt

    # -- changing labels ---------------------------------------------------------------
    def _record(self) -> Change:
        index = self.batch[self.position].index
        return Change(index, self.position, self._labels.get(index), index in self._skipped)

    def assign(self, label: str) -> Change:
        """Label the current volume (journaled at once) and move to the next open volume."""
        if not self.batch:
            raise KtalError("there is no volume to label")
        change = self._record()
        self.project.label(change.index, label, by="user", cycle=self.cycle)
        self._labels[change.index] = label
        self._skipped.discard(change.index)
        self._undo.append(change)
        self._advance()
        return change

    def assign_number(self, number: int) -> Change:
        """Label with the class bound to key ``number`` (1-based)."""
        classes = self.project.classes
        if not 1 <= number <= min(len(classes), MAX_KEYED_CLASSES):
            raise KtalError(f"no class on key {number}; there are {len(classes)} classes")
        return self.assign(classes[number - 1])

    def skip(self) -> Change:
        """Leave the current volume without a label (removing one it had) and move on."""
        if not self.batch:
            raise KtalError("there is no volume to skip")
        change = self._record()
        self.project.unlabel(change.index, by=SKIP_BY)
        self._labels.pop(change.index, None)
        self._skipped.add(change.index)
        self._undo.append(change)
        self._advance()
        return change

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> Change | None:
        """Restore the label the last change replaced (a new journal line) and go back to it."""
        if not self._undo:
            return None
        change = self._undo.pop()
        if change.before is not None:
            self.project.label(change.index, change.before, by="user", cycle=self.cycle)
            self._labels[change.index] = change.before
            self._skipped.discard(change.index)
        else:
            self.project.unlabel(change.index, by=SKIP_BY if change.before_skipped else "user")
            self._labels.pop(change.index, None)
            if change.before_skipped:
                self._skipped.add(change.index)
            else:
                self._skipped.discard(change.index)
        self.position = change.position
        return change

    # -- classes -----------------------------------------------------------------------
    def add_class(self, name: str) -> None:
        self.project.add_class(name)

    def add_junk_class(self) -> str:
        """Add the conventional 'junk' class (not a particle); returns its name."""
        if JUNK_CLASS in self.project.classes:
            raise KtalError(f"there is a '{JUNK_CLASS}' class already")
        self.project.add_class(JUNK_CLASS)
        return JUNK_CLASS

    def rename_class(self, old: str, new: str) -> None:
        self.project.rename_class(old, new)  # the journal records the rename; labels follow
        new = new.strip()
        self._labels = {i: (new if lab == old else lab) for i, lab in self._labels.items()}
        self._undo = [c if c.before != old else Change(c.index, c.position, new, c.before_skipped)
                      for c in self._undo]

    def remove_class(self, name: str) -> None:
        self.project.remove_class(name)  # refuses a class that still labels volumes
        self._undo = [c for c in self._undo if c.before != name]


def _replay(project: Project) -> tuple[dict[int, str], set[int]]:
    """Labels and skipped volumes from one pass over the journal."""
    labels = project.labels()
    last_unset_by: dict[int, str | None] = {}
    for rec in project.journal.records():
        if rec.get("op") == "set":
            last_unset_by.pop(int(rec["index"]), None)
        elif rec.get("op") == "unset":
            last_unset_by[int(rec["index"])] = rec.get("by")
    skipped = {i for i, by in last_unset_by.items() if by == SKIP_BY and i not in labels}
    return labels, skipped
