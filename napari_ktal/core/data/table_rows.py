"""Rules every table we read by rows keeps, whatever its format (STAR loop, Dynamo table, CSV).

A row must hold one value per column. The libraries we parse with do not insist: pandas pads a
short row with NaN and starfile reads a row with a value missing as its later values shifted
one column left, so a pick silently takes its z from the angle after it. Each reader counts the
values of every row in the raw text, as its parser splits them, and asks :func:`check_row_length`
before anything is read into columns.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def check_row_length(path: Path, n_values: int, n_columns: int, *, row: int, line: int, table: str = "") -> None:
    """InputError naming ``path``, the ``row`` (1-based data row of ``table``) and the file ``line``,
    unless the row holds ``n_columns`` values."""
    if n_values == n_columns:
        return
    where = f"{table} row {row}" if table else f"row {row}"
    raise InputError(path, f"line {line}: {where} has {n_values} value{'s' if n_values != 1 else ''} for "
                           f"{n_columns} column{'s' if n_columns != 1 else ''}",
                     ("a value is missing" if n_values < n_columns else "a value too many")
                     + ": every row needs one value per column, or the later values land in the wrong columns")


def check_unique_columns(path: Path, columns: list[str], *, line: int | None = None, table: str = "") -> None:
    """InputError naming the first column name that ``columns`` holds twice (which of the two is meant?)."""
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            where = f"line {line}: " if line is not None else ""
            raise InputError(path, f"{where}{table + ' ' if table else ''}names column {name!r} twice",
                             "keep one of the two; which one is meant cannot be told")
        seen.add(name)
