"""Labels and predictions for the whole pool, as one CSV (``ktal-cryo predict`` and the widget)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_open
from ..engine import predict
from ..progress import ProgressCallback, StopFlag
from ..project import Project

PREDICTION_COLUMNS = ["index", "key", "label", "predicted", "confidence"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    n_volumes: int
    n_labeled: int
    cycle: int  # the cycle whose teacher predicted


def write_predictions(
    project: Project,
    out: str | Path,
    device: torch.device,
    on_progress: ProgressCallback | None = None,
    should_stop: StopFlag | None = None,
) -> ExportResult:
    """Every pool volume: its label (if any), the latest teacher's class and confidence."""
    teacher, _, meta = project.load_models(device=device)
    classes, pool = meta["classes"], project.pool
    pred, conf = predict(teacher, pool, np.arange(len(pool)), device, batch_size=project.recipe().train.eval_batch_size,
                         on_progress=on_progress, should_stop=should_stop)
    labels = project.labels()
    with atomic_open(out, "w") as f:
        w = csv.writer(f)
        w.writerow(PREDICTION_COLUMNS)
        for i in range(len(pool)):
            w.writerow([i, pool.keys[i], labels.get(i, ""), classes[pred[i]], f"{conf[i]:.4f}"])
    return ExportResult(Path(out), len(pool), len(labels), int(meta["cycle"]))
