"""The text layer of a labels CSV: columns, rows, and which files its paths name.

A labels CSV has a header row with ``path`` and ``label`` columns (others are ignored).
It is UTF-8 (with or without a byte-order mark), or UTF-16/UTF-32 with a byte-order mark
(what some spreadsheet programs write); other encodings (latin-1, ...) are refused with a
message naming the line. Commas separate columns; a header with semicolons or tabs and no
comma (a spreadsheet in a European locale) switches to that separator. A row whose first cell
starts with ``#`` is a comment; every other row has one cell per column of the header (empty
cells past the last are a spreadsheet's padding). A path is relative to the CSV's folder (or
absolute) and must stay inside that folder tree once resolved, so a shared labels file cannot
point elsewhere on disk; ``k@stack.mrcs`` names the 1-based frame ``k`` of a volume stack
(RELION's convention). :func:`read_table` reads any CSV so (a particle list's too).

This module knows nothing of MRC files: :func:`napari_ktal.core.data.mrc.read_labels_csv`
checks the files and frames the rows name.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .table_rows import check_row_length, check_unique_columns

_FRAME_PATTERN = re.compile(r"^(\d+)@(.+)$")


@dataclass(frozen=True)
class LabelRow:
    """One labelled row of a labels CSV."""

    line: int
    """Line number in the CSV (1 is the header), for messages."""
    cell: str
    """The ``path`` cell as written."""
    path: Path
    """The existing file it names, resolved, inside the CSV's folder tree."""
    frame: int | None
    """1-based frame ``k`` of ``k@file``; ``None`` when the cell names a whole file."""
    label: str


