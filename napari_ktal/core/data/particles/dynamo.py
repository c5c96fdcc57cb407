"""Dynamo tables (``.tbl``), read with :mod:`dynamotable`, with the tomogram catalogue beside them.

Dynamo's table convention (1-based columns): 4-6 ``dx dy dz`` shifts, 20 ``tomo`` (the tomogram's
number in the catalogue), 22 ``class``, 24-26 ``x y z``, 36 ``apix`` (Angstrom per pixel). The
particle sits at ``x + dx, y + dy, z + dz`` pixels of its tomogram, counted MATLAB's way: the
first voxel's centre is 1 (so the 0-based voxel is that minus 1; a test pins it). Pixels are
``apix`` Angstrom where the table fills that column, else ``--pick-pixel-size``, else the
tomogram's voxel size.

Tomogram numbers are resolved by ``TABLE.doc`` (dynamotable's table map: ``number path`` per
line, the path kept as text) or ``TABLE.vll`` (Dynamo's volume list: one path per line, numbered
from 1; lines that start with ``*`` hold properties) beside the table. A tomogram's name is its
file's stem (``001`` for ``tomos/001.mrc``), matched in ``--tomograms`` where given, else the
file itself is used (and named, with the path where it was looked for, if it is missing).
Without a .doc or .vll a tomogram's name is its number. Every row holds as many values as the
others: pandas would pad a short row, its later values read into the wrong columns.

Written back (:func:`write_classes`): the table with every column and row as read, column 22
set (written with pandas, as dynamotable does, without padding the table to 42 columns).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ...atomic import atomic_write_text
from ...errors import InputError
from ..table_rows import check_row_length
from .base import PIXELS, Convention, PickList, PickOptions, label_of_number, numbers


def _check_rows(path: Path) -> None:
    """Every row holds as many values as the table's other rows (pandas pads a short one with NaN)."""
    counts = [(k + 1, len(line.split())) for k, line in
              enumerate(path.read_text(encoding="utf-8").splitlines()) if line.strip()]
    if not counts:
        return
    usual = Counter(c for _, c in counts).most_common(1)[0][0]
    for row, (line, n) in enumerate(counts, start=1):
        check_row_length(path, n, usual, row=row, line=line)


def _table(path: Path):
    import dynamotable

    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file")
    try:
        _check_rows(path)
        table = dynamotable.read(str(path))
    except UnicodeDecodeError as err:
        raise InputError(path, "is not a text file", "a Dynamo table is text") from err
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 (pandas: empty file, ...)
        raise InputError(path, f"is not a readable Dynamo table ({type(err).__name__}: {err})") from err
    return table


def _catalogue(path: Path) -> tuple[dict[int, str], Path | None]:
    """Tomogram number -> path as written (text, never a number), from TABLE.doc or TABLE.vll beside the table."""
    doc, vll = path.with_suffix(".doc"), path.with_suffix(".vll")
    if doc.is_file():
        # dynamotable's table map, `number path` per line; read here so that a path stays text (001 is not 1)
        out = {}
        for k, line in enumerate(doc.read_text(encoding="utf-8", errors="replace").splitlines()):
            parts = line.split(maxsplit=1)
            if not parts:
                continue
            try:
                number = float(parts[0])
            except ValueError:
                number = math.nan
            if len(parts) < 2 or not number.is_integer():
                raise InputError(doc, f"line {k + 1}: {line.strip()[:60]!r} is not 'number path'",
                                 "a Dynamo table map holds one 'number path' per line")
            out[int(number)] = parts[1].strip()
        return out, doc
    if vll.is_file():
        # Dynamo's volume list: no library reads it; one path per line, numbered from 1
        entries = [line.strip() for line in vll.read_text(encoding="utf-8", errors="replace").splitlines()]
        paths = [e for e in entries if e and not e.startswith("*") and not e.startswith("#")]
        return {k + 1: p for k, p in enumerate(paths)}, vll
    return {}, None


def read(path: Path, options: PickOptions) -> PickList:
    path = Path(path).resolve()
    table = _table(path)
    n_cols = table.shape[1]
    if n_cols < 26:
        raise InputError(path, f"has {n_cols} columns; a Dynamo table has at least 26 (x, y, z are 24-26)")
    values = numbers(path, table, ["tomo", "x", "y", "z", "dx", "dy", "dz"],
                     ["column 20 (tomo)", "column 24 (x)", "column 25 (y)", "column 26 (z)", "column 4 (dx)",
                      "column 5 (dy)", "column 6 (dz)"])
    tomo_numbers = values[:, 0].astype(np.int64)
    coords = values[:, 1:4] + values[:, 4:7]
    catalogue, companion = _catalogue(path)
    names, files = [], {}
    for number in tomo_numbers.tolist():
        written = catalogue.get(number)
        if written is None:
            names.append(str(number))
            continue
        p = Path(written).expanduser()
        if not p.is_absolute():
            p = path.parent / p
        name = p.stem
        names.append(name)
        files[name] = p.resolve()
    missing = sorted(set(tomo_numbers.tolist()) - set(catalogue)) if catalogue else []
    if missing:
        raise InputError(companion, f"lists no tomogram number {missing[0]}, which the table uses",
                         f"the table is {path.name}")
    pixel = np.full(len(table), options.pick_pixel_size or np.nan)
    if "apix" in table.columns:
        apix = pd.to_numeric(table["apix"], errors="coerce").to_numpy(np.float64)
        pixel = np.where(np.isfinite(apix) & (apix > 0), apix, pixel)
    classes = [label_of_number(v) for v in table["class"].tolist()] if "class" in table.columns else None
    notes, hint = [], ""
    if companion is None:
        notes.append(f"no {path.with_suffix('.doc').name} or {path.with_suffix('.vll').name} beside the table: "
                     "tomogram numbers are matched to file names")
        hint = (f"{path.with_suffix('.doc')} does not exist (nor a .vll) to map the table's tomogram numbers "
                "to files")
    return PickList(path, "dynamo", names, coords, Convention(PIXELS, one_based=True), pixel_size=pixel,
                    classes=classes, files=[path] + ([companion] if companion else []), tomogram_files=files,
                    tomogram_catalogue=companion, notes=notes, tomogram_hint=hint)


def write_classes(source: Path, out: Path, values: list[int | None]) -> None:
    """Write the table ``source`` to ``out`` with column 22 (class) set to ``values`` (None: kept)."""
    table = _table(source)
    if len(table) != len(values):
        raise InputError(source, f"has {len(table)} rows, the project {len(values)}",
                         "the project's copy of the table was changed")
    table["class"] = [c if v is None else int(v) for v, c in zip(values, table["class"].tolist())]
    atomic_write_text(out, table.to_csv(sep=" ", header=False, index=False, lineterminator="\n"))
