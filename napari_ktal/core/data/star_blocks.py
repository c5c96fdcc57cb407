"""Reading STAR files (with :mod:`starfile`), every problem as one InputError naming the file.

starfile reads a loop's rows with pandas, which pads a row that lacks a value and shifts the
later values of a row that lacks one in the middle; a name such as ``001`` becomes the number 1.
So before starfile parses a file, :func:`read_star_blocks` walks its text the way starfile does
(blocks, loop headers, one row per line, values split on white space, quotes kept together,
``#`` starting a comment) and refuses a row whose values do not match the loop's columns, a
column named twice, and a key-value line that does not hold one value. Columns that hold names
(:data:`NAME_COLUMNS`) are always read as text.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..errors import InputError
from .table_rows import check_row_length, check_unique_columns

#: Columns that hold names, read as text whatever they look like (``001`` stays ``001``).
NAME_COLUMNS = ("rlnTomoName", "rlnMicrographName", "rlnTomoReconstructedTomogram", "rlnTomoTiltSeriesName",
                "rlnOpticsGroupName", "rlnImageName")


def _values(path: Path, text: str, line: int) -> list[str]:
    """The values of one line of a loop as starfile's pandas splits them (after its ' -> " swap)."""
    if '"' not in text and "'" not in text and "#" not in text:
        return text.split()
    lexer = shlex.shlex(text.replace("'", '"'), posix=True)
    lexer.whitespace_split, lexer.commenters, lexer.quotes, lexer.escape = True, "#", '"', ""
    try:
        return list(lexer)
    except ValueError as err:  # an unclosed quote
        raise InputError(path, f"line {line}: {err} ({text.strip()[:60]!r})", "quote a value with spaces on both "
                                                                                 "sides: 'TS 01'") from err


def check_star_text(path: Path, text: str) -> list[str]:
    """Check ``text`` (the whole file) as :mod:`starfile` will split it; return every column and key name.

    Mirrors starfile 0.5's parser: a block starts at a line beginning ``data_``; its first line
    beginning ``loop_`` or ``_`` makes it a loop or a key-value block; a loop's columns are the
    ``_`` lines right after ``loop_``; its rows are the lines after them up to the next ``data_``
    (blank and comment lines skipped).
    """
    lines = text.splitlines()
    names: list[str] = []
    k, n = 0, len(lines)
    while k < n:
        if not lines[k].strip().startswith("data_"):
            k += 1
            continue
        block = lines[k].strip()
        k += 1
        while k < n and not lines[k].strip().startswith(("loop_", "_")):  # starfile looks past a next data_
            k += 1
        if k >= n:
            break
        if lines[k].strip().startswith("_"):  # key-value block: `_key value` lines up to the next block
            while k < n and not lines[k].strip().startswith("data"):
                stripped = lines[k].strip()
                if stripped.startswith("_"):
                    try:
                        parts = shlex.split(stripped)  # as starfile splits them
                    except ValueError as err:
                        raise InputError(path, f"line {k + 1}: {err} ({stripped[:60]!r})") from err
                    if len(parts) != 2:
                        raise InputError(path, f"line {k + 1}: {block} gives {parts[0]} {len(parts) - 1} values",
                                         "a key-value line holds one value (quote a value with spaces)")
                    names.append(parts[0][1:])
                k += 1
            continue
        k += 1  # the loop_ line
        columns, first = [], k + 1
        while k < n and lines[k].strip().startswith("_"):
            columns.append(lines[k].split()[0][1:])
            k += 1
        check_unique_columns(path, columns, line=first, table=block)
        names += columns
        row = 0
        while k < n and not lines[k].strip().startswith("data_"):
            stripped = lines[k].strip()
            if stripped.startswith("_"):
                raise InputError(path, f"line {k + 1}: column {stripped.split()[0]} of {block} comes after a blank or "
                                       "comment line", "write loop_ and its column names without lines between them")
            values = _values(path, stripped, k + 1) if stripped else []
            if values:
                row += 1
                check_row_length(path, len(values), len(columns), row=row, line=k + 1, table=block)
            k += 1
    return names


def read_star_blocks(path: str | Path, *, as_text: bool = False) -> dict:
    """Every data block of a STAR file (a dict of dicts and DataFrames); InputError if unreadable.

    Every row is checked to hold one value per column first (:func:`check_star_text`). Names
    (:data:`NAME_COLUMNS`) are text; ``as_text``: every value as the text written in the file.
    """
    import starfile

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file")
    try:
        raw = path.read_bytes()
        if raw.startswith(b"\xef\xbb\xbf"):
            raise InputError(path, "starts with a byte-order mark, which hides its first block from STAR readers",
                             "save it as UTF-8 without a byte-order mark")
        names = check_star_text(path, raw.decode("utf-8"))
        text_columns = sorted(set(names)) if as_text else [c for c in NAME_COLUMNS if c in names]
        blocks = starfile.read(path, always_dict=True, parse_as_string=text_columns)
    except UnicodeDecodeError as err:
        raise InputError(path, "is not a text file", "a STAR file is text") from err
    except OSError as err:
        raise InputError(path, f"cannot be read ({err.strerror or err})") from err
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 (pandas and shlex raise many kinds for broken files)
        raise InputError(path, f"is not a readable STAR file ({type(err).__name__}: {err})") from err
    if not blocks:
        raise InputError(path, "holds no data block", "a STAR file has data_ blocks")
    return blocks
