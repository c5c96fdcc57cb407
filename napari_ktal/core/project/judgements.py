"""What a project records to judge itself without a test set (:mod:`napari_ktal.core.trust`).

- ``audit.csv`` (cycle,index,key,predicted): each audit volume the teacher of ``cycle`` judged
  after training without it (:mod:`napari_ktal.core.loop.cycle`); correctness is read against
  the labels *now*, so a label the expert corrected later counts as corrected.
- ``stop_set.csv`` (index,key,cycle_000,cycle_001,...): the fixed stop set, chosen once per
  project, and each cycle's predicted class of every volume of it: the stop rule compares
  successive columns.
- ``oracle_flips.csv`` (index,key,true,given): in a simulated run with slips (``train --oracle
  --flip-answers``), the volumes the oracle answered wrongly, so that a measurement can check the
  review against them.

A cycle writes its rows before its history.csv row (the cycle's commit). A cycle trained again
after a crash replaces its rows and drops those of any later cycle: nothing counts twice.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from ..errors import ProjectError

AUDIT_COLUMNS = ["cycle", "index", "key", "predicted"]
FLIP_COLUMNS = ["index", "key", "true", "given"]
_STOP_COLUMN = re.compile(r"cycle_(\d+)$")


@dataclass(frozen=True)
class AuditJudgement:
    """The teacher of ``cycle`` predicted ``predicted`` for audit volume ``index``, which it did not train on."""

    cycle: int
    index: int
    key: str
    predicted: str


@dataclass(frozen=True)
class StopPredictions:
    """The stop set (pool indices, sorted) and, per cycle, its teacher's predicted class of each."""

    indices: np.ndarray
    keys: list[str]
    predicted: dict[int, list[str]]


def _damaged(path: Path, exc: Exception) -> ProjectError:
    return ProjectError(f"{path}: damaged ({type(exc).__name__}: {exc}); delete it to start "
                        "the record afresh (what it held of the cycles so far is lost)")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_audits(path: Path) -> list[AuditJudgement]:
    """Every judgement in ``path`` (none if it does not exist)."""
    if not path.exists():
        return []
    try:
        return [AuditJudgement(int(r["cycle"]), int(r["index"]), r["key"], r["predicted"]) for r in _rows(path)]
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as exc:
        raise _damaged(path, exc) from None


def record_audits(path: Path, cycle: int, judged: list[AuditJudgement]) -> None:
    """``judged`` as the judgements of ``cycle``, replacing those of ``cycle`` and later ones, atomically."""
    if any(j.cycle != cycle for j in judged):
        raise ValueError(f"judgements of other cycles than {cycle} given")
    rows = [j for j in read_audits(path) if j.cycle < cycle] + list(judged)
    with atomic_open(path, "w") as f:
        w = csv.writer(f)
        w.writerow(AUDIT_COLUMNS)
        w.writerows([j.cycle, j.index, j.key, j.predicted] for j in rows)


def read_stop_predictions(path: Path) -> StopPredictions | None:
    """The stop set and its predictions, or None before the first cycle recorded them."""
    if not path.exists():
        return None
    try:
        rows = _rows(path)
        columns = {int(m.group(1)): name for name in (rows[0] if rows else {}) if (m := _STOP_COLUMN.match(name))}
        indices = np.array([int(r["index"]) for r in rows], dtype=np.int64)
        predicted = {c: [r[name] for r in rows] for c, name in sorted(columns.items())}
        return StopPredictions(indices, [r["key"] for r in rows], predicted)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as exc:
        raise _damaged(path, exc) from None


def record_stop_predictions(path: Path, cycle: int, indices: np.ndarray, keys: list[str],
                            predicted: list[str]) -> None:
    """Store ``cycle``'s predicted classes of the stop set, dropping those of ``cycle`` and later ones.

    The first call fixes the set; later calls must pass the same ``indices``."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(predicted) != len(indices):
        raise ValueError(f"{len(predicted)} predictions for a stop set of {len(indices)}")
    old = read_stop_predictions(path)
    columns: dict[int, list[str]] = {}
    if old is not None:
        if not np.array_equal(old.indices, indices):
            raise ProjectError(f"{path}: holds another stop set than the one given; the set is fixed per project")
        columns = {c: p for c, p in old.predicted.items() if c < cycle}
    columns[cycle] = list(predicted)
    with atomic_open(path, "w") as f:
        w = csv.writer(f)
        w.writerow(["index", "key", *(f"cycle_{c:03d}" for c in columns)])
        w.writerows([int(i), k, *(p[r] for p in columns.values())] for r, (i, k) in enumerate(zip(indices, keys)))


def write_flips(path: Path, flips: dict[int, tuple[str, str, str]]) -> None:
    """``index -> (key, true class, class given)`` of every answer the simulated oracle got wrong."""
    with atomic_open(path, "w") as f:
        w = csv.writer(f)
        w.writerow(FLIP_COLUMNS)
        w.writerows([i, *flips[i]] for i in sorted(flips))


def read_flips(path: Path) -> dict[int, tuple[str, str, str]]:
    """What :func:`write_flips` wrote (empty when the file does not exist)."""
    if not path.exists():
        return {}
    try:
        return {int(r["index"]): (r["key"], r["true"], r["given"]) for r in _rows(path)}
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as exc:
        raise ProjectError(f"{path}: damaged ({type(exc).__name__}: {exc})") from None
