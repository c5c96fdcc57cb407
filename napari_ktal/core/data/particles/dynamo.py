"""Dynamo tables (``.tbl``), read with :mod:`dynamotable`, with the tomogram catalogue beside them.

Dynamo's table convention (1-based columns): 4-6 ``dx dy dz`` shifts, 20 ``tomo`` (the tomogram's
number in the catalogue), 22 ``class``, 24-26 ``x y z``, 36 ``apix`` (Angstrom per pixel). The
particle sits at ``x + dx, y + dy, z + dz`` pixels of its tomogram, counted MATLAB's way: the
first voxel's centre is 1 (so the 0-based voxel is that minus 1; a test pins it). Pixels are
``apix`` Angstrom where the table fills that column, else ``--pick-pixel-size``, else the
tomogram's voxel size.

Tomogram numbers are resolved by ``TABLE.doc`` (dynamotable's table map: ``number path`` per
line) or ``TABLE.vll`` (Dynamo's volume list: one path per line, numbered from 1; lines that
start with ``*`` hold properties) beside the table. The files they name are used where they
exist; otherwise their names are matched in ``--tomograms``.

Written back (:func:`write_classes`): the table with every column and row as read, column 22
set (written with pandas, as dynamotable does, without padding the table to 42 columns).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...atomic import atomic_write_text
from ...errors import InputError
from .base import PIXELS, Convention, PickList, PickOptions, label_of_number


def _table(path: Path):
    import dynamotable

    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file")
    try:
        table = dynamotable.read(str(path))
    except UnicodeDecodeError as err:
        raise InputError(path, "is not a text file", "a Dynamo table is text") from err
    except Exception as err:  # noqa: BLE001 (pandas: empty file, ragged rows, ...)
        raise InputError(path, f"is not a readable Dynamo table ({type(err).__name__}: {err})") from err
    return table


def _catalogue(path: Path) -> tuple[dict[int, str], Path | None]:
    """Tomogram number -> path as written, from TABLE.doc or TABLE.vll beside the table."""
    doc, vll = path.with_suffix(".doc"), path.with_suffix(".vll")
    if doc.is_file():
        from dynamotable.io import read_table_map

        try:
            table = read_table_map(str(doc))
        except Exception as err:  # noqa: BLE001
            raise InputError(doc, f"is not a readable Dynamo table map ({type(err).__name__}: {err})",
                             "one 'number path' per line") from err
        return {int(n): str(p) for n, p in zip(table["tomo"], table["tomo_file"])}, doc
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
    try:
        numbers = table[["tomo"]].to_numpy(dtype=np.float64).ravel()
        coords = table[["x", "y", "z"]].to_numpy(np.float64) + table[["dx", "dy", "dz"]].to_numpy(np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(path, f"a value in columns 4-6, 20 or 24-26 is not a number ({err})") from err
    bad = np.flatnonzero(~np.isfinite(coords).all(axis=1) | ~np.isfinite(numbers))
    if len(bad):
        raise InputError(path, f"row {bad[0] + 1}: a coordinate or the tomogram number is not a finite number")
    catalogue, companion = _catalogue(path)
    names, files = [], {}
    for number in numbers.astype(np.int64).tolist():
        written = catalogue.get(number)
        if written is None:
            names.append(str(number))
            continue
        p = Path(written).expanduser()
        if not p.is_absolute():
            p = path.parent / p
        name = p.stem
        names.append(name)
        if p.is_file():
            files[name] = p.resolve()
    missing = sorted({int(n) for n in numbers.astype(np.int64)} - set(catalogue)) if catalogue else []
    if missing:
        raise InputError(companion, f"lists no tomogram number {missing[0]}, which the table uses",
                         f"the table is {path.name}")
    pixel = np.full(len(table), options.pick_pixel_size or np.nan)
    if "apix" in table.columns:
        apix = table["apix"].to_numpy(np.float64)
        pixel = np.where(np.isfinite(apix) & (apix > 0), apix, pixel)
    classes = [label_of_number(v) for v in table["class"].tolist()] if "class" in table.columns else None
    notes = [] if companion else [f"no {path.with_suffix('.doc').name} or {path.with_suffix('.vll').name} beside "
                                  "the table: tomogram numbers are matched to file names"]
    return PickList(path, "dynamo", names, coords, Convention(PIXELS, one_based=True), pixel_size=pixel,
                    classes=classes, files=[path] + ([companion] if companion else []), tomogram_files=files,
                    notes=notes)


def write_classes(source: Path, out: Path, values: list[int | None]) -> None:
    """Write the table ``source`` to ``out`` with column 22 (class) set to ``values`` (None: kept)."""
    table = _table(source)
    if len(table) != len(values):
        raise InputError(source, f"has {len(table)} rows, the project {len(values)}",
                         "the project's copy of the table was changed")
    table["class"] = [c if v is None else int(v) for v, c in zip(values, table["class"].tolist())]
    atomic_write_text(out, table.to_csv(sep=" ", header=False, index=False, lineterminator="\n"))
