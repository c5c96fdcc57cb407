"""Labels read from CSV files (path,label): mapped onto a project's pool (an oracle, an import),
or loaded as a held-out test set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import ArraySource, PickOptions, Pool, iter_volumes, normalize, read_labels_csv, read_picks
from ..data.particles import is_pick_list
from ..data.sites import match_picks
from ..errors import InputError


@dataclass(frozen=True)
class LabeledSet:
    """Volumes with known classes held in memory (a test set), normalised like the pool."""

    volumes: np.ndarray  # float16 (n, b, b, b)
    y: np.ndarray  # class ids
    keys: list[str]

    @property
    def source(self) -> ArraySource:
        return ArraySource(self.volumes)


def load_labeled_set(csv_path: str | Path, classes: list[str]) -> LabeledSet:
    csv_path = Path(csv_path)
    items = read_labels_csv(csv_path)
    lookup = {c: k for k, c in enumerate(classes)}
    unknown = sorted({lab for _, lab in items} - set(lookup))
    if unknown:
        raise InputError(csv_path, f"label(s) {', '.join(unknown)} are not classes of this project",
                         f"classes: {', '.join(classes)}")
    refs = [r for r, _ in items]
    vols = np.stack([normalize(v, r.path).astype(np.float16) for r, v in iter_volumes(refs)])
    keys = [r.label_key(csv_path.parent.resolve()) for r in refs]
    return LabeledSet(vols, np.array([lookup[lab] for _, lab in items], np.int64), keys)


def labels_on_pool(pool: Pool, csv_path: str | Path, record: dict | None = None) -> tuple[dict[int, str], list[str]]:
    """A labels CSV mapped onto pool indices, and the CSV's keys that are not in the pool.

    A row matches by its resolved file (and frame), or else by its key relative to the CSV's
    folder, so a CSV still matches a pool imported from another copy of the same folder.

    A particle list that carries classes (STAR rlnClassNumber, Dynamo's class column, a CSV
    label column, copick objects) matches a pool cut from a particle list (``record``: the
    project's P/source/picks.json) by tomogram and position (:mod:`..data.sites`).
    """
    csv_path = Path(csv_path)
    if is_pick_list(csv_path):
        record = record or {}
        picks = read_picks(csv_path, PickOptions.from_dict(record.get("options", {})))
        return match_picks(picks, pool, record)
    by_ref, by_key = pool.index_of(), {k: i for i, k in enumerate(pool.keys)}
    root = csv_path.parent.resolve()
    found: dict[int, str] = {}
    unmatched: list[str] = []
    for ref, label in read_labels_csv(csv_path):
        i = by_ref.get(ref)
        if i is None:
            i = by_key.get(ref.label_key(root))
        if i is None:
            unmatched.append(ref.label_key(root))
        else:
            found[i] = label
    return found, unmatched
