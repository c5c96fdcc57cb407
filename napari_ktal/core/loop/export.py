"""Labels and predictions for the whole pool, as one CSV (``ktal-cryo predict`` and the widget), and
labels written back into the user's own particle list (``ktal-cryo export``).

Confidences are the teacher's raw softmax unless ``calibrated=True`` (``--calibrated``): then,
where the project has a review (``ktal-cryo review``, the review tab), the teacher's logits are
divided by the temperature fitted on the labels' out-of-sample logits (:mod:`.label_review`).
Calibration is asked for, not applied by default, because it was measured to hurt where the
cross-fitted teachers are much weaker than the final one (docs/results.md, "Trust": on the pool of
240 with 96 labels a temperature of 4.08 took the final teacher's ECE from 0.063 to 0.281).
``ExportResult.temperature`` / ``LabelExport.temperature`` say which (None: raw).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_open, atomic_write_text
from ..engine import forward_outputs
from ..progress import QUIET, RunContext
from ..project import Project
from .label_review import calibrated_probs, load_calibration

PREDICTION_COLUMNS = ["index", "key", "label", "predicted", "confidence"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    n_volumes: int
    n_labeled: int
    cycle: int  # the cycle whose teacher predicted
    temperature: float | None = None  # the temperature the confidences are calibrated with; None: raw softmax


def teacher_probabilities(project: Project, device: torch.device, *, calibrated: bool = False,
                          run: RunContext = QUIET) -> tuple[np.ndarray, dict, float | None]:
    """The latest teacher's probabilities over the whole pool, calibrated with the project's stored
    temperature if asked and there is one: (probs (N, K), the checkpoint's meta, the temperature or None)."""
    teacher, _, meta = project.load_models(device=device)
    recipe = project.recipe()
    calibration = load_calibration(project) if calibrated else None
    (logits,) = forward_outputs([teacher], project.pool, np.arange(len(project.pool)), device,
                                batch_size=recipe.train.eval_batch_size, phase="predict", speed=recipe.speed,
                                run=run)
    probs = calibrated_probs(logits.float().numpy(), calibration)
    return probs, meta, None if calibration is None else calibration.temperature


def write_predictions(
    project: Project,
    out: str | Path,
    device: torch.device,
    *,
    calibrated: bool = False,
    run: RunContext = QUIET,
) -> ExportResult:
    """Every pool volume: its label (if any), the latest teacher's class and confidence (calibrated
    if asked and the project has a review: the module's docstring)."""
    probs, meta, temperature = teacher_probabilities(project, device, calibrated=calibrated, run=run)
    classes, pool = meta["classes"], project.pool
    pred, conf = probs.argmax(1), probs.max(1)
    labels = project.labels()
    with atomic_open(out, "w") as f:
        w = csv.writer(f)
        w.writerow(PREDICTION_COLUMNS)
        for i in range(len(pool)):
            w.writerow([i, pool.keys[i], labels.get(i, ""), classes[pred[i]], f"{conf[i]:.4f}"])
    return ExportResult(Path(out), len(pool), len(labels), int(meta["cycle"]), temperature)


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
    temperature: float | None = None  # the temperature the confidences are calibrated with; None: raw softmax


@dataclass(frozen=True)
class VolumeClass:
    """What the export writes for one pool volume."""

    label: str | None  # the class given (or predicted); None: neither
    by: str  # who gave it: user/oracle/import, "teacher" for a prediction, "" for none
    confidence: float | None  # the teacher's probability of ``label``, where a teacher is trained

    @property
    def given(self) -> bool:
        return self.by not in ("", "teacher")


NONE = VolumeClass(None, "", None)


def _classes_per_volume(project: Project, device: torch.device | None, predictions: bool,
                        calibrated: bool, run: RunContext) -> tuple[list[VolumeClass], int | None, float | None]:
    """Each pool volume's class, the cycle whose teacher predicted (None: no predictions) and the
    temperature its confidences are calibrated with (None: raw softmax, or no predictions)."""
    state = project.journal.state()
    n = len(project.pool)
    probs, model_classes, cycle, temperature = None, [], None, None
    if predictions and project.checkpoint_cycles():
        probs, meta, temperature = teacher_probabilities(project, device or torch.device("cpu"), calibrated=calibrated,
                                                           run=run)
        model_classes, cycle = list(meta["classes"]), int(meta["cycle"])
    out = []
    for i in range(n):
        label = state.labels.get(i)
        if label is not None:
            conf = probs[i, model_classes.index(label)] if probs is not None and label in model_classes else None
            out.append(VolumeClass(label, state.by.get(i, "user"), conf))
        elif probs is not None:
            k = int(probs[i].argmax())
            out.append(VolumeClass(model_classes[k], "teacher", probs[i, k]))
        else:
            out.append(NONE)
    return out, cycle, temperature


def export_labels(project: Project, out: str | Path, *, fmt: str | None = None, device: torch.device | None = None,
                  predictions: bool = True, copick_user: str | None = None, copick_session: str | None = None,
                  calibrated: bool = False, run: RunContext = QUIET) -> LabelExport:
    """The project's labels (and, where a teacher is trained, its predictions for the other rows)
    written in the particle list's own format (``fmt`` None), or as CSV (``fmt="csv"``).

    STAR and Dynamo: the user's file with every block, row, column and value as given and the
    class column set (rows with neither label nor prediction keep their value, or 0 where the
    column is new); ``OUT.classes.csv`` beside it says which number is which class (a class named
    by a number keeps it). copick: one picks file per class (``out`` is the copick configuration).
    CSV: a CSV list with every column and cell as given and path,label,confidence,source set; any other
    list as path,tomogram,x,y,z,label,confidence,source.
    """
    from ..data.particles import class_numbers

    out = Path(out).expanduser()
    record = project.source_record()
    fmt = _export_format(project, record, out, fmt)
    volumes, cycle, temperature = _classes_per_volume(project, device, predictions, calibrated, run)
    n = len(volumes)
    numbers = class_numbers(project.classes + sorted({v.label for v in volumes if v.label} - set(project.classes)))
    # the list's row of each pool volume (the pool is cut tomogram by tomogram)
    order = [s.row for s in project.pool.sites] if project.pool.sites is not None else list(range(n))
    by_row: list[VolumeClass] = [NONE] * n
    for i, v in zip(order, volumes):
        by_row[i] = v
    if fmt in ("star", "dynamo"):
        notes = _write_numbered(project.paths.source / record["files"][0], out, fmt, record, by_row, numbers)
    elif fmt == "copick":
        notes = _write_copick(out, record["extra"], by_row, copick_user, copick_session)
    else:
        notes = _write_csv(project, record, out, volumes, order)
    return LabelExport(out, fmt, n, sum(v.given for v in volumes), sum(v.by == "teacher" for v in volumes), cycle,
                       numbers if fmt in ("star", "dynamo") else {}, notes, temperature)


def _export_format(project: Project, record: dict | None, out: Path, fmt: str | None) -> str:
    """The format to write (``fmt``, else the list's own), checked against the project's source and ``out``."""
    from ..data.particles import FAMILIES
    from ..errors import InputError

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
    return fmt


def _write_numbered(source: Path, out: Path, fmt: str, record: dict, by_row: list[VolumeClass],
                    numbers: dict[str, int]) -> list[str]:
    """STAR or Dynamo: the user's list with its class column set, and ``OUT.classes.csv`` beside it."""
    from ..data.particles import dynamo, star

    if fmt == "star":
        blocks = star.read_star_blocks(source, as_text=True)
        block = record.get("extra", {}).get("block", "particles")
        before = blocks[block][star.CLASS_COLUMN].tolist() if star.CLASS_COLUMN in blocks[block].columns \
            else ["0"] * len(by_row)
        values = [str(numbers[v.label]) if v.label else before[k] for k, v in enumerate(by_row)]
        star.write_classes(source, out, block, values)
    else:
        dynamo.write_classes(source, out, [numbers[v.label] if v.label else None for v in by_row])
    mapping = out.with_name(out.stem + ".classes.csv")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "class"])
    w.writerows(sorted(((v, k) for k, v in numbers.items())))
    atomic_write_text(mapping, buf.getvalue())
    return [f"class numbers: {mapping}"]


