"""The labeling session: which batch, which volume, what is labeled, what can be undone.

Plain Python over :class:`~napari_ktal.core.project.Project`, no Qt and no viewer, so it is
tested on its own. Everything it shows is derived from the project folder when it opens:

- the batch is the latest ``queries/cycle_NNN.csv`` (cycle 0's random batch is drawn on
  first open, with the same seed as ``ktal-cryo train``);
- labels are replayed from ``labels.jsonl``; a volume the user skipped is an ``unset``
  journal record written ``by="skip"``, so skips survive a restart as well;
- the position is the first volume of the batch that is neither labeled nor skipped.

Every assignment goes to the journal at once (it fsyncs). The undo stack is the only state
kept in memory: it covers everything changed since the project was opened here, across
batches (undoing a label of an earlier batch writes a new journal record, like any change).

Besides the batch, the session can *visit* any other volume of the pool (from the review
table, the per-class examples, or an undo across batches): while it does, a class key
relabels that volume, and N / P return to the batch.

Class keys: 1-9, then 0, then the letters of :data:`CLASS_KEYS` (never N, P, S, U or C, which
move, skip, undo and show the particle in its tomogram), so 31 classes have a key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum

from ..errors import KtalError
from ..project import JUNK_CLASS, Project, QueryItem
from ..seeds import DEFAULT_SEED
from .cycle import initial_query

SKIP_BY = "skip"  # the journal's "by" of an unset record that marks a skip
CLASS_KEYS = "1234567890QWERTYIOADFGHJKLZXVBM"  # class k has key CLASS_KEYS[k]; not N P S U C
MAX_KEYED_CLASSES = len(CLASS_KEYS)


def shown_score(item: QueryItem, batch: list[QueryItem]) -> float | None:
    """The strategy's score of a batch volume as the expert may see it: None when it is not shown.

    A batch with an audit slice (``[trust] audit``) shows no volume's score: the audit volumes have
    none (they were drawn at random), so showing the others' would tell which ones are audits, and
    an expert who knows may label them with more care than the rest, which biases the estimate of
    accuracy they exist for. Otherwise the score, NaN for a random pick."""
    return None if any(q.audit for q in batch) else item.score


def key_of_class(k: int) -> str | None:
    """The key of the class at position ``k`` (0-based) of the project's classes, or None."""
    return CLASS_KEYS[k] if 0 <= k < len(CLASS_KEYS) else None


def class_of_key(key: str) -> int | None:
    """The class position (0-based) a key stands for, or None (case does not matter)."""
    key = str(key).upper()
    return CLASS_KEYS.index(key) if len(key) == 1 and key in CLASS_KEYS else None


def class_for_key(classes: list[str], key: str) -> str:
    """The class of ``classes`` that ``key`` labels with; a KtalError that says which keys there are if none."""
    k = class_of_key(key)
    if k is not None and k < len(classes):
        return classes[k]
    have = f"{len(classes)} classes (keys {keys_of_classes(len(classes))})" if classes else "no classes yet"
    what = f"on key {str(key).upper()}" if k is not None else f"key {key!r}"
    raise KtalError(f"no class {what}: this project has {have}")


def keys_of_classes(n: int) -> str:
    """The keys of the first ``n`` classes, as a user reads them: '1-4', '1-9, 0', '1-9, 0, Q W E'."""
    keys = CLASS_KEYS[:max(0, n)]
    digits, letters = keys[:10], keys[10:]
    if len(digits) <= 2:
        text = ", ".join(digits)
    else:
        text = f"{digits[0]}-{digits[-1]}" if len(digits) < 10 else f"{digits[0]}-{digits[-2]}, {digits[-1]}"
    return text + (", " + " ".join(letters) if letters else "")


class Phase(Enum):
    """What the session needs next."""

    LABELING = "labeling"  # the batch has volumes that are neither labeled nor skipped
    READY = "ready"  # the batch is done and this cycle has not been trained yet
    DONE = "done"  # the batch was trained on and no further batch was queried (pool used up)


