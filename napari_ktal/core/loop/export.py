"""Labels and predictions for the whole pool, as one CSV (``ktal-cryo predict`` and the widget), and
labels written back into the user's own particle list (``ktal-cryo export``)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_open, atomic_write_text
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
    recipe = project.recipe()
    pred, conf = predict(teacher, pool, np.arange(len(pool)), device, batch_size=recipe.train.eval_batch_size,
                         speed=recipe.speed, on_progress=on_progress, should_stop=should_stop)
    labels = project.labels()
    with atomic_open(out, "w") as f:
        w = csv.writer(f)
        w.writerow(PREDICTION_COLUMNS)
        for i in range(len(pool)):
            w.writerow([i, pool.keys[i], labels.get(i, ""), classes[pred[i]], f"{conf[i]:.4f}"])
    return ExportResult(Path(out), len(pool), len(labels), int(meta["cycle"]))


# -- labels back in the particle list's own format ---------------------------------------------------
EXPORT_FORMATS = ("star", "dynamo", "copick", "csv")


@dataclass(frozen=True)
class LabelExport:
    path: Path
    format: str
    n_rows: int
    n_labeled: int  # rows with a label given by the user (or an oracle, or an import)
    n_predicted: int  # rows whose class is the teacher's prediction
    cycle: int | None  # the cycle whose teacher predicted; None: no predictions
    numbers: dict[str, int]  # class -> number written (STAR, Dynamo)
    notes: list[str]


def _classes_per_volume(project: Project, device: torch.device | None, predictions: bool,
                        on_progress: ProgressCallback | None, should_stop: StopFlag | None):
    """Per pool volume: (class or None, who: user/oracle/import/teacher/"", the teacher's probability of it)."""
    from ..engine import forward_outputs

    state = project.journal.state()
    n = len(project.pool)
    probs, model_classes, cycle = None, [], None
    if predictions and project.checkpoint_cycles():
        teacher, _, meta = project.load_models(device=device or torch.device("cpu"))
        recipe = project.recipe()
        (logits,) = forward_outputs([teacher], project.pool, np.arange(n), device or torch.device("cpu"),
                                    batch_size=recipe.train.eval_batch_size, phase="predict", speed=recipe.speed,
                                    on_progress=on_progress, should_stop=should_stop)
        probs = logits.softmax(1).numpy()
        model_classes, cycle = list(meta["classes"]), int(meta["cycle"])
    out = []
    for i in range(n):
        label = state.labels.get(i)
        if label is not None:
            conf = probs[i, model_classes.index(label)] if probs is not None and label in model_classes else None
            out.append((label, state.by.get(i, "user"), conf))
        elif probs is not None:
            k = int(probs[i].argmax())
            out.append((model_classes[k], "teacher", probs[i, k]))
        else:
            out.append((None, "", None))
    return out, cycle


def export_labels(project: Project, out: str | Path, *, fmt: str | None = None, device: torch.device | None = None,
                  predictions: bool = True, copick_user: str | None = None, copick_session: str | None = None,
                  on_progress: ProgressCallback | None = None, should_stop: StopFlag | None = None) -> LabelExport:
    """The project's labels (and, where a teacher is trained, its predictions for the other rows)
    written in the particle list's own format (``fmt`` None), or as CSV (``fmt="csv"``).

    STAR and Dynamo: the user's file with every block, row, column and value as given and the
    class column set (rows with neither label nor prediction keep their value, or 0 where the
    column is new); ``OUT.classes.csv`` beside it says which number is which class (a class named
    by a number keeps it). copick: one picks file per class (``out`` is the copick configuration).
    CSV: a CSV list with every column and cell as given and path,label,confidence,source set; any other
    list as path,tomogram,x,y,z,label,confidence,source.
    """
    from ..data.particles import FAMILIES, class_numbers, copick_picks, csv_picks, dynamo, star
    from ..errors import InputError

    out = Path(out).expanduser()
    record = project.source_record()
    family = FAMILIES.get(record["format"], "csv") if record else "csv"
    fmt = fmt or family
    if fmt not in EXPORT_FORMATS:
        raise InputError(None, f"--format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt not in (family, "csv"):
        what = f"a {record['format']} particle list" if record else "subtomogram files"
        raise InputError(None, f"--format {fmt}: this project's volumes come from {what}",
                         f"write it as {family}" + (" or csv" if family != "csv" else ""))
    if record is not None and (fmt != "copick") and out.resolve() in {(project.paths.source / f).resolve()
                                                                      for f in record.get("files", [])}:
        raise InputError(out, "is the project's own copy of the particle list", "write to another file")
    rows, cycle = _classes_per_volume(project, device, predictions, on_progress, should_stop)
    n = len(rows)
    numbers = class_numbers(project.classes + sorted({r[0] for r in rows if r[0]} - set(project.classes)))
    labeled = sum(1 for r in rows if r[1] not in ("", "teacher"))
    predicted = sum(1 for r in rows if r[1] == "teacher")
    notes: list[str] = []
    order = [s.row for s in project.pool.sites] if project.pool.sites is not None else list(range(n))
    by_row: list = [None] * n
    for i, r in zip(order, rows):
        by_row[i] = r
    if fmt in ("star", "dynamo"):
        source = project.paths.source / record["files"][0]
        if fmt == "star":
            blocks = star.read_star_blocks(source, as_text=True)
            block = record.get("extra", {}).get("block", "particles")
            before = blocks[block][star.CLASS_COLUMN].tolist() if star.CLASS_COLUMN in blocks[block].columns \
                else ["0"] * n
            values = [str(numbers[r[0]]) if r and r[0] else before[k] for k, r in enumerate(by_row)]
            star.write_classes(source, out, block, values)
        else:
            values = [numbers[r[0]] if r and r[0] else None for r in by_row]
            dynamo.write_classes(source, out, values)
        mapping = out.with_name(out.stem + ".classes.csv")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["number", "class"])
        w.writerows(sorted(((v, k) for k, v in numbers.items())))
        atomic_write_text(mapping, buf.getvalue())
        notes.append(f"class numbers: {mapping}")
    elif fmt == "copick":
        extra = record["extra"]
        labels = [r[0] if r else None for r in by_row]
        notes += copick_picks.write_classes(out, extra["rows"], np.array(extra["locations"]),
                                            np.array(extra["transforms"]), labels, user=copick_user,
                                            session=copick_session)
    else:
        sites, pool = project.pool.sites, project.pool
        extra = record.get("extra", {}) if record and record["format"] == "csv" else {}
        columns = extra.get("columns", csv_picks.PICK_COLUMNS)  # projects made before columns were kept
        table = []
        for i in (np.argsort(order, kind="stable") if sites is not None else range(n)):  # the list's row order
            label, who, conf = rows[i]
            if "cells" in extra:
                cells = extra["cells"][sites[i].row]
            elif sites is not None:
                s = sites[i]
                cells = [s.tomogram, repr(s.x), repr(s.y), repr(s.z)]
            else:
                cells = ["", "", "", ""]
            # a row with neither label nor prediction keeps a label the list gives it (as STAR and Dynamo do)
            table.append((cells, [pool.keys[i], label, "" if conf is None else f"{conf:.4f}", who]))
        csv_picks.write_rows(out, columns, table)
    return LabelExport(out, fmt, n, labeled, predicted, cycle, numbers if fmt in ("star", "dynamo") else {}, notes)