_BOMS = [  # longest first: the UTF-32 LE mark begins with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
_SAVE_AS_UTF8 = "save it as UTF-8 (in a spreadsheet program: CSV UTF-8)"


def _text(csv_path: Path) -> str:
    """The file's text: UTF-8, or UTF-16/32 with a byte-order mark; InputError for anything else."""
    try:
        raw = csv_path.read_bytes()
    except OSError as err:
        raise InputError(csv_path, f"cannot be read ({err.strerror or err})") from err
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(encoding)
            except UnicodeDecodeError as err:
                raise InputError(csv_path, f"is not valid {encoding.upper()} text ({err.reason})",
                                 _SAVE_AS_UTF8) from err
    if b"\0" in raw:
        raise InputError(csv_path, "is not a text file (it holds NUL bytes: UTF-16 without a byte-order mark, "
                                   "or not a CSV at all)", _SAVE_AS_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        byte = raw[err.start : err.start + 1].hex()
        raise InputError(csv_path, f"line {line}: is not UTF-8 text (byte 0x{byte}; latin-1 or another "
                                   "8-bit encoding?)", _SAVE_AS_UTF8) from err


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _delimiter(text: str) -> str:
    header = next((line for line in text.splitlines() if line.strip() and not _is_comment(line)), "")
    if "," not in header:
        for candidate in (";", "\t"):
            if candidate in header:
                return candidate
    return ","


@dataclass(frozen=True)
class CsvTable:
    """A CSV as rows of cells: the header's names as written, then one cell per column in each row."""

    names: list[str]
    """The header's column names as written (stripped); ``columns`` are them lower-cased."""
    rows: list[tuple[int, list[str]]]
    """``(line, cells)`` of every non-blank row after the header: stripped, one per column."""

    @property
    def columns(self) -> list[str]:
        return [name.casefold() for name in self.names]

    def dicts(self) -> Iterator[tuple[int, dict[str, str]]]:
        """``(line, {lower-case column: cell})`` for each row."""
        columns = self.columns
        for line, cells in self.rows:
            yield line, dict(zip(columns, cells, strict=True))


def _header(csv_path: Path, cells: list[str], line: int, required: tuple[str, ...], example: str) -> list[str]:
    """The column names of a header row (trailing empty cells dropped), checked."""
    while cells and not cells[-1]:
        cells = cells[:-1]
    folded = [name.casefold() for name in cells]
    missing = [repr(name) for name in required if name not in folded]
    if missing:
        raise InputError(csv_path, f"line {line}: no {' or '.join(missing)} column (found columns: "
                                   f"{', '.join(folded) or 'none'})",
                         f"the first row must name the columns, e.g. {example}")
    check_unique_columns(csv_path, [c for c in folded if c], line=line)
    return cells


def read_table(csv_path: Path, required: tuple[str, ...] = ("path", "label"), example: str = "path,label") -> CsvTable:
    """The CSV at ``csv_path`` (encodings and separators as the module says); rows whose first cell starts
    with ``#`` are comments. InputError names the line of a missing required column, a column named
    twice, or a row whose cells are not one per column (empty cells past the last column are a
    spreadsheet's padding and are dropped)."""
    csv_path = Path(csv_path)
    text = _text(csv_path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    names: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            cells = [cell.strip() for cell in row]
            if not any(cells) or _is_comment(cells[0]):
                continue
            if names is None:
                names = _header(csv_path, cells, reader.line_num, required, example)
                continue
            if len(cells) > len(names) and not any(cells[len(names):]):
                cells = cells[: len(names)]
            check_row_length(csv_path, len(cells), len(names), row=len(rows) + 1, line=reader.line_num)
            rows.append((reader.line_num, cells))
    except csv.Error as err:
        raise InputError(csv_path, f"line {reader.line_num}: malformed CSV ({err})") from err
    return CsvTable(names if names is not None else _header(csv_path, [], 1, required, example), rows)


def _target(csv_path: Path, line: int, cell: str) -> tuple[Path, int | None]:
    """The file and 1-based frame a ``path`` cell names, checked to exist inside the tree."""
    match = _FRAME_PATTERN.match(cell)
    name, frame = (match[2], int(match[1])) if match else (cell, None)
    if not name:
        raise InputError(csv_path, f"line {line}: empty path")
    if frame == 0:
        raise InputError(
            csv_path,
            f"line {line}: {cell!r} names frame 0",
            "frames count from 1 (RELION's k@file)",
        )
    root = csv_path.parent
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise InputError(
            csv_path,
            f"line {line}: {cell!r} points outside the CSV's folder {root}",
            "a labels file may only name files in its own folder tree",
        )
    if not path.is_file():
        raise InputError(csv_path, f"line {line}: {cell!r} does not exist")
    return path, frame


def header_of(csv_path: Path) -> list[str]:
    """The lower-case column names of a CSV's first row that is no comment ([] if it cannot be read as text)."""
    try:
        text = _text(Path(csv_path))
    except InputError:
        return []
    first = next((line for line in text.splitlines() if line.strip() and not _is_comment(line)), "")
    return [c.strip().casefold() for c in next(csv.reader([first], delimiter=_delimiter(text)), [])]


def read_label_rows(csv_path: str | Path) -> list[LabelRow]:
    """Every labelled row of a labels CSV, in file order.

    Raises:
        InputError: naming the CSV and the line: the file is missing or not UTF-8, a
            ``path`` or ``label`` column is missing, a label or path is empty, a path
            escapes the CSV's folder tree or does not exist, or there are no rows.
    """
    csv_path = Path(csv_path).expanduser().resolve()
    if not csv_path.is_file():
        raise InputError(csv_path, "does not exist" if not csv_path.exists() else "is not a file")
    rows = []
    for line, cells in read_table(csv_path).dicts():
        label = cells.get("label", "")
        if not label:
            raise InputError(csv_path, f"line {line}: empty label")
        cell = cells.get("path", "")
        rows.append(LabelRow(line, cell, *_target(csv_path, line, cell), label))
    if not rows:
        raise InputError(
            csv_path, "no labelled rows", "expected a header row, then one row per volume"
        )
    return rows