@dataclass(frozen=True)
class Change:
    """One change of one volume's label; an undo step holds one or several (a bulk assignment)."""

    index: int
    position: int | None  # where in the batch on screen it happened (None: a volume outside it)
    before: str | None  # label before the change (None: unlabeled)
    before_skipped: bool
    cycle: int = 0  # the batch on screen when it happened
    after: str | None = None  # the label it gave (None: it took one away, or skipped)
    after_skipped: bool = False  # it was a skip


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
        self._undo: list[tuple[Change, ...]] = []
        self._positions: dict[int, int] = {}  # pool index -> position in the batch
        self.visiting: int | None = None  # a pool volume outside the batch being looked at
        self._trained_cycles = 0  # read from the folder by reload(): every key press asks for it
        self._final_budget = 0
        self.reload()

    # -- state from the project folder --------------------------------------------------
    def reload(self) -> None:
        """Re-derive batch, labels and position from the project folder (the undo stack stays)."""
        latest = self.project.latest_query()
        if latest is None:
            self.cycle, self.batch = 0, initial_query(self.project, self.project.recipe(), self.seed)
        else:
            self.cycle, self.batch = latest
        self._positions = {q.index: pos for pos, q in enumerate(self.batch)}
        self._labels, self._skipped = _replay(self.project)
        self._trained_cycles = self.project.trained_cycles
        self.refresh_recipe()
        self.visiting = None
        first_open = self._next_open(0)
        self.position = first_open if first_open is not None else 0

    # -- reading -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.batch)

    @property
    def item(self) -> QueryItem | None:
        return self.batch[self.position] if self.batch else None

    @property
    def current_index(self) -> int | None:
        """The pool index on screen: the visited volume, else the batch's current one."""
        if self.visiting is not None:
            return self.visiting
        return self.item.index if self.batch else None

    def position_of(self, index: int) -> int | None:
        """Where ``index`` is in the batch on screen (None: not in it)."""
        return self._positions.get(index)

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
        self.visiting = None
        if self.batch:
            self.position = max(0, min(len(self.batch) - 1, int(position)))

    def next(self) -> None:
        """The next volume of the batch (from a visited volume: back to the batch)."""
        self.go_to(self.position + (self.visiting is None))

    def previous(self) -> None:
        self.go_to(self.position - (self.visiting is None))

    def visit(self, index: int) -> None:
        """Look at pool volume ``index``: its batch position if it is in the batch, else a visit."""
        index = int(index)
        if not 0 <= index < len(self.project.pool):
            raise KtalError(f"there is no volume {index} in the pool of {len(self.project.pool)}")
        pos = self._positions.get(index)
        if pos is not None:
            self.go_to(pos)
        else:
            self.visiting = index

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
    def _change(self, index: int, after: str | None = None, after_skipped: bool = False) -> Change:
        return Change(index, self._positions.get(index), self._labels.get(index), index in self._skipped,
                      self.cycle, after, after_skipped)

    def _set_labels(self, indices: list[int], label: str) -> tuple[Change, ...]:
        """Label ``indices`` (one journal write, fsync'ed) and push one undo step."""
        changes = tuple(self._change(i, after=label) for i in dict.fromkeys(int(i) for i in indices))
        if not changes:
            return changes
        was = {c.index: c.before for c in changes if c.before not in (None, label)}
        self.project.label_many({c.index: label for c in changes}, by="user", cycle=self.cycle, was=was)
        for c in changes:
            self._labels[c.index] = label
            self._skipped.discard(c.index)
        self._undo.append(changes)
        return changes

    def assign(self, label: str) -> Change:
        """Label the volume on screen (journaled at once); in the batch, move to the next open volume."""
        if self.visiting is not None:
            return self._set_labels([self.visiting], label)[0]
        if not self.batch:
            raise KtalError("there is no volume to label")
        change = self._set_labels([self.batch[self.position].index], label)[0]
        self._advance()
        return change

    def assign_many(self, indices, label: str) -> tuple[Change, ...]:
        """Give ``label`` to several volumes at once (one undo step); if the batch's current volume
        is among them, move on to the next open one."""
        current = self.item.index if self.batch and self.visiting is None else None
        changes = self._set_labels(list(indices), label)
        if current is not None and any(c.index == current for c in changes):
            self._advance()
        return changes

    def relabel(self, index: int, label: str) -> Change:
        """Correct the label of any pool volume (a new journal record that says what it replaced)."""
        if not 0 <= int(index) < len(self.project.pool):
            raise KtalError(f"there is no volume {index} in the pool of {len(self.project.pool)}")
        return self._set_labels([index], label)[0]

    def unlabel(self, index: int) -> Change | None:
        """Take the label of any pool volume back (it goes back to the unlabeled pool); None if it had none."""
        index = int(index)
        label = self._labels.get(index)
        if label is None:
            return None
        change = self._change(index)
        self.project.unlabel(index, by="user", cycle=self.cycle, was=label)
        del self._labels[index]
        self._skipped.discard(index)
        self._undo.append((change,))
        return change

    def assign_key(self, key: str) -> Change:
        """Label with the class bound to ``key`` (1-9, 0, then letters: :data:`CLASS_KEYS`)."""
        return self.assign(class_for_key(self.project.classes, key))

    def assign_number(self, number: int) -> Change:
        """Label with the class bound to number key ``number`` (1-9; 10 is key 0)."""
        classes = self.project.classes
        if not 1 <= number <= min(len(classes), 10):
            raise KtalError(f"no class on key {number % 10}; there are {len(classes)} classes")
        return self.assign(classes[number - 1])

    def skip(self) -> Change | None:
        """Leave the current volume without a label (removing one it had) and move on.

        On a visited volume (outside the batch) it changes nothing and goes back to the batch.
        """
        if self.visiting is not None:
            self.go_to(self.position)
            return None
        if not self.batch:
            raise KtalError("there is no volume to skip")
        change = self._change(self.batch[self.position].index, after_skipped=True)
        self.project.unlabel(change.index, by=SKIP_BY, cycle=self.cycle, was=change.before)
        self._labels.pop(change.index, None)
        self._skipped.add(change.index)
        self._undo.append((change,))
        self._advance()
        return change

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> tuple[Change, ...]:
        """Restore what the last step replaced (new journal lines) and go back to its first volume.

        Works across batches: a step of an earlier batch restores those volumes' labels and
        visits the first (it is not in the batch on screen). Returns every change of the step
        (several for a bulk assignment), or ``()`` if there is nothing to undo.
        """
        if not self._undo:
            return ()
        step = self._undo.pop()
        restore: dict[str, list[Change]] = {}
        for change in step:
            if change.before is not None:
                restore.setdefault(change.before, []).append(change)
        for label, changes in restore.items():
            self.project.label_many({c.index: label for c in changes}, by="user", cycle=self.cycle,
                                    was={c.index: self._labels.get(c.index) for c in changes})
            for c in changes:
                self._labels[c.index] = label
                self._skipped.discard(c.index)
        for change in step:
            if change.before is None:
                self.project.unlabel(change.index, by=SKIP_BY if change.before_skipped else "user", cycle=self.cycle,
                                     was=self._labels.get(change.index))
                self._labels.pop(change.index, None)
                if change.before_skipped:
                    self._skipped.add(change.index)
                else:
                    self._skipped.discard(change.index)
        first = step[0]
        if first.index in self._positions:
            self.go_to(self._positions[first.index])
        else:
            self.visiting = first.index
        return step

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
        self._undo = [tuple(replace(c, before=new if c.before == old else c.before,
                                    after=new if c.after == old else c.after) for c in step) for step in self._undo]

    def remove_class(self, name: str) -> None:
        self.project.remove_class(name)  # refuses a class that still labels volumes
        steps = (tuple(c for c in step if c.before != name) for step in self._undo)
        self._undo = [step for step in steps if step]


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
