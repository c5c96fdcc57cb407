"""history.csv: one row per trained cycle. A cycle is committed by its row, written last."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..atomic import atomic_open
from ..errors import ProjectError

HISTORY_COLUMNS = [
    "cycle", "n_labeled", "test_accuracy", "mean_uncertainty", "train_seconds", "select_seconds",
    "n_queried", "teacher_loss", "student_loss", "transfer_loss", "samples_per_second", "strategy", "device",
    # added later: older history.csv files lack them (read as empty)
    "test_balanced_accuracy", "test_recall", "epochs", "test_particle_accuracy",
    # judged without a test set (core.trust): the audit estimate, the audit volumes held out of this
    # cycle's training, the stop rule's kappa and whether it suggests stopping (0/1)
    "estimated_accuracy", "estimated_accuracy_low", "estimated_accuracy_high", "audit_held_out",
    "stop_kappa", "stop_suggested",
]


def read_history(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            int(row["cycle"])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, csv.Error) as exc:
        raise ProjectError(f"{path}: damaged ({type(exc).__name__}: {exc}); "
                           "restore it from a backup, or delete it to train every cycle again") from None
    return rows


def record_cycle(path: Path, row: dict) -> None:
    """Add (or replace) the row of ``row['cycle']`` in history.csv, atomically."""
    rows = [r for r in read_history(path) if int(r["cycle"]) != int(row["cycle"])]
    rows.append({k: fmt(row.get(k, "")) for k in HISTORY_COLUMNS})
    rows.sort(key=lambda r: int(r["cycle"]))
    with atomic_open(path, "w") as f:
        w = csv.DictWriter(f, HISTORY_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def fmt(v) -> str:
    """A table cell: floats to 6 significant digits, NaN as empty."""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def num(s) -> float:
    """A table cell back to a float: empty is NaN; text that is no number raises ValueError."""
    return float(s) if s not in ("", None) else float("nan")
