"""Plain CSV particle lists: ``tomogram,x,y,z`` (and optionally ``label``), read like labels CSVs.

Coordinates are 0-based voxels of the tomogram as read (``--units px``, the default; at
``--pick-pixel-size`` Angstrom per pixel if given) or Angstrom from the first voxel's centre
(``--units A``). Text encodings and separators are handled as for labels CSVs
(:mod:`..labels_csv`). A ``label`` (or ``class``) cell gives the row's class.

A project made from a CSV list exports (:func:`write_rows`) that list with every column and cell
as read, and ``path`` (the volume's key), ``label``, ``confidence`` and ``source`` set (added where
the list has no such column: ``path`` first, the others last); any other list exports as
``path,tomogram,x,y,z,label,confidence,source``. Read back as a particle list with the same
units, either gives the same rows.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ...atomic import atomic_write_text
from ...errors import InputError
from ..labels_csv import header_of, read_table
from .base import PickList, PickOptions, units_convention

#: what an export writes in each row besides the list's own cells (the pool key, the class, the teacher's
#: probability of it, who gave it)
EXPORTED = ("path", "label", "confidence", "source")
#: the columns of a list that is no CSV, exported as CSV
PICK_COLUMNS = ["tomogram", "x", "y", "z"]
CSV_UNITS = ("px", "A")


def is_pick_csv(path: Path) -> bool:
    """Whether a CSV's header names the columns of a particle list (tomogram, x, y, z)."""
    return {"tomogram", "x", "y", "z"} <= set(header_of(path))


def read(path: Path, options: PickOptions) -> PickList:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file")
    table = read_table(path, ("tomogram", "x", "y", "z"), "tomogram,x,y,z")
    names, coords, classes, lines = [], [], [], []
    for line, row in table.dicts():
        name = row["tomogram"]
        if not name:
            raise InputError(path, f"line {line}: empty tomogram")
        try:
            xyz = [float(row[a]) for a in "xyz"]
        except ValueError:
            raise InputError(path, f"line {line}: x, y, z must be numbers "
                                   f"(got {', '.join(repr(row[a]) for a in 'xyz')})") from None
        if not all(math.isfinite(v) for v in xyz):
            raise InputError(path, f"line {line}: x, y, z must be finite numbers")
        names.append(name)
        coords.append(xyz)
        classes.append(row.get("label") or row.get("class") or None)
        lines.append(line)
    units = options.units or "px"
    if units == "fraction":
        raise InputError(path, "--units fraction is for Warp's STAR files", "use px or A for a CSV")
    convention, pixel = units_convention(units, len(coords), options.pick_pixel_size)
    return PickList(path, "csv", names, np.array(coords, np.float64).reshape(-1, 3), convention, pixel_size=pixel,
                    classes=classes if any(c is not None for c in classes) else None, lines=lines, files=[path],
                    extra={"columns": table.names, "cells": [cells for _, cells in table.rows]}, units=units,
                    unit_choices=CSV_UNITS)


def write_rows(out: Path, columns: list[str], rows: list[tuple[list[str], list[str]]]) -> None:
    """A CSV of ``columns`` (a list's own, as written) and :data:`EXPORTED`, atomically: each row's cells as
    given and our values (path, label, confidence, source; None: the cell is kept) in the columns of those
    names, added where the list has none (``path`` first, the others last)."""
    names = list(columns)
    folded = [c.casefold() for c in names]
    front = 0 if "path" in folded else 1
    if front:
        names.insert(0, "path")
        folded.insert(0, "path")
    for name in EXPORTED[1:]:
        if name not in folded:
            names.append(name)
            folded.append(name)
    where = [folded.index(name) for name in EXPORTED]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for cells, ours in rows:
        row = [""] * front + list(cells) + [""] * (len(names) - front - len(cells))
        for k, value in zip(where, ours):
            if value is not None:
                row[k] = value
        writer.writerow(row)
    atomic_write_text(out, buf.getvalue())