def _write_copick(config: Path, extra: dict, by_row: list[VolumeClass], user: str | None,
                  session: str | None) -> list[str]:
    """copick: one picks file per class, in the project of configuration ``config``."""
    from ..data.particles import copick_picks

    return copick_picks.write_classes(config, extra["rows"], np.array(extra["locations"]),
                                      np.array(extra["transforms"]), [v.label for v in by_row], user=user,
                                      session=session)


def _write_csv(project: Project, record: dict | None, out: Path, volumes: list[VolumeClass],
               order: list[int]) -> list[str]:
    """A CSV list: a CSV particle list's own columns and cells (else path,tomogram,x,y,z) with
    path,label,confidence,source set, in the list's row order."""
    from ..data.particles import csv_picks

    sites, pool = project.pool.sites, project.pool
    extra = record.get("extra", {}) if record and record["format"] == "csv" else {}
    columns = extra.get("columns", csv_picks.PICK_COLUMNS)  # projects made before columns were kept
    table = []
    for i in (np.argsort(order, kind="stable") if sites is not None else range(len(volumes))):
        v = volumes[i]
        if "cells" in extra:
            cells = extra["cells"][sites[i].row]
        elif sites is not None:
            s = sites[i]
            cells = [s.tomogram, repr(s.x), repr(s.y), repr(s.z)]
        else:
            cells = ["", "", "", ""]
        # a row with neither label nor prediction keeps a label the list gives it (as STAR and Dynamo do)
        table.append((cells, [pool.keys[i], v.label, "" if v.confidence is None else f"{v.confidence:.4f}", v.by]))
    csv_picks.write_rows(out, columns, table)
    return []
