"""Plain CSV particle lists: ``tomogram,x,y,z`` (and optionally ``label``), read like labels CSVs.

Coordinates are 0-based voxels of the tomogram as read (``--units px``, the default; at
``--pick-pixel-size`` Angstrom per pixel if given) or Angstrom from the first voxel's centre
(``--units A``). Text encodings and separators are handled as for labels CSVs
(:mod:`..labels_csv`). A ``label`` (or ``class``) cell gives the row's class.

The CSV a project exports (:func:`write_rows`) has the columns
``path,tomogram,x,y,z,label,confidence,source``; read back as a particle list with the same
units it gives the same rows.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ...atomic import atomic_write_text
from ...errors import InputError
from ..labels_csv import header_of, table_rows
from .base import ANGSTROM, PIXELS, Convention, PickList, PickOptions

EXPORT_COLUMNS = ["path", "tomogram", "x", "y", "z", "label", "confidence", "source"]


def is_pick_csv(path: Path) -> bool:
    """Whether a CSV's header names the columns of a particle list (tomogram, x, y, z)."""
    return {"tomogram", "x", "y", "z"} <= set(header_of(path))


def read(path: Path, options: PickOptions) -> PickList:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file")
    names, coords, classes, lines, cells = [], [], [], [], []
    for line, row in table_rows(path, ("tomogram", "x", "y", "z"), "tomogram,x,y,z"):
        name = row.get("tomogram", "")
        if not name:
            raise InputError(path, f"line {line}: empty tomogram")
        try:
            xyz = [float(row.get(a, "")) for a in "xyz"]
        except ValueError:
            raise InputError(path, f"line {line}: x, y, z must be numbers "
                                   f"(got {', '.join(repr(row.get(a, '')) for a in 'xyz')})") from None
        if not all(math.isfinite(v) for v in xyz):
            raise InputError(path, f"line {line}: x, y, z must be finite numbers")
        names.append(name)
        coords.append(xyz)
        classes.append(row.get("label") or row.get("class") or None)
        lines.append(str(line))
        cells.append([row.get("tomogram", ""), row.get("x", ""), row.get("y", ""), row.get("z", "")])
    units = options.units or "px"
    if units == "fraction":
        raise InputError(path, "--units fraction is for Warp's STAR files", "use px or A for a CSV")
    convention = Convention(ANGSTROM) if units == "A" else Convention(PIXELS)
    pixel = None if units == "A" else np.full(len(coords), options.pick_pixel_size or np.nan)
    return PickList(path, "csv", names, np.array(coords, np.float64).reshape(-1, 3), convention, pixel_size=pixel,
                    classes=classes if any(c is not None for c in classes) else None, row_ids=lines, row_word="line",
                    files=[path], extra={"cells": cells})


def write_rows(out: Path, rows: list[list]) -> None:
    """A CSV with :data:`EXPORT_COLUMNS` and ``rows`` (lists in that order), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(out, buf.getvalue())
