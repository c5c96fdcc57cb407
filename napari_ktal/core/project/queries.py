"""queries/cycle_NNN.csv: the batches to label, one file per cycle."""

from __future__ import annotations

import csv
import re
import math
from dataclasses import dataclass, fields
from pathlib import Path

from ..atomic import atomic_open
from ..errors import ProjectError
from .history import fmt, num

QUERY_COLUMNS = ["rank", "index", "key", "score", "predicted", "confidence", "audit"]
_QUERY_FILE = re.compile(r"cycle_(\d+)\.csv$")


@dataclass(frozen=True, eq=False)
class QueryItem:
    rank: int
    index: int
    key: str
    score: float  # NaN for the random initial batch
    predicted: str  # teacher's class ("" before any training)
    confidence: float  # NaN before any training
    #: drawn at random as the audit slice, not by the strategy (core.trust.audit); files written
    #: before the column existed read as False. Never shown to the expert.
    audit: bool = False

    def __eq__(self, other) -> bool:
        """Field by field, a NaN score or confidence equal to a NaN (a batch read twice is the same batch:
        the random picks and the audit volumes have no score)."""
        if not isinstance(other, QueryItem):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    def __hash__(self) -> int:
        return hash((self.rank, self.index, self.key))


def write_query(path: Path, items: list[QueryItem]) -> None:
    with atomic_open(path, "w") as f:
        w = csv.writer(f)
        w.writerow(QUERY_COLUMNS)
        for q in items:
            w.writerow([q.rank, q.index, q.key, fmt(q.score), q.predicted, fmt(q.confidence), int(q.audit)])


def read_query(path: Path, cycle: int, n_pool: int) -> list[QueryItem]:
    """The batch of ``cycle`` at ``path``; every index must be in a pool of ``n_pool`` volumes."""
    items = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for r in reader:
                item = QueryItem(int(r["rank"]), int(r["index"]), r["key"], num(r["score"]), r["predicted"],
                                 num(r["confidence"]), _flag(r.get("audit")))
                if not 0 <= item.index < n_pool:
                    raise ValueError(f"index {item.index} is outside the pool of {n_pool} volumes")
                items.append(item)
    except FileNotFoundError:
        raise ProjectError(f"{path}: missing; the batch of cycle {cycle} was never written") from None
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as exc:
        where = f"line {reader.line_num}: " if "reader" in locals() else ""
        raise ProjectError(f"{path}: {where}damaged ({exc}); delete the file to draw the batch again") from None
    return items


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _flag(cell: str | None) -> bool:
    """A 0/1 cell; absent (an older file) or empty is False."""
    if cell in (None, "", "0"):
        return False
    if cell == "1":
        return True
    raise ValueError(f"audit must be 0 or 1, not {cell!r}")


def written_cycles(folder: Path) -> list[int]:
    """Cycles with a query file in ``folder`` (complete or not: see ``Project.query_cycles``)."""
    found = (_QUERY_FILE.match(p.name) for p in folder.glob("cycle_*.csv"))
    return sorted(int(m.group(1)) for m in found if m)
